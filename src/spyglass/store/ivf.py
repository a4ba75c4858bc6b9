"""The approximate vector store: FAISS inverted lists over the local store's files, with
every candidate re-scored exactly from the float16 rows.

The rows stay where :class:`~spyglass.store.local.LocalVectorStore` keeps them
(``<space>.f16``, ``<space>.ids``) and remain the source of truth. Next to them lives a
derived index, rebuilt from the rows whenever it is missing or stale::

    <space>.ivf        FAISS IVF index (coarse clusters + compressed codes), row numbers
                       as ids; written to a temporary file, then renamed
    <space>.ivf.json   what it holds: rows covered, rows when trained, layout, and the
                       Recall@10 measured at each nprobe when it was built

A search probes ``nprobe`` clusters, takes the ``rescore`` best candidates by their
compressed codes, reads those rows from the memory-mapped float16 file and ranks them by
their exact inner product (ties by owner id), so that the scores are exact and only the
candidate set is approximate. Opening maps the saved index (8-bit codes are memory-mapped
by FAISS, never copied) and adds only the rows committed since it was saved.

Why IVF with 8-bit scalar codes (docs/performance.md has the measurements): on 1M
clustered 512-d vectors on a 2-core machine it reached Recall@10 0.99 at nprobe 16 with
100 candidates re-scored, at a p50 near 2 ms; per probe it keeps the most candidates
right, and FAISS can memory-map its lists, so opening costs no copy. 4-bit PQ codes
(fast scan) scan faster but need more probes and candidates for the same recall: they
serve memory budgets that 8-bit codes do not fit. HNSW as the coarse quantiser lost
recall at equal nprobe.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spyglass.errors import IndexProblem
from spyglass.settings import VectorSearchSettings
from spyglass.store.base import Neighbours, empty_neighbours
from spyglass.store.failures import storage_error
from spyglass.store.local import LocalVectorStore, SearchMethod

#: Version of the ``.ivf`` / ``.ivf.json`` pair; another version is rebuilt, not read.
IVF_FORMAT = 1
#: Training rows per cluster and k-means iterations: k-means is most of the build time
#: on a small machine. With 1,024 lists over 200k rows, 32 rows a list and 10 iterations
#: trained in 11 s against 33 s for FAISS's defaults (100k rows, 25 iterations), and
#: reached Recall@10 0.990 at nprobe 32 against 0.981.
_TRAIN_ROWS_PER_LIST = 32
_KMEANS_ITERATIONS = 10
#: Rows converted to float32 per step while adding to the index or scanning exactly.
_CHUNK_ROWS = 65536
#: Rows used as queries (leave-one-out) to measure recall when an index is built.
_RECALL_QUERIES = 200
#: nprobe values whose recall is measured when an index is built (steps of 1.5x and 2x:
#: the fewest that reach the target recall should not overshoot it by much).
_NPROBES = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
#: Below this many queries per call, FAISS searches on the calling thread only.
_PARALLEL_QUERIES = 16


@dataclass(frozen=True)
class IvfLayout:
    """The shape of an approximate index: clusters, and how each row is compressed.

    ``codes`` is FAISS's factory name for the codes: ``"SQ8"`` (one byte per dimension)
    or ``"PQ{m}x4fs"`` (m 4-bit codes, searched with SIMD "fast scan").
    """

    lists: int
    codes: str

    @property
    def factory(self) -> str:
        return f"IVF{self.lists},{self.codes}"

    def bytes_per_row(self, dims: int) -> int:
        """Memory a row costs in the index: its code and its 8-byte id."""
        if self.codes == "SQ8":
            return dims + 8
        return int(self.codes[2:].split("x")[0]) // 2 + 8

    @property
    def mappable(self) -> bool:
        """Whether FAISS can memory-map the saved lists instead of reading them in."""
        return self.codes == "SQ8"

    @classmethod
    def parse(cls, factory: str) -> IvfLayout:
        lists, codes = factory.split(",")
        return cls(int(lists.removeprefix("IVF")), codes)


def choose_layout(
    rows: int, dims: int, memory_budget: int | None = None, codes: str | None = None
) -> IvfLayout:
    """Clusters and codes for ``rows`` vectors of ``dims`` dimensions.

    About 4 x sqrt(rows) clusters (a power of two), fewer when there are too few rows to
    train them; ``codes`` if given, else 8-bit codes when they fit ``memory_budget``
    bytes, else the largest 4-bit product codes that do. Raises :class:`IndexProblem`
    when nothing fits.
    """
    lists = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(max(rows, 1)))))
    lists = max(1, min(lists, rows // _TRAIN_ROWS_PER_LIST))
    centroid_bytes = lists * dims * 4
    # Fast scan packs two 4-bit codes a byte, so m is even; each code covers dims / m.
    sizes = [m for m in (dims // 2, dims // 4, dims // 8, dims // 16) if m >= 2]
    candidates = ["SQ8"] + [f"PQ{m}x4fs" for m in sizes if dims % m == 0 and m % 2 == 0]
    if codes is not None:
        if codes != "SQ8" and codes not in candidates:
            raise IndexProblem(
                f"codes {codes!r} do not suit {dims} dims: use one of {', '.join(candidates)}"
            )
        return IvfLayout(lists, codes)
    if memory_budget is None:
        return IvfLayout(lists, "SQ8")
    for codes in candidates:
        layout = IvfLayout(lists, codes)
        if rows * layout.bytes_per_row(dims) + centroid_bytes <= memory_budget:
            return layout
    smallest = IvfLayout(lists, candidates[-1])
    needed = rows * smallest.bytes_per_row(dims) + centroid_bytes
    raise IndexProblem(
        f"a memory budget of {memory_budget / 2**20:.0f} MiB cannot hold an approximate "
        f"index of {rows:,} rows of {dims} dims: it needs at least {needed / 2**20:.0f} MiB"
    )


@dataclass(frozen=True)
class IvfRecord:
    """What a saved index holds (``<space>.ivf.json``)."""

    format: int
    #: Rows in the saved index: rows 0 .. rows-1 of the space.
    rows: int
    #: Rows the space had when the clusters were trained (retraining compares with it).
    trained_rows: int
    layout: str
    #: nprobe (as a string, JSON keys) -> Recall@10 against exact, measured at build
    #: with ``recall_queries`` of the index's own rows as queries, each leaving itself out.
    recall_at_10: dict[str, float]
    recall_queries: int

    def recall_at(self, nprobe: int) -> float | None:
        return self.recall_at_10.get(str(nprobe))


@dataclass
class _LoadedIvf:
    """An index ready to search, and what it came from."""

    #: The saved index (memory-mapped and read-only when ``extra`` is set).
    index: Any
    #: Rows added since the index was saved, when ``index`` cannot take them.
    extra: Any | None
    record: IvfRecord
    #: (inode, mtime) of the file it was read from, to notice a newer one.
    identity: tuple[int, int] | None

    @property
    def rows(self) -> int:
        return int(self.index.ntotal) + (0 if self.extra is None else int(self.extra.ntotal))

    @property
    def lists(self) -> int:
        return int(self.index.nlist)


class IvfVectorStore(LocalVectorStore):
    """A :class:`~spyglass.store.base.VectorStore` answering searches from an IVF index
    whose candidates are re-scored exactly; exact (as its parent) until one is built.

    The writer builds the index when a flush brings the rows to
    ``settings.approximate_from_rows`` (or at once with ``kind="approximate"``), adds
    new rows to it, saves it again when enough rows are not yet in the saved file, and
    retrains it when the rows have grown by ``settings.retrain_growth``. With
    ``settings.build_in_background`` that work runs on a thread while searches are
    served from the index there was. Readers never build: they search exactly until a
    writer has saved an index.
    """

    def __init__(
        self,
        folder: Path,
        space: str,
        dims: int,
        committed_rows: int,
        *,
        writer: bool = False,
        settings: VectorSearchSettings | None = None,
    ) -> None:
        super().__init__(folder, space, dims, committed_rows, writer=writer)
        self.settings = settings or VectorSearchSettings()
        self._writer = writer
        self._index_path = folder / f"{space}.ivf"
        self._record_path = folder / f"{space}.ivf.json"
        self._loaded: _LoadedIvf | None = None
        #: Held while FAISS searches or grows ``_loaded``: FAISS indexes may be searched by
        #: many threads at once, but not while rows are being added.
        self._faiss_lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._build_error: BaseException | None = None
        self._memmap: np.ndarray | None = None
        if writer:
            self._discard_stale_files(committed_rows)

    # -- files ------------------------------------------------------------------------

    def _discard_stale_files(self, committed_rows: int) -> None:
        """Remove temporary files of an interrupted save, and an index covering rows the
        catalogue never committed (the writer is about to overwrite those rows)."""
        for path in (self._temporary(self._index_path), self._temporary(self._record_path)):
            path.unlink(missing_ok=True)
        record = self._read_record()
        if record is not None and record.rows > committed_rows:
            self._index_path.unlink(missing_ok=True)
            self._record_path.unlink(missing_ok=True)

    @staticmethod
    def _temporary(path: Path) -> Path:
        return path.with_name(path.name + ".tmp")

    def _read_record(self) -> IvfRecord | None:
        try:
            fields = json.loads(self._record_path.read_text())
            record = IvfRecord(**fields)
        except (OSError, ValueError, TypeError):
            return None
        return record if record.format == IVF_FORMAT else None

    def _load_saved(self) -> _LoadedIvf | None:
        """The saved index, mapped, or None if there is none that matches its record."""
        import faiss

        record = self._read_record()
        if record is None:
            return None
        layout = IvfLayout.parse(record.layout)
        try:
            stat = self._index_path.stat()
            index: Any = faiss.read_index(
                str(self._index_path), faiss.IO_FLAG_MMAP if layout.mappable else 0
            )
        except (OSError, RuntimeError):
            return None
        if index.ntotal != record.rows or index.d != self.dims:
            return None  # renamed between the two files of a save, or another space's
        if layout.mappable:
            # FAISS's mapped lists start 32 threads per search to read lists ahead; the
            # pages are in the page cache, and those threads made a single query 2.8x
            # slower (2.07 ms against 0.74 ms at nprobe 16, 200k rows).
            mapped: Any = faiss.downcast_InvertedLists(index.invlists)
            mapped.prefetch_nthread = 0
        extra = _empty_copy(index) if layout.mappable else None
        return _LoadedIvf(index, extra, record, (stat.st_ino, stat.st_mtime_ns))

    def _save(self, index: Any, record: IvfRecord) -> tuple[int, int]:
        """Write index then record, each to a temporary file renamed into place; returns
        the new file's identity. A crash between the renames leaves a pair whose row
        counts differ, which readers ignore and the next writer rebuilds."""
        import faiss

        written = self._temporary(self._index_path)
        try:
            try:
                faiss.write_index(index, str(written))
            except RuntimeError as error:  # FAISS reports a failed write without errno
                raise OSError(f"FAISS could not write the index ({error})") from error
            _fsync(written)
            os.replace(written, self._index_path)
            written = self._temporary(self._record_path)
            written.write_text(json.dumps(asdict(record), indent=1) + "\n")
            _fsync(written)
            os.replace(written, self._record_path)
            stat = self._index_path.stat()
        except OSError as error:
            written.unlink(missing_ok=True)
            raise storage_error(written, error) from error
        return (stat.st_ino, stat.st_mtime_ns)

    # -- keeping the index current ----------------------------------------------------

    def flush(self) -> int:
        rows = super().flush()
        if self._writer:
            self.maintain()
        return rows

    def _wants_index(self, rows: int) -> bool:
        if self.settings.kind == "exact" or rows == 0:
            return False
        return self.settings.kind == "approximate" or rows >= self.settings.approximate_from_rows

    def maintain(self) -> None:
        """Start what the committed rows call for (writer only): train an index when
        there is none, save it again once ``save_growth`` of its rows are not in the
        saved file, train it again once the rows have grown by ``retrain_growth``. On a
        thread with ``settings.build_in_background`` (see :meth:`wait_for_index`).

        :meth:`flush` calls it; call it after opening a writer to build the index of
        rows that were indexed before there was one."""
        rows = len(self)
        if not self._writer or not self._wants_index(rows) or self.building:
            return
        with self._lock:
            loaded = self._loaded
        record = loaded.record if loaded is not None else self._read_record()
        if record is None or rows >= self.settings.retrain_growth * max(record.trained_rows, 1):
            self._start_build(rows, retrain=True)
        elif rows - record.rows >= max(1, self.settings.save_growth * record.rows):
            self._start_build(rows, retrain=False)

    @property
    def building(self) -> bool:
        """Whether a background build or save is running."""
        builder = self._builder
        return builder is not None and builder.is_alive()

    def update_index(self, *, retrain: bool = False) -> None:
        """Bring the saved index up to date with every committed row, now (writer only):
        train one if there is none (or ``retrain``), else add the rows it lacks."""
        if not self._writer:
            raise IndexProblem("this index was opened read-only")
        self.wait_for_index()
        rows = len(self)
        record = self._loaded.record if self._loaded is not None else self._read_record()
        self._build(rows, retrain=retrain or record is None)

    def wait_for_index(self) -> None:
        """Wait for a background build or save; raises what made it fail, if anything."""
        builder = self._builder
        if builder is not None:
            builder.join()
        error, self._build_error = self._build_error, None
        if isinstance(error, IndexProblem):
            raise error
        if error is not None:
            raise IndexProblem(f"building the approximate index failed: {error}") from error

    def _start_build(self, rows: int, *, retrain: bool) -> None:
        def run() -> None:
            # The index is derived: failing to build it must not fail the flush (the
            # rows are durable and searched exactly); kept for wait_for_index.
            try:
                self._build(rows, retrain=retrain)
            except Exception as error:
                self._build_error = error

        if not self.settings.build_in_background:
            run()
            return

        # Not a daemon: a process that ends while saving waits for the save rather than
        # leave work that the next writer would redo.
        self._builder = threading.Thread(target=run, name=f"ivf-{self.space}")
        self._builder.start()

    def _build(self, rows: int, *, retrain: bool) -> None:
        """Train a new index over rows [0, rows), or extend the saved one to them; save
        it; then swap it in (searches meanwhile use the previous one)."""
        matrix = self._rows_matrix(rows)
        record = None if retrain else self._read_record()
        index = None
        if record is not None:
            index = self._read_writable(record)
        if index is None or record is None:
            layout = choose_layout(
                rows, self.dims, self.settings.memory_budget, self.settings.codes
            )
            index = train_ivf(matrix, layout)
            _add_rows(index, matrix, 0, rows)
            recall = measure_recall(index, matrix, self._rescore_depth(layout))
            record = IvfRecord(
                format=IVF_FORMAT,
                rows=rows,
                trained_rows=rows,
                layout=layout.factory,
                recall_at_10={str(p): r for p, r in recall.items()},
                recall_queries=min(_RECALL_QUERIES, rows),
            )
        else:
            _add_rows(index, matrix, record.rows, rows)
            record = IvfRecord(**{**asdict(record), "rows": rows})
        identity = self._save(index, record)
        # Searched from the saved file, as a reader would: mapped 8-bit codes are page
        # cache shared with readers rather than a private copy.
        mapped = self._load_saved() if IvfLayout.parse(record.layout).mappable else None
        with self._lock, self._faiss_lock:
            self._loaded = mapped or _LoadedIvf(index, None, record, identity)

    def _read_writable(self, record: IvfRecord) -> Any | None:
        """The saved index read into memory (so rows can be added), or None."""
        import faiss

        try:
            index = faiss.read_index(str(self._index_path))
        except RuntimeError:
            return None
        return index if index.ntotal == record.rows else None

    def reload(self, committed_rows: int) -> None:
        super().reload(committed_rows)
        with self._lock:
            loaded = self._loaded
            if loaded is None or loaded.identity is None or self._writer:
                return
            try:
                stat = self._index_path.stat()
            except OSError:
                return
            if (stat.st_ino, stat.st_mtime_ns) != loaded.identity:
                self._loaded = None  # a writer saved a newer index: map it next search

    # -- searching --------------------------------------------------------------------

    def _rows_matrix(self, rows: int) -> np.ndarray:
        """(rows, dims) float16, memory-mapped: the first ``rows`` rows on disk."""
        if rows == 0:
            return np.zeros((0, self.dims), np.float16)
        return np.memmap(self._vectors_path, dtype=np.float16, mode="r", shape=(rows, self.dims))

    def _searchable(self) -> _LoadedIvf | None:
        """The index to search, caught up with the committed rows; None: search exactly.
        Called with ``_lock`` held."""
        if not self._wants_index(self._rows):
            return None
        if self._loaded is None:
            self._loaded = self._load_saved()
            if self._loaded is None:
                return None
        loaded = self._loaded
        if loaded.rows < self._rows:
            matrix = self._rows_matrix(self._rows)
            with self._faiss_lock:
                start = loaded.rows
                if loaded.extra is not None:
                    _add_rows(loaded.extra, matrix, start, self._rows, with_ids=True)
                else:
                    _add_rows(loaded.index, matrix, start, self._rows)
        return loaded

    def _selector(self, loaded: _LoadedIvf) -> np.ndarray | None:
        """Bitmap of the rows a search may return (visible and committed here), or None
        for all. Rows the index holds beyond this store's committed count (a reader that
        has not yet seen a writer's commit) are left out: bits past the end are 0."""
        bitmap = self._bitmap()
        if bitmap is None and loaded.rows > self._rows:
            bitmap = np.packbits(np.ones(self._rows, bool), bitorder="little")
        return bitmap

    def _rescore_depth(self, layout: IvfLayout) -> int:
        """Candidates to re-score: 4-bit PQ ranks them roughly, so it needs more (at 1M
        rows and nprobe 24, Recall@10 0.88 with 100 and 0.97 with 400)."""
        return self.settings.rescore * (1 if layout.codes == "SQ8" else 4)

    def nprobe(self, record: IvfRecord | None = None) -> int:
        """Clusters probed per query: the setting, or else the fewest of the measured
        values whose Recall@10 reached ``settings.target_recall`` when built (or, if none
        did, came within 0.005 of the best: more probes stopped paying)."""
        if self.settings.nprobe is not None:
            return self.settings.nprobe
        record = record or (self._loaded.record if self._loaded is not None else None)
        if record is None or not record.recall_at_10:
            return _NPROBES[-1]
        measured = sorted((int(p), r) for p, r in record.recall_at_10.items())
        enough = min(self.settings.target_recall, max(r for _, r in measured) - 0.005)
        return next(probes for probes, recall in measured if recall >= enough)

    def search(self, queries: np.ndarray, k: int) -> Neighbours:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dims:
            raise ValueError(f"queries have {queries.shape[1]} dims, the store {self.dims}")
        with self._lock:
            loaded = self._searchable()
            if loaded is not None:
                selector = self._selector(loaded)
                owners = self.owners()
                unique_owners = self._one_row_per_owner
                rows = self._rows
                if self._memmap is None or len(self._memmap) != rows:
                    self._memmap = self._rows_matrix(rows)
                matrix = self._memmap
        if loaded is None:
            return super().search(queries, k)
        result = empty_neighbours(len(queries), k)
        if rows == 0 or k <= 0:
            return result
        nprobe = min(self.nprobe(loaded.record), loaded.lists)
        layout = IvfLayout.parse(loaded.record.layout)
        fetch = min(loaded.rows, max(self._rescore_depth(layout), 4 * k))
        pending = np.arange(len(queries))
        while len(pending):
            candidates = self._candidates(loaded, queries[pending], fetch, nprobe, selector)
            exhausted = fetch >= loaded.rows and nprobe >= loaded.lists
            still = []
            for slot, i in enumerate(pending.tolist()):
                found = candidates[slot]
                found = np.unique(found[found >= 0])
                best_owners, best_scores = rescore(
                    queries[i], found, matrix, owners, k, unique_owners=unique_owners
                )
                if len(best_owners) < k and not exhausted:
                    still.append(i)  # too few visible owners among the candidates: widen
                    continue
                result.owners[i, : len(best_owners)] = best_owners
                result.scores[i, : len(best_owners)] = best_scores
            pending = np.asarray(still, np.int64)
            fetch = min(loaded.rows, fetch * 4)
            nprobe = min(loaded.lists, nprobe * 4)
        return result

    def _candidates(
        self,
        loaded: _LoadedIvf,
        queries: np.ndarray,
        fetch: int,
        nprobe: int,
        selector: np.ndarray | None,
    ) -> np.ndarray:
        """(m, fetch or 2 x fetch) int64 candidate rows by compressed codes, -1 padded."""
        import faiss

        # n counts bytes of the bitmap, which must outlive the search (a local here).
        sel = (
            None
            if selector is None
            else faiss.IDSelectorBitmap(len(selector), faiss.swig_ptr(selector))
        )
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)  # type: ignore[call-arg]
        # A handful of queries is faster on one thread than split across OpenMP's; the
        # setting belongs to the calling thread, so it is set where we search.
        faiss.omp_set_num_threads(1 if len(queries) < _PARALLEL_QUERIES else os.cpu_count() or 1)
        with self._faiss_lock:
            _, rows = loaded.index.search(queries, fetch, params=params)
            if loaded.extra is not None and loaded.extra.ntotal:
                _, more = loaded.extra.search(queries, fetch, params=params)
                rows = np.hstack([rows, more])
        return np.asarray(rows)

    def describe(self) -> SearchMethod:
        """How searches are answered now, and the recall measured for it."""
        with self._lock:
            loaded = self._searchable()
            rows = self._rows
        if loaded is None:
            exact = super().describe()
            if self._wants_index(rows):
                why = (
                    "being built"
                    if self.building
                    else f"not built: {self._build_error}"
                    if self._build_error is not None
                    else "not built yet"
                )
                summary = f"{exact.summary}; the approximate index is {why}"
                return SearchMethod(kind="exact", rows=rows, summary=summary)
            return exact
        record = loaded.record
        layout = IvfLayout.parse(record.layout)
        nprobe = min(self.nprobe(record), layout.lists)
        recall = record.recall_at(nprobe)
        codes = "8-bit scalar" if layout.codes == "SQ8" else f"4-bit PQ ({layout.codes})"
        measured = (
            f"Recall@10 {recall:.3f} against exact at this nprobe (measured over "
            f"{record.recall_queries} of its rows when trained on {record.trained_rows:,})"
            if recall is not None
            else f"recall at nprobe {nprobe} not measured"
        )
        summary = (
            f"approximate: IVF with {layout.lists:,} lists and {codes} codes over "
            f"{rows:,} rows, {nprobe} lists probed per query, the best "
            f"{self._rescore_depth(layout)} candidates re-scored exactly; {measured}"
        )
        return SearchMethod(
            kind="approximate", rows=rows, summary=summary, recall_at_10=recall, nprobe=nprobe
        )


