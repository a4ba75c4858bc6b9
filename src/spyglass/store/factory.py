"""Which vector store serves a space: exact below a size, approximate above it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from spyglass.errors import ApproximateIndexFailed
from spyglass.settings import VectorSearchSettings
from spyglass.store.base import VectorStore
from spyglass.store.gpu import DeviceChoice
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
    device: DeviceChoice | None = None,
) -> LocalVectorStore:
    """The store for one space's files in ``folder``.

    ``kind="exact"``: :class:`LocalVectorStore` (every row scored). ``"approximate"``:
    :class:`IvfVectorStore`. ``"auto"``: exact below ``approximate_from_rows`` rows
    (and while the exact store's float32 copy fits ``memory_budget``), approximate from
    there on; a writer always gets the approximate store, which searches exactly until
    its rows call for an index and then builds it. ``device``: where approximate
    stores look for candidates (shared by an index's stores; default: per store, from
    ``settings.gpu``).
    """
    settings = settings or VectorSearchSettings()
    approximate = settings.kind == "approximate" or (
        settings.kind == "auto" and (writer or settings.wants_approximate(committed_rows, dims))
    )
    if approximate:
        return IvfVectorStore(
            folder, space, dims, committed_rows, writer=writer, settings=settings, device=device
        )
    return LocalVectorStore(folder, space, dims, committed_rows, writer=writer)


def finish_building(
    stores: Iterable[VectorStore], waiting: Callable[[str], None] | None = None
) -> ApproximateIndexFailed | None:
    """Start the approximate index each writer store's rows call for and wait until every
    one is built and saved. Returns, as one error, the spaces whose index could not be
    built and why (their rows are durable and searched exactly; the next writer tries
    again), or None. A writer calls it before it closes, so that the next reader opens a
    saved index in seconds and a failure is told rather than lost on a background
    thread. ``waiting`` is told a line before each wait for a build (at 10M rows, the
    better part of an hour)."""
    failures = []
    for store in stores:
        if isinstance(store, IvfVectorStore):
            try:
                store.maintain()
                if store.building and waiting is not None:
                    waiting(
                        f"building the approximate index of {len(store):,} rows ({store.space})"
                    )
                store.wait_for_index()
            except ApproximateIndexFailed as failure:
                failures.append(failure)
    return ApproximateIndexFailed.of_all(failures) if failures else None
