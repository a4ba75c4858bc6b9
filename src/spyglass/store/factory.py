"""Which vector store serves a space: exact below a size, approximate above it."""

from __future__ import annotations

from pathlib import Path

from spyglass.settings import VectorSearchSettings
from spyglass.store.ivf import IvfVectorStore
from spyglass.store.local import LocalVectorStore


def open_vector_store(
    folder: Path,
    space: str,
    dims: int,
    committed_rows: int,
    *,
    writer: bool = False,
    settings: VectorSearchSettings | None = None,
) -> LocalVectorStore:
    """The store for one space's files in ``folder``.

    ``kind="exact"``: :class:`LocalVectorStore` (every row scored). ``"approximate"``:
    :class:`IvfVectorStore`. ``"auto"``: exact below ``approximate_from_rows`` rows,
    approximate from there on; a writer always gets the approximate store, which searches
    exactly until its rows reach the threshold and then builds its index.
    """
    settings = settings or VectorSearchSettings()
    approximate = settings.kind == "approximate" or (
        settings.kind == "auto" and (writer or committed_rows >= settings.approximate_from_rows)
    )
    if approximate:
        return IvfVectorStore(folder, space, dims, committed_rows, writer=writer, settings=settings)
    return LocalVectorStore(folder, space, dims, committed_rows, writer=writer)