# -- building blocks, shared with the benchmark ------------------------------------------


def train_ivf(matrix: np.ndarray, layout: IvfLayout, *, seed: int = 1234) -> Any:
    """An empty, trained FAISS index (inner product) for ``matrix`` (n, dims) rows."""
    import faiss

    rows, dims = matrix.shape
    index = faiss.index_factory(dims, layout.factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = _KMEANS_ITERATIONS
    ivf.cp.seed = seed
    ivf.cp.max_points_per_centroid = _TRAIN_ROWS_PER_LIST
    # FAISS prints a warning to stderr below 39 rows per cluster; the sample size is
    # chosen here on purpose, and a library must not print.
    ivf.cp.min_points_per_centroid = 1
    if hasattr(index, "pq"):
        index.pq.cp.min_points_per_centroid = 1
    wanted = min(rows, max(layout.lists * _TRAIN_ROWS_PER_LIST, 10_000))
    picked = np.sort(np.random.default_rng(seed).choice(rows, wanted, replace=False))
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index.train(np.ascontiguousarray(matrix[picked], dtype=np.float32))
    return index


def _add_rows(
    index: Any, matrix: np.ndarray, start: int, stop: int, *, with_ids: bool = False
) -> None:
    """Add rows [start, stop) of ``matrix``; their ids are their row numbers (FAISS
    numbers added rows from ``ntotal`` unless ``with_ids``)."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    for first in range(start, stop, _CHUNK_ROWS):
        last = min(first + _CHUNK_ROWS, stop)
        chunk = np.ascontiguousarray(matrix[first:last], dtype=np.float32)
        if with_ids:
            index.add_with_ids(chunk, np.arange(first, last, dtype=np.int64))
        else:
            index.add(chunk)


def _empty_copy(index: Any) -> Any:
    """An empty index sharing ``index``'s trained clusters and 8-bit quantiser, to hold
    rows added after a memory-mapped (read-only) index was saved. Keep ``index`` alive
    as long as the copy: its coarse quantiser is shared, not copied."""
    import faiss

    extra = faiss.IndexIVFScalarQuantizer(
        index.quantizer, index.d, index.nlist, index.sq.qtype, index.metric_type, index.by_residual
    )
    extra.sq = index.sq
    extra.is_trained = True
    return extra


def rescore(
    query: np.ndarray,
    rows: np.ndarray,
    matrix: np.ndarray,
    owners: np.ndarray,
    k: int,
    *,
    unique_owners: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best owners among candidate ``rows`` by exact inner product with ``query``.

    ``query`` (dims,) float32; ``rows`` (n,) int64 sorted row numbers; ``matrix``
    (rows, dims) float16 (memory-mapped); ``owners`` (rows,) int64. Returns owners (<= k,)
    int64 and scores float32, by score descending then owner ascending; with several
    rows per owner, each owner once with its best row's score.
    """
    vectors = np.asarray(matrix[rows], dtype=np.float32)
    # einsum scores every row with the same loop, so equal rows get equal scores (BLAS
    # may sum rows at the edge of a block in another order) and ties stay ties.
    scores = np.einsum("ij,j->i", vectors, query).astype(np.float32)
    row_owners = owners[rows]
    order = np.lexsort((row_owners, -scores))
    if not unique_owners:
        _, first = np.unique(row_owners[order], return_index=True)
        order = order[np.sort(first)]
    order = order[:k]
    return row_owners[order], scores[order]


def exact_top(
    queries: np.ndarray, matrix: np.ndarray, k: int, *, leave_out: np.ndarray | None = None
) -> np.ndarray:
    """(m, k) int64 rows of the exact k best rows of ``matrix`` (n, dims) float16 for
    ``queries`` (m, dims) float32, scanned in chunks; ``leave_out`` (m,) rows are skipped
    (each query's own row when measuring with the index's own rows)."""
    m = len(queries)
    best_scores = np.full((m, 0), -np.inf, np.float32)
    best_rows = np.zeros((m, 0), np.int64)
    for first in range(0, len(matrix), _CHUNK_ROWS):
        chunk = np.asarray(matrix[first : first + _CHUNK_ROWS], dtype=np.float32)
        scores = queries @ chunk.T
        if leave_out is not None:
            inside = (leave_out >= first) & (leave_out < first + len(chunk))
            scores[np.flatnonzero(inside), leave_out[inside] - first] = -np.inf
        rows = np.broadcast_to(np.arange(first, first + len(chunk)), scores.shape)
        best_scores = np.hstack([best_scores, scores])
        best_rows = np.hstack([best_rows, rows])
        if best_scores.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_rows = np.take_along_axis(best_rows, keep, axis=1)
    order = np.lexsort((best_rows, -best_scores))
    return np.take_along_axis(best_rows, order, axis=1)


def measure_recall(
    index: Any,
    matrix: np.ndarray,
    rescore_candidates: int,
    nprobes: Sequence[int] = _NPROBES,
    *,
    queries: int = _RECALL_QUERIES,
    seed: int = 99,
) -> dict[int, float]:
    """Recall@10 of the approximate search (candidates re-scored exactly) against exact,
    at each of ``nprobes`` (those up to the index's lists), with ``queries`` of its own
    rows as queries, each leaving itself out of both answers."""
    import faiss

    rows = len(matrix)
    count = min(queries, rows)
    if count == 0:
        return {}
    picked = np.sort(np.random.default_rng(seed).choice(rows, count, replace=False))
    asked = np.asarray(matrix[picked], dtype=np.float32)
    k = min(10, rows - 1)
    if k <= 0:
        return {}
    truth = exact_top(asked, matrix, k, leave_out=picked)
    identity = np.arange(rows, dtype=np.int64)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    recall: dict[int, float] = {}
    lists = int(faiss.extract_index_ivf(index).nlist)
    for nprobe in [p for p in nprobes if p <= lists] or [lists]:
        params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
        _, found = index.search(asked, min(rows, rescore_candidates), params=params)
        hits = 0
        for query, own, candidates, wanted in zip(asked, picked, found, truth, strict=True):
            candidates = np.unique(candidates[(candidates >= 0) & (candidates != own)])
            top, _ = rescore(query, candidates, matrix, identity, k)
            hits += len(np.intersect1d(top, wanted))
        recall[nprobe] = hits / (count * k)
        if recall[nprobe] >= 0.999:
            break  # more probes cannot do better
    return recall


def _fsync(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())
