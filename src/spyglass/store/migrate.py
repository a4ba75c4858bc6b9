"""Moving an embedded index into Milvus without embedding anything again.

``spyglass index --index FOLDER --copy-to milvus://...``: every space's float16 rows are
read in order from the index folder and inserted into Milvus with the same owners (so
the image ids of the catalogue still name them) and their images' filter fields (read
from the source catalogue: folders, date, format...), then the catalogue is copied over in
one step. Rows go first and the catalogue last, as in every commit: a copy cut short
leaves the destination empty, and running it again starts over cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spyglass.errors import IndexProblem
from spyglass.query.filter_fields import filter_fields
from spyglass.settings import VectorSearchSettings
from spyglass.store.base import FilterableStore
from spyglass.store.index import Index

#: Rows read and inserted per step (bounds the copy's memory: 50,000 x 1280-d float32
#: is 256 MB).
COPY_ROWS = 50_000


@dataclass(frozen=True)
class CopyReport:
    """What a copy moved: ``rows`` per space, ``images`` in the catalogue."""

    destination: str
    rows: dict[str, int]
    images: int


def copy_index(
    source: str | Path,
    destination: str,
    *,
    vector_search: VectorSearchSettings | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> CopyReport:
    """Copy the embedded index at ``source`` to ``destination`` (a ``milvus://`` URL, or
    another folder), which must hold no images yet. ``progress`` is told (space, rows
    copied, rows in all) after each step. Raises :class:`IndexProblem` subclasses."""
    # Exact: the copy reads rows, not an approximate index, which need not be loaded.
    with Index.open(source, VectorSearchSettings(kind="exact")) as origin:
        if origin.milvus is not None:
            raise IndexProblem(
                f"--copy-to copies an embedded index (a folder); {origin.milvus.describe()} "
                "is already in Milvus"
            )
        spaces = origin.catalogue.space_rows()
        with Index.open_for_writing(destination, origin.info, vector_search) as target:
            if target.folder == origin.folder:
                raise IndexProblem(f"--copy-to names the index itself ({origin.folder})")
            held = target.catalogue.counts()["images"]
            if held:
                raise IndexProblem(
                    f"{destination} already holds {held:,} images: copy into a new index "
                    "(another collection name or file)"
                )
            for space, (dims, committed) in spaces.items():
                store = target.add_space(space, dims)
                for start in range(0, committed, COPY_ROWS):
                    stop = min(start + COPY_ROWS, committed)
                    owners, vectors = read_rows(origin.folder / "vectors", space, dims, start, stop)
                    store.add(owners, vectors)
                    if isinstance(store, FilterableStore):
                        store.flush_with_fields(filter_fields(origin.catalogue, owners.tolist()))
                    else:
                        store.flush()
                    if progress is not None:
                        progress(space, stop, committed)
            target.take_catalogue_of(origin)
            images = target.catalogue.counts()["images"]
    return CopyReport(
        destination=destination,
        rows={space: committed for space, (_, committed) in spaces.items()},
        images=images,
    )


def read_rows(
    folder: Path, space: str, dims: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start:stop`` of an embedded space (the layout of
    :class:`~spyglass.store.local.LocalVectorStore`): (n,) int64 owners, (n, dims)
    float32 vectors."""
    count = stop - start
    owners = np.fromfile(folder / f"{space}.ids", np.int64, count=count, offset=start * 8)
    vectors = np.fromfile(
        folder / f"{space}.f16", np.float16, count=count * dims, offset=start * dims * 2
    )
    return owners, vectors.reshape(count, dims).astype(np.float32)
