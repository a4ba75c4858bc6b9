"""The embedded default vector store: float16 rows in flat files, searched with FAISS.

On disk, one space is two append-only files: ``<space>.f16`` (rows x dims float16) and
``<space>.ids`` (rows int64 owner ids). The catalogue records how many rows are
committed; opening a store truncates anything beyond that, which is how a write cut off
by ``kill -9`` disappears without a trace.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spyglass.errors import IndexCorrupt
from spyglass.store.base import Neighbours, empty_neighbours, selected
from spyglass.store.failures import storage_error
from spyglass.store.memory import _checked

#: Rows converted to float32 per step when loading vectors into FAISS.
_LOAD_CHUNK = 65536
#: Below this many queries per call, FAISS searches on the calling thread only.
_PARALLEL_QUERIES = 16
#: From this many queries per call on, FAISS scores them with one matrix product (BLAS)
#: rather than query by query. Measured on the 2-core machine, one thread, exact search
#: over 100k x 384, 100k x 512, 10k x 1280 and 100k x 1280 (SIMD / BLAS time): 1 query
#: 0.35-0.47x (BLAS slower), 2 queries 0.81-0.94x, 3 queries 0.95-1.20x, 4 queries
#: 1.33-1.91x, 8 queries 2.67-2.88x; docs/performance.md has the store-level figures.
BLAS_FROM_QUERIES = 4


@dataclass(frozen=True)
class SearchMethod:
    """How a store answers searches right now, for ``spyglass info`` and the server.

    ``kind`` is ``"exact"`` (every visible row scored) or ``"approximate"`` (an index
    proposes candidates that are re-scored exactly); ``recall_at_10`` is the measured
    share of the exact top 10 that an approximate search returns (``None`` for exact).
    """

    kind: str
    rows: int
    summary: str
    recall_at_10: float | None = None
    nprobe: int | None = None


class LocalVectorStore:
    """A :class:`~spyglass.store.base.VectorStore` over two flat files and a FAISS
    ``IndexFlatIP`` (exact inner product) held in memory."""

    def __init__(
        self, folder: Path, space: str, dims: int, committed_rows: int, *, writer: bool = False
    ) -> None:
        self.dims = dims
        self.space = space
        self._vectors_path = folder / f"{space}.f16"
        self._owners_path = folder / f"{space}.ids"
        folder.mkdir(parents=True, exist_ok=True)
        # Only the writer (holding the index's write lock) may cut files back: a reader
        # would cut rows a concurrent writer has appended but not yet committed.
        if writer:
            self._recover(committed_rows)
        self._rows = committed_rows
        self._pending_owners: list[np.ndarray] = []
        self._pending_vectors: list[np.ndarray] = []
        self._hidden: set[int] = set()
        self._lock = threading.RLock()
        self._faiss: Any = None
        self._faiss_rows = 0
        self._visible_bitmap: np.ndarray | None = None
        self._owners_cache: np.ndarray | None = None
        self._one_row_per_owner = True

    # -- durability -------------------------------------------------------------------

    def _recover(self, committed_rows: int) -> None:
        """Cut both files back to the committed row count (a crash may leave more)."""
        row_bytes = self.dims * 2
        for path, width in ((self._vectors_path, row_bytes), (self._owners_path, 8)):
            if not path.exists():
                path.touch()
            size = path.stat().st_size
            wanted = committed_rows * width
            if size < wanted:
                raise IndexCorrupt(
                    f"{path} holds {size // width} rows but the catalogue committed "
                    f"{committed_rows}; the index is damaged: re-create it with a new --index"
                )
            if size > wanted:
                with path.open("r+b") as handle:
                    handle.truncate(wanted)

    def __len__(self) -> int:
        return self._rows

    def add(self, owners: np.ndarray, vectors: np.ndarray) -> None:
        owners, vectors = _checked(owners, vectors, self.dims)
        with self._lock:
            self._pending_owners.append(owners)
            self._pending_vectors.append(vectors)

    def flush(self) -> int:
        with self._lock:
            if not self._pending_owners:
                return self._rows
            owners = np.concatenate(self._pending_owners)
            vectors = np.concatenate(self._pending_vectors)
            self._pending_owners.clear()
            self._pending_vectors.clear()
            for path, data in (
                (self._vectors_path, vectors.astype(np.float16)),
                (self._owners_path, owners.astype(np.int64)),
            ):
                try:
                    with path.open("ab") as handle:
                        handle.write(data.tobytes())
                        handle.flush()
                        os.fsync(handle.fileno())
                except OSError as error:
                    # Rows past the catalogue's count are cut off by the next writer.
                    raise storage_error(path, error) from error
            self._rows += len(owners)
            self._owners_cache = None
            self._visible_bitmap = None
            return self._rows

    def reload(self, committed_rows: int) -> None:
        """Pick up rows another process committed since this store was opened."""
        with self._lock:
            if committed_rows != self._rows and not self._pending_owners:
                self._rows = committed_rows
                self._owners_cache = None
                self._visible_bitmap = None
                if self._faiss is not None and self._faiss_rows > committed_rows:
                    self._faiss = None

    # -- reading ----------------------------------------------------------------------

    def _matrix(self) -> np.ndarray:
        if self._rows == 0:
            return np.zeros((0, self.dims), np.float16)
        return np.memmap(
            self._vectors_path, dtype=np.float16, mode="r", shape=(self._rows, self.dims)
        )

    def _matrix_for_fetch(self) -> Any:
        """What :meth:`fetch` reads rows from, indexed by an array of row numbers: the
        mapped file here."""
        return self._matrix()

    def owners(self) -> np.ndarray:
        """(rows,) int64 owner of every committed row."""
        with self._lock:
            if self._owners_cache is None or len(self._owners_cache) != self._rows:
                if self._rows == 0:
                    self._owners_cache = np.zeros(0, np.int64)
                else:
                    self._owners_cache = np.fromfile(
                        self._owners_path, dtype=np.int64, count=self._rows
                    )
                owners = self._owners_cache
                # Owners are appended in increasing id order, so "one row per owner" is
                # a strict increase; anything else (crops) needs per-owner merging.
                self._one_row_per_owner = bool(np.all(np.diff(owners) > 0))
            return self._owners_cache

    def set_hidden(self, owners: Iterable[int], hidden: bool = True) -> None:
        ids = {int(o) for o in owners}
        with self._lock:
            if hidden:
                self._hidden |= ids
            else:
                self._hidden -= ids
            self._visible_bitmap = None

    def hidden_owners(self) -> AbstractSet[int]:
        """The owners hidden now, as a read-only view for membership tests (O(1) each):
        what sampling by row position needs to skip them without listing every visible
        owner."""
        return self._hidden

    def search_files(self) -> list[Path]:
        """The files searches read (for :mod:`spyglass.store.page_cache`)."""
        return [self._vectors_path, self._owners_path]

    def _bitmap(self) -> np.ndarray | None:
        """FAISS selector bitmap of visible rows (bit i little-endian), or None if all are."""
        if not self._hidden:
            return None
        if self._visible_bitmap is None:
            visible = ~np.isin(self.owners(), np.fromiter(self._hidden, np.int64))
            self._visible_bitmap = np.packbits(visible, bitorder="little")
        return self._visible_bitmap

    def _index(self) -> Any:
        import faiss

        if self._faiss is None:
            self._faiss = faiss.IndexFlatIP(self.dims)
            self._faiss_rows = 0
        if self._faiss_rows < self._rows:
            matrix = self._matrix()
            for start in range(self._faiss_rows, self._rows, _LOAD_CHUNK):
                stop = min(start + _LOAD_CHUNK, self._rows)
                self._faiss.add(np.ascontiguousarray(matrix[start:stop], dtype=np.float32))
            self._faiss_rows = self._rows
        return self._faiss

    def selection_rows(self, among: np.ndarray) -> np.ndarray:
        """(n,) int64 sorted: the committed rows of the visible owners in ``among``
        (sorted int64). Owners are stored in non-decreasing order, so each owner's rows
        are one run found by binary search: O(len(among) log rows)."""
        with self._lock:
            owners = self.owners()
            hidden = self._hidden
            if hidden:
                among = among[~np.isin(among, np.fromiter(hidden, np.int64))]
        first = np.searchsorted(owners, among, side="left")
        last = np.searchsorted(owners, among, side="right")
        counts = last - first
        if len(counts) == 0 or counts.max(initial=0) <= 1:
            return first[counts > 0].astype(np.int64)
        # Several rows per owner (crops): every row of each run.
        starts = np.repeat(first, counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return (starts + offsets).astype(np.int64)

    def _search_rows(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Neighbours:
        """Exact search over the given rows only (a small selection). The rows are
        sorted, so they are read through the mapping in file order (2x faster than
        ``pread`` row by row for 2,000 rows)."""
        with self._lock:
            owners = self.owners()
            matrix = self._matrix()
        if len(rows) == 0 or k <= 0:
            return empty_neighbours(len(queries), k)
        vectors = np.asarray(matrix[rows], dtype=np.float32)
        return best_of_rows(queries, vectors, owners[rows], k)

    def search(self, queries: np.ndarray, k: int, among: np.ndarray | None = None) -> Neighbours:
        import faiss

        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dims:
            raise ValueError(f"queries have {queries.shape[1]} dims, the store {self.dims}")
        # A selection (``among``) goes to FAISS as a bitmap of the rows it keeps
        # (``IDSelectorBitmap``): rows outside are skipped before they are scored, so
        # the search is exact over the selection and returns k owners when it holds k.
        # At 100k x 512 this beat scoring the selected rows ourselves at every size
        # measured (0.1% to 50%: scripts/bench_filters.py, docs/casework.md).
        among = selected(among)
        rows = None if among is None else self.selection_rows(among)
        with self._lock:
            index = self._index()
            bitmap = self._bitmap() if rows is None else rows_bitmap(rows, self._rows)
            owners = self.owners()
            unique_owners = self._one_row_per_owner
        result = empty_neighbours(len(queries), k)
        if index.ntotal == 0 or k <= 0:
            return result
        params = None
        if bitmap is not None:
            # n counts bytes of the bitmap; the array must outlive the search (it does:
            # ``bitmap`` is a local until we return).
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        # A handful of queries is faster on one thread than split across OpenMP's
        # (measured 1.4 ms vs 35 ms on 11k vectors on a busy 2-core machine). The
        # setting belongs to the calling thread, so it is set here, where we search.
        faiss.omp_set_num_threads(1 if len(queries) < _PARALLEL_QUERIES else os.cpu_count() or 1)
        use_blas_from(BLAS_FROM_QUERIES, self.dims)
        if unique_owners:
            fetch = min(index.ntotal, k)
            scores, rows = index.search(queries, fetch, params=params)
            found = rows >= 0
            result.scores[:, :fetch][found] = scores[found]
            result.owners[:, :fetch][found] = owners[rows[found]]
            return _ties_by_owner(result)
        fetch = min(index.ntotal, k * 4)
        pending = list(range(len(queries)))
        while pending:
            scores, rows = index.search(queries[pending], fetch, params=params)
            still = []
            for slot, i in enumerate(pending):
                ranked = _best_per_owner(scores[slot], rows[slot], owners, k)
                if len(ranked) < k and fetch < index.ntotal:
                    still.append(i)
                    continue
                for j, (owner, score) in enumerate(ranked):
                    result.owners[i, j] = owner
                    result.scores[i, j] = score
            pending = still
            fetch = min(index.ntotal, fetch * 4)
        return result

    def fetch(self, owners: np.ndarray) -> np.ndarray:
        wanted = np.asarray(owners, np.int64).ravel()
        with self._lock:
            stored = self.owners()
            matrix = self._matrix_for_fetch()
        # Owners are stored in non-decreasing order, so the leftmost match is the first row.
        rows = np.searchsorted(stored, wanted, side="left")
        inside = rows < len(stored)
        if not np.all(inside) or np.any(stored[rows[inside]] != wanted[inside]):
            missing = (
                wanted[~inside].tolist()
                + wanted[inside][stored[rows[inside]] != wanted[inside]].tolist()
            )
            raise KeyError(f"no vector stored for image ids {missing[:10]}")
        return np.asarray(matrix[rows], dtype=np.float32)

    def describe(self) -> SearchMethod:
        """How searches are answered: exactly, by FAISS over float32 copies of the rows."""
        return SearchMethod(
            kind="exact",
            rows=self._rows,
            summary=f"exact: every row scored (FAISS flat inner product), {self._rows:,} rows",
        )

    def visible_owners(self) -> np.ndarray:
        unique = np.unique(self.owners())
        if not self._hidden:
            return unique
        return unique[~np.isin(unique, np.fromiter(self._hidden, np.int64))]


def rows_bitmap(rows: np.ndarray, total: int) -> np.ndarray:
    """FAISS selector bitmap (bit i little-endian) with the bits of ``rows`` set."""
    keep = np.zeros(total, bool)
    keep[rows] = True
    return np.packbits(keep, bitorder="little")


def best_of_rows(
    queries: np.ndarray, vectors: np.ndarray, row_owners: np.ndarray, k: int
) -> Neighbours:
    """The k best owners per query among ``vectors`` (n, dims) float32 whose owners are
    ``row_owners`` (n,) int64: each owner once, by its best row, ties by owner id."""
    result = empty_neighbours(len(queries), k)
    unique_owners = len(row_owners) < 2 or bool(np.all(np.diff(row_owners) > 0))
    for i, query in enumerate(queries):
        # einsum scores every row with the same loop, so equal rows get equal scores.
        scores = np.einsum("ij,j->i", vectors, query).astype(np.float32)
        if unique_owners and len(scores) > k:
            # Only rows scoring at least the k-th best can rank: sort those alone
            # (all of them, so that ties at the k-th score still break by owner).
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            candidates = np.flatnonzero(scores >= kth)
            order = candidates[np.lexsort((row_owners[candidates], -scores[candidates]))][:k]
        else:
            order = np.lexsort((row_owners, -scores))
            _, first = np.unique(row_owners[order], return_index=True)
            order = order[np.sort(first)][:k]
        result.owners[i, : len(order)] = row_owners[order]
        result.scores[i, : len(order)] = scores[order]
    return result


def use_blas_from(queries: int, dims: int) -> None:
    """Make FAISS's exact (flat) searches use BLAS from ``queries`` queries of ``dims``
    dimensions per call on.

    FAISS (1.15) compares queries x dims with ``distance_compute_blas_threshold``; the
    faiss-cpu wheel sets it to 128,000, so at 512 dims only calls of 250 queries or more
    reach BLAS, and batches (re-ranking, relevance feedback, the server's batches) are
    scored query by query, up to 9x slower at 64 queries. The old advice, 20, dates
    from when it counted queries alone: now it sends single queries to BLAS, 2.5x
    slower. The setting is process-wide, so it is set where a search is about to run
    (as the thread count is) rather than when the module is imported: a store of other
    dimensions searching at the same moment may see its value, which changes how fast
    a call is, never what it returns (both ways score exactly)."""
    import faiss

    faiss.cvar.distance_compute_blas_threshold = queries * dims


def _ties_by_owner(result: Neighbours) -> Neighbours:
    """Rows re-sorted by (score descending, owner ascending): FAISS does not promise an
    order among equal scores, and every store must agree (padding stays last)."""
    padded = result.owners < 0
    order = np.lexsort((np.where(padded, np.iinfo(np.int64).max, result.owners), -result.scores))
    return Neighbours(
        scores=np.take_along_axis(result.scores, order, axis=1),
        owners=np.take_along_axis(result.owners, order, axis=1),
    )


def _best_per_owner(
    scores: np.ndarray, rows: np.ndarray, owners: np.ndarray, k: int
) -> list[tuple[int, float]]:
    best: dict[int, float] = {}
    for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
        if row < 0:
            continue
        owner = int(owners[row])
        if owner not in best or score > best[owner]:
            best[owner] = score
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
