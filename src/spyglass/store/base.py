"""The vector store interface: what a local FAISS store and a distributed one share.

A store holds, per space, rows of (owner id, vector). An owner is an image id; most
spaces hold one row per image, a crop space holds several, and a search returns each
owner once, scored by its best row. Every implementation runs through the same contract
tests (``tests/store/test_vector_store_contract.py``) against :class:`MemoryVectorStore`, the
brute-force reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from spyglass.query.filters import Filters


@dataclass(frozen=True)
class Neighbours:
    """Search results for m queries, best first.

    ``scores`` (m, k) float32 inner products (cosine for unit vectors), ``owners``
    (m, k) int64 image ids. Rows with fewer than k results are padded with
    score ``-inf`` and owner ``-1``.
    """

    scores: np.ndarray
    owners: np.ndarray

    def row(self, i: int) -> list[tuple[int, float]]:
        """The (owner, score) pairs of query i, without padding."""
        keep = self.owners[i] >= 0
        return list(zip(self.owners[i][keep].tolist(), self.scores[i][keep].tolist(), strict=True))


def selected(among: np.ndarray | None) -> np.ndarray | None:
    """``among`` as a sorted, distinct int64 array (None stays None): what every
    store's ``search`` works from."""
    if among is None:
        return None
    ids = np.asarray(among, np.int64).ravel()
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return ids  # already sorted and distinct (what filters give): no sort
    return np.unique(ids)


def empty_neighbours(m: int, k: int) -> Neighbours:
    return Neighbours(
        scores=np.full((m, k), -np.inf, np.float32), owners=np.full((m, k), -1, np.int64)
    )


@runtime_checkable
class VectorStore(Protocol):
    """Rows of (owner id, unit vector) in one space, searchable by inner product."""

    dims: int

    def __len__(self) -> int:
        """Stored rows, hidden ones included."""
        ...

    def add(self, owners: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows: ``owners`` (n,) int64, ``vectors`` (n, dims) float32.

        Rows become durable at the next :meth:`flush`."""
        ...

    def flush(self) -> int:
        """Make added rows durable; returns the row count to record as committed."""
        ...

    def set_hidden(self, owners: Iterable[int], hidden: bool = True) -> None:
        """Hide (or show again) every row of these owners from :meth:`search`."""
        ...

    def search(self, queries: np.ndarray, k: int, among: np.ndarray | None = None) -> Neighbours:
        """``queries`` (m, dims) float32 -> the k best visible owners per query.

        ``among`` (n,) int64 sorted owner ids (a metadata filter's selection): only
        these owners may be returned, and still k of them when at least k are
        visible, however few the selection keeps (the selection is applied inside the
        search, not to its results). ``None``: every visible owner."""
        ...

    def fetch(self, owners: np.ndarray) -> np.ndarray:
        """(n,) owner ids -> (n, dims) float32: each owner's first row (hidden or not).

        Raises ``KeyError`` for an owner with no row."""
        ...

    def visible_owners(self) -> np.ndarray:
        """(n,) int64: owners with at least one visible row, each once."""
        ...


@dataclass(frozen=True)
class FilterFields:
    """What the metadata filters read about one image, as the catalogue records it
    (:func:`spyglass.query.filter_fields.filter_fields` reads them).

    ``paths``: every file showing the image (absolute). ``date``: seconds since 1970 by
    the filters' date rule (EXIF capture time, else the oldest file's modification
    time), ``None`` when neither is known. ``format``: Pillow's name ("" unknown).
    ``width`` / ``height``: pixels as displayed (0 unknown). ``camera``: EXIF make + " "
    + model, a missing part as "". ``has_gps``: a position is recorded.
    """

    paths: tuple[str, ...]
    date: float | None
    format: str
    width: int
    height: int
    camera: str
    has_gps: bool


@runtime_checkable
class FilterableStore(VectorStore, Protocol):
    """A store that keeps each image's :class:`FilterFields` beside its rows and
    evaluates :class:`~spyglass.query.filters.Filters` inside its own search (Milvus),
    instead of being handed the ids they keep (``among``). Chosen by ``isinstance``:
    the other stores keep ``among``."""

    def flush_with_fields(
        self, fields: Mapping[int, FilterFields], rewrite: Iterable[int] = ()
    ) -> int:
        """:meth:`flush`, the added rows carrying their owner's ``fields``; the stored
        rows of the ``rewrite`` owners take their (new) ``fields`` too (an image that
        gained or lost a path). Returns the row count to record as committed."""
        ...

    def filters_inside(self, filters: Filters) -> bool:
        """Whether :meth:`search` can apply ``filters`` itself, exactly (the fields are
        there and complete, and the filters can be written as the store's expression)."""
        ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        among: np.ndarray | None = None,
        where: Filters | None = None,
    ) -> Neighbours:
        """:meth:`VectorStore.search`; ``where``: only images these filters keep (when
        :meth:`filters_inside` says so), applied inside the search."""
        ...
