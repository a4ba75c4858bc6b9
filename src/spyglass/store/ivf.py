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
compressed codes, reads those rows from the float16 file (``pread``) and ranks them by
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

import errno
import json
import math
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spyglass.errors import ApproximateIndexFailed, IndexProblem
from spyglass.settings import VectorSearchSettings, format_bytes
from spyglass.store.base import Neighbours, empty_neighbours, selected
from spyglass.store.failures import storage_error
from spyglass.store.gpu import (
    DEVICE_MAX_K,
    DeviceChoice,
    DeviceIndex,
    NoDevice,
    device_fetch,
    keep_selected,
)
from spyglass.store.local import (
    BLAS_FROM_QUERIES,
    LocalVectorStore,
    SearchMethod,
    rows_bitmap,
    use_blas_from,
)

#: A selection (``search(..., among=...)``) of at most this many rows is searched by
#: scoring exactly those rows, read from the float16 file: exact, and cheaper than the
#: inverted lists for a narrow filter; a larger one goes through the lists with a
#: bitmap selector (measured: scripts/bench_filters.py, docs/casework.md).
EXACT_SELECTION_ROWS = 2_000

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
#: Centroids of each 4-bit PQ sub-quantiser (training needs at least as many rows).
_PQ_CENTROIDS = 16
#: A failed FAISS write with less free disk than this is taken for a full disk.
_DISK_FULL_BELOW = 64 * 2**20
#: Most lists an index gets. k-means compares every training row with every centroid,
#: lists x 32 rows, 10 times: at the 16,384 lists that 4 x sqrt(rows) gives 10M rows,
#: that is half an hour on the 2-core machine (2,670 rows/s assigned against 16,384
#: centroids), a quarter of it at 8,192. Cheaper k-means lost recall (200k rows, 2,048
#: lists, Recall@10 at nprobe 32): two-level (groups first, then lists within each) 0.57
#: against 0.95, assigning through groups (:class:`GroupAssigner`) 0.87 against 0.95.
_MAX_LISTS = 8192
#: From this many lists on, added rows find their list through groups of lists
#: (:class:`GroupAssigner`) rather than by comparison with every centroid, as FAISS
#: does: at 8,192 lists over 10M rows that would be over half an hour.
_GROUPED_FROM_LISTS = 8192
#: Groups a row's nearest list is looked for in (of about sqrt(lists) groups). With
#: FAISS's centroids of 2,048 lists over 200k rows, 8 of 45 groups gave the Recall@10 of
#: FAISS's own assignment at every nprobe (0.948 at 32, as flat); 4 lost 0.02. At 8,192
#: lists 8 groups assigned 6,600 rows/s against FAISS's 3,000, at 16,384 8,700 against
#: 1,700 (2 cores, loaded); below 8,192 lists it does not pay.
_GROUP_PROBES = 8
#: Fewer rows than this are assigned flat even then: grouping the centroids costs more.
_FLAT_ASSIGNMENT_BELOW = 2048


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

    def memory(self, rows: int, dims: int) -> int:
        """Bytes the index takes over ``rows`` rows: codes, ids and float32 centroids."""
        return rows * self.bytes_per_row(dims) + self.lists * dims * 4

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

    About 4 x sqrt(rows) clusters (a power of two) up to ``_MAX_LISTS``, fewer when
    there are too few rows to train them; ``codes`` if given, else 8-bit codes when
    they fit ``memory_budget`` bytes, else the largest 4-bit product codes that do.
    Raises :class:`IndexProblem` when nothing fits.
    """
    lists = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(max(rows, 1)))))
    lists = max(1, min(lists, _MAX_LISTS, rows // _TRAIN_ROWS_PER_LIST))
    # Fast scan packs two 4-bit codes a byte, so m is even; each code covers dims / m.
    sizes = [m for m in (dims // 2, dims // 4, dims // 8, dims // 16) if m >= 2]
    candidates = ["SQ8"] + [f"PQ{m}x4fs" for m in sizes if dims % m == 0 and m % 2 == 0]
    if rows < _PQ_CENTROIDS and codes is None:
        candidates = ["SQ8"]  # FAISS trains 16 centroids per sub-vector, from 16 rows on
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
        if layout.memory(rows, dims) <= memory_budget:
            return layout
    needed = IvfLayout(lists, candidates[-1]).memory(rows, dims)
    raise IndexProblem(
        f"a memory budget of {format_bytes(memory_budget)} cannot hold an approximate "
        f"index of {rows:,} rows of {dims} dims: it needs at least {format_bytes(needed)}"
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
    #: ``index`` copied to a GPU (spyglass.store.gpu), once a search asked for it.
    on_device: DeviceIndex | None = None
    placed: bool = False

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
        device: DeviceChoice | None = None,
    ) -> None:
        super().__init__(folder, space, dims, committed_rows, writer=writer)
        self.settings = settings or VectorSearchSettings()
        #: Where candidates are looked for: a GPU when FAISS has one (shared by an
        #: index's stores), else the CPU.
        self._device = device or DeviceChoice(self.settings.gpu)
        #: Why this store stopped using its GPU (an error there), for describe().
        self._device_failure: str | None = None
        self._writer = writer
        self._index_path = folder / f"{space}.ivf"
        self._record_path = folder / f"{space}.ivf.json"
        self._loaded: _LoadedIvf | None = None
        #: Held while FAISS searches or grows ``_loaded``: FAISS indexes may be searched by
        #: many threads at once, but not while rows are being added.
        self._faiss_lock = threading.Lock()
        self._builder: threading.Thread | None = None
        #: Why the last build failed, until wait_for_index raises it (once).
        self._build_error: ApproximateIndexFailed | None = None
        #: Why a build failed in this process: describe() says so, and the writer does
        #: not try again until it is reopened (a full disk or a budget too small would
        #: fail the same way at every flush).
        self._failure: ApproximateIndexFailed | None = None
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
            except RuntimeError as error:
                # FAISS reports a failed write without its errno; a full disk is by far
                # the likeliest cause, and the one a person can fix, so look.
                if shutil.disk_usage(written.parent).free < _DISK_FULL_BELOW:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from error
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
        return self.settings.wants_approximate(rows, self.dims)

    def _fits_settings(self, record: IvfRecord, rows: int) -> bool:
        """Whether the saved layout is one the settings allow: the codes asked for, and
        within the memory budget at ``rows`` (a budget given later retrains the index)."""
        layout = IvfLayout.parse(record.layout)
        if self.settings.codes is not None and layout.codes != self.settings.codes:
            return False
        budget = self.settings.memory_budget
        return budget is None or layout.memory(rows, self.dims) <= budget

    def maintain(self) -> None:
        """Start what the committed rows call for (writer only): train an index when
        there is none, save it again once ``save_growth`` of its rows are not in the
        saved file, train it again once the rows have grown by ``retrain_growth`` or
        when the settings no longer allow its layout (other codes, a memory budget it
        exceeds). On a thread with ``settings.build_in_background`` (see
        :meth:`wait_for_index`).

        :meth:`flush` calls it; call it after opening a writer to build the index of
        rows that were indexed before there was one. After a failed build it does
        nothing: a full disk or a budget too small would fail again at every flush; the
        next writer (or :meth:`update_index`) tries again."""
        rows = len(self)
        if not self._writer or not self._wants_index(rows) or self.building:
            return
        if self._failure is not None:
            return
        with self._lock:
            loaded = self._loaded
        record = loaded.record if loaded is not None else self._read_record()
        if (
            record is None
            or rows >= self.settings.retrain_growth * max(record.trained_rows, 1)
            or not self._fits_settings(record, rows)
        ):
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
        train one if there is none (or ``retrain``), else add the rows it lacks. Tries
        even after a failure; raises :class:`ApproximateIndexFailed` if it fails."""
        if not self._writer:
            raise IndexProblem("this index was opened read-only")
        self.wait_for_index()
        self._failure = None
        rows = len(self)
        record = self._loaded.record if self._loaded is not None else self._read_record()
        try:
            self._build(rows, retrain=retrain or record is None)
        except Exception as error:
            self._failure = self._failed(error)
            raise self._failure from error

    def wait_for_index(self) -> None:
        """Wait for a background build or save. Raises :class:`ApproximateIndexFailed`
        if it failed (once per failure: the space is searched exactly meanwhile)."""
        builder = self._builder
        if builder is not None:
            builder.join()
        error, self._build_error = self._build_error, None
        if error is not None:
            raise error

    def _failed(self, error: BaseException) -> ApproximateIndexFailed:
        """One line saying which index failed, why, and what happens meanwhile."""
        if isinstance(error, MemoryError):
            why = "out of memory"
        elif isinstance(error, OSError):
            why = str(storage_error(self._index_path, error))
        else:
            why = str(error) or type(error).__name__
        return ApproximateIndexFailed({self.space: why})

    def _start_build(self, rows: int, *, retrain: bool) -> None:
        def run() -> None:
            # The index is derived: failing to build it must not fail the flush (the
            # rows are durable and searched exactly); wait_for_index raises it.
            try:
                self._build(rows, retrain=retrain)
            except Exception as error:  # MemoryError included
                failure = self._failed(error)
                failure.__cause__ = error
                self._failure = self._build_error = failure

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

    def search_files(self) -> list[Path]:
        return [self._index_path, *super().search_files()]

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

    def search(self, queries: np.ndarray, k: int, among: np.ndarray | None = None) -> Neighbours:
        """With a selection (``among``): at most ``EXACT_SELECTION_ROWS`` rows are scored
        exactly, read from the float16 file; a larger one goes through the inverted lists
        with a bitmap selector, widening (more candidates, more lists) until k owners of
        the selection are found or every list was probed, so a narrow filter still
        returns k."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dims:
            raise ValueError(f"queries have {queries.shape[1]} dims, the store {self.dims}")
        among = selected(among)
        chosen = None if among is None else self.selection_rows(among)
        if chosen is not None and len(chosen) <= EXACT_SELECTION_ROWS:
            return self._search_rows(queries, k, chosen)
        with self._lock:
            loaded = self._searchable()
            if loaded is not None:
                selector = (
                    self._selector(loaded) if chosen is None else rows_bitmap(chosen, self._rows)
                )
                # Roughly (an owner may have several rows): only the GPU's choice needs it.
                kept = len(chosen) if chosen is not None else self._rows - len(self._hidden)
                kept_share = kept / max(self._rows, 1)
                owners = self.owners()
                unique_owners = self._one_row_per_owner
                rows = self._rows
                matrix: Any = _RowReader(self._vectors_path, rows, self.dims)
        if loaded is None:
            if self._float32_copy_fits():
                return super().search(queries, k, among)
            return self._search_streamed(queries, k, chosen)
        result = empty_neighbours(len(queries), k)
        if rows == 0 or k <= 0:
            return result
        nprobe = min(self.nprobe(loaded.record), loaded.lists)
        layout = IvfLayout.parse(loaded.record.layout)
        fetch = min(loaded.rows, candidates_to_rescore(self._rescore_depth(layout), k))
        pending = np.arange(len(queries))
        while len(pending):
            candidates = self._candidates(
                loaded, queries[pending], fetch, nprobe, selector, kept_share
            )
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

    def _matrix_for_fetch(self) -> Any:
        """Rows read with ``pread`` (``_RowReader``): a thousand scattered rows (late
        fusion's missing candidates, the feedback methods' random negatives) came in
        8 to 13 ms against 16 to 55 ms through the mapping at 1M x 1,280 on a loaded
        machine, and they do not count in resident memory."""
        return _RowReader(self._vectors_path, self._rows, self.dims)

    def _float32_copy_fits(self) -> bool:
        """Whether the exact store's float32 copy of the rows (rows x dims x 4 bytes)
        fits the memory budget, or with none, half the memory available now."""
        needed = self._rows * self.dims * 4
        budget = self.settings.memory_budget
        if budget is None:
            available = available_memory()
            budget = None if available is None else available // 2
        return budget is None or needed <= budget

    def _search_streamed(
        self, queries: np.ndarray, k: int, chosen: np.ndarray | None = None
    ) -> Neighbours:
        """Exact search without an index or a float32 copy: the float16 rows are read
        chunk by chunk for every call (10M x 512 rows are 10 GB read per query; slow, but
        what is left when an index could not be built and the rows do not fit)."""
        with self._lock:
            rows = self._rows
            owners = self.owners()
            unique_owners = self._one_row_per_owner
            bitmap = self._bitmap() if chosen is None else rows_bitmap(chosen, rows)
            matrix = self._rows_matrix(rows)
        result = empty_neighbours(len(queries), k)
        if rows == 0 or k <= 0:
            return result
        visible = (
            None
            if bitmap is None
            else np.unpackbits(bitmap, count=rows, bitorder="little").astype(bool)
        )
        # Enough rows for k owners even if each owner's rows all come first: the most
        # rows an owner has (owners are stored in order, so rows of one owner are a run).
        per_owner = 1
        if not unique_owners:
            starts = np.flatnonzero(np.diff(owners, prepend=owners[0] - 1))
            per_owner = int(np.diff(np.append(starts, rows)).max())
        found = exact_top(queries, matrix, min(rows, k * per_owner), visible=visible)
        for i, candidates in enumerate(found):
            if visible is not None:
                candidates = candidates[visible[candidates]]
            best_owners, best_scores = rescore(
                queries[i], np.sort(candidates), matrix, owners, k, unique_owners=unique_owners
            )
            result.owners[i, : len(best_owners)] = best_owners
            result.scores[i, : len(best_owners)] = best_scores
        return result

    def _candidates(
        self,
        loaded: _LoadedIvf,
        queries: np.ndarray,
        fetch: int,
        nprobe: int,
        selector: np.ndarray | None,
        kept_share: float = 1.0,
    ) -> np.ndarray:
        """(m, about fetch or more) int64 candidate rows by compressed codes, -1 padded:
        from the GPU copy of the index when there is one that can serve this search
        (``kept_share``: about how many of the rows ``selector`` allows; the GPU takes
        no selector, so it is asked for more and the others dropped after), else from
        the CPU; then the rows added since the save."""
        import faiss

        params, _sel = _search_parameters(nprobe, selector)
        asked = device_fetch(fetch, kept_share) if nprobe <= DEVICE_MAX_K else None
        # A handful of queries is faster on one thread than split across OpenMP's; the
        # setting belongs to the calling thread, so it is set where we search.
        faiss.omp_set_num_threads(1 if len(queries) < _PARALLEL_QUERIES else os.cpu_count() or 1)
        # The coarse quantiser is a flat search over the centroids: same rule as exact.
        use_blas_from(BLAS_FROM_QUERIES, self.dims)
        with self._faiss_lock:
            on_device = None if asked is None else self._device_rows(loaded, queries, asked, nprobe)
            if on_device is not None:
                rows = keep_selected(on_device, selector)
            else:
                rows = np.asarray(loaded.index.search(queries, fetch, params=params)[1])
            return _with_extra(rows, loaded, queries, fetch, params)

    def _device_rows(
        self, loaded: _LoadedIvf, queries: np.ndarray, asked: int, nprobe: int
    ) -> np.ndarray | None:
        """(m, asked) candidate rows from the GPU copy of the saved index, unselected; None
        without a GPU, or after an error there (the store then stays on the CPU).
        Called with ``_faiss_lock``."""
        if self._device_failure is not None:
            return None
        try:
            on_device = self._placed(loaded)
            return None if on_device is None else on_device.search(queries, asked, nprobe)
        except (RuntimeError, MemoryError) as error:
            self._device_failure = str(error).strip().splitlines()[0] or type(error).__name__
            return None

    def _placed(self, loaded: _LoadedIvf) -> DeviceIndex | None:
        """The GPU copy of ``loaded``'s saved index, made on first use; None without a
        GPU. Only mapped (8-bit) indexes go: they never change once saved (new rows go
        to ``extra``), while the others grow in place. Called with ``_faiss_lock``."""
        if not loaded.placed:
            loaded.placed = True
            placer = self._device.get()
            if not isinstance(placer, NoDevice) and loaded.extra is not None:
                loaded.on_device = placer.place(loaded.index)
        return loaded.on_device

    def _device_summary(self, loaded: _LoadedIvf) -> str:
        """Where candidates are looked for, in words."""
        placer = self._device.get()
        if self._device_failure is not None:
            return f"on the CPU (the GPU failed: {self._device_failure})"
        if isinstance(placer, NoDevice):
            return f"on the CPU ({placer.reason})"
        if loaded.extra is None:
            return "on the CPU (only 8-bit codes go to the GPU)"
        return f"on {placer.where}"

    def describe(self) -> SearchMethod:
        """How searches are answered now, and the recall measured for it."""
        with self._lock:
            loaded = self._searchable()
            rows = self._rows
        if loaded is None:
            exact = super().describe()
            if not self._float32_copy_fits():
                exact = SearchMethod(
                    kind="exact",
                    rows=rows,
                    summary=f"exact: every row scored from the float16 file, read for each "
                    f"search (a float32 copy, {format_bytes(rows * self.dims * 4)}, would not "
                    f"fit in memory), {rows:,} rows",
                )
            if self._wants_index(rows):
                why = (
                    "being built"
                    if self.building
                    else f"not built: {self._failure.reasons[self.space]}"
                    if self._failure is not None
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
            f"{rows:,} rows, {nprobe} lists probed per query "
            f"{self._device_summary(loaded)}, the best "
            f"{self._rescore_depth(layout)} candidates re-scored exactly; {measured}"
        )
        return SearchMethod(
            kind="approximate", rows=rows, summary=summary, recall_at_10=recall, nprobe=nprobe
        )


def _search_parameters(nprobe: int, selector: np.ndarray | None) -> tuple[Any, Any]:
    """FAISS search parameters for ``nprobe`` lists and the rows ``selector`` allows
    (a little-endian bitmap; None: all), and the selector object, which the caller must
    keep until the search is done (the parameters hold only a pointer to it)."""
    import faiss

    sel = (
        None
        if selector is None
        else faiss.IDSelectorBitmap(len(selector), faiss.swig_ptr(selector))
    )
    return faiss.SearchParametersIVF(nprobe=nprobe, sel=sel), sel  # type: ignore[call-arg]


def _with_extra(
    rows: np.ndarray, loaded: _LoadedIvf, queries: np.ndarray, fetch: int, params: Any
) -> np.ndarray:
    """``rows`` (m, n) candidates with those of the rows added since the save appended."""
    if loaded.extra is None or not loaded.extra.ntotal:
        return rows
    _, more = loaded.extra.search(queries, fetch, params=params)
    return np.hstack([rows, np.asarray(more, rows.dtype)])


class _RowReader:
    """Rows of the float16 file read with ``pread``, for re-scoring candidates: indexed
    like the (rows, dims) matrix with sorted row numbers, it returns (n, dims) float16.

    Not memory-mapped on purpose: the kernel maps a whole page-cache folio per fault
    (measured: 2,000 random 1 KiB rows of the 10 GB 10M x 512 file added 2 GB to the
    process's resident memory, MADV_RANDOM or not), so re-scoring through a mapping
    made a 10M index look like 12 GB resident when the index is 5.2 GB. Read, the rows
    go through the page cache like any file read (50 rows a query; a few microseconds
    each when cached)."""

    def __init__(self, path: Path, rows: int, dims: int) -> None:
        self.path, self.rows, self.dims = path, rows, dims

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, wanted: np.ndarray) -> np.ndarray:
        wanted = np.asarray(wanted, np.int64)
        if not len(wanted):
            return np.zeros((0, self.dims), np.float16)
        if not hasattr(os, "pread"):  # Windows: map instead
            matrix = np.memmap(self.path, np.float16, mode="r", shape=(self.rows, self.dims))
            return np.asarray(matrix[wanted])
        width = self.dims * 2
        rows = np.empty((len(wanted), self.dims), np.float16)
        # Each row read straight into the result (no bytes object per row, no join):
        # half the time of pread + join for 600 rows at 1,280 dims.
        into = rows.reshape(-1).view(np.uint8).data
        handle = os.open(self.path, os.O_RDONLY)
        try:
            read = sum(
                os.preadv(handle, [into[n * width : (n + 1) * width]], row * width)
                for n, row in enumerate(wanted.tolist())
            )
        finally:
            os.close(handle)
        if read != len(wanted) * width:
            raise OSError(errno.EIO, f"{self.path} ended before row {int(wanted.max())}")
        return rows


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


class GroupAssigner:
    """Each row's nearest centroid (inner product) among the centroids of the groups
    nearest to it: the centroids are grouped by k-means into about sqrt(lists) groups,
    and a row is compared with the group centres, then with the members of its
    ``_GROUP_PROBES`` nearest groups (at 8,192 lists in 64 groups, 1,088 comparisons
    instead of 8,192). A row may land in a cluster nearly as near as its nearest, which
    the recall measured at build accounts for. ``centroids``: (lists, dims) float32."""

    def __init__(self, centroids: np.ndarray, *, seed: int = 1234) -> None:
        import faiss

        lists, dims = centroids.shape
        count = max(1, min(lists, 2 ** round(math.log2(math.sqrt(lists)))))
        clustering = faiss.Clustering(dims, count)
        clustering.niter = _KMEANS_ITERATIONS
        clustering.seed = seed
        clustering.spherical = True
        clustering.min_points_per_centroid = 1  # no warning on stderr (see train_ivf)
        clustering.max_points_per_centroid = lists
        clustering.train(np.ascontiguousarray(centroids), faiss.IndexFlatIP(dims))
        tops = faiss.vector_to_array(clustering.centroids).reshape(count, dims)
        group = np.argmax(centroids @ tops.T, axis=1)
        # Members stored group after group, so that each group is one slice.
        self.members = np.argsort(group, kind="stable")
        self.centroids = np.ascontiguousarray(centroids[self.members])
        self.bounds = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=count))])
        self.tops = tops

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(n, dims) float32 -> (n,) int64 list numbers."""
        groups = len(self.tops)
        probes = min(_GROUP_PROBES, groups)
        near = np.argpartition(-(x @ self.tops.T), probes - 1, axis=1)[:, :probes]
        rows = np.repeat(np.arange(len(x)), probes)
        flat = near.ravel()
        order = np.argsort(flat, kind="stable")
        starts = np.searchsorted(flat[order], np.arange(groups + 1))
        best = np.full(len(x), -np.inf, np.float32)
        found = np.zeros(len(x), np.int64)
        for group in range(groups):
            asked = rows[order[starts[group] : starts[group + 1]]]
            first, last = self.bounds[group], self.bounds[group + 1]
            if len(asked) == 0 or first == last:
                continue
            scores = x[asked] @ self.centroids[first:last].T
            column = scores.argmax(axis=1)
            score = scores[np.arange(len(asked)), column]
            better = score > best[asked]
            best[asked[better]] = score[better]
            found[asked[better]] = self.members[first + column[better]]
        return found


def _add_rows(
    index: Any, matrix: np.ndarray, start: int, stop: int, *, with_ids: bool = False
) -> None:
    """Add rows [start, stop) of ``matrix``; their ids are their row numbers (FAISS
    numbers added rows from ``ntotal`` unless ``with_ids``). From ``_GROUPED_FROM_LISTS``
    lists on, many rows are assigned through a :class:`GroupAssigner`."""
    import faiss
    from faiss.contrib.ivf_tools import add_preassigned

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(index))
    # A few rows are assigned flat: cheaper than grouping the centroids. FAISS's
    # fast-scan lists cannot take pre-assigned rows (they pack codes in blocks as rows
    # are added), so 4-bit PQ is assigned flat too.
    assign = None
    if (
        ivf.nlist >= _GROUPED_FROM_LISTS
        and stop - start >= _FLAT_ASSIGNMENT_BELOW
        and not isinstance(ivf, faiss.IndexIVFFastScan)
    ):
        assign = GroupAssigner(ivf.quantizer.reconstruct_n(0, ivf.nlist))
    for first in range(start, stop, _CHUNK_ROWS):
        last = min(first + _CHUNK_ROWS, stop)
        chunk = np.ascontiguousarray(matrix[first:last], dtype=np.float32)
        if assign is not None:
            # Named, not a temporary: FAISS reads the ids through a raw pointer.
            ids = np.arange(first, last, dtype=np.int64)
            add_preassigned(ivf, chunk, assign(chunk), ids)
        elif with_ids:
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


def candidates_to_rescore(depth: int, k: int) -> int:
    """How many candidates a search for ``k`` owners re-scores exactly: ``depth`` (the
    setting, scaled for the codes) or 4k for small k, whichever is more; for deep lists
    at most k + ``depth``.

    The 4x margin lets a top 10 survive the codes' rough ranking. A deep list (the
    1,000 candidates late fusion and the feedback methods fuse) needs only a margin at
    its tail: at 1M x 1,280 rows, 4,000 re-scored rows cost 47 ms a query and 1,050 cost
    N ms, with Recall@1000 0.704 and R (it is bounded by the lists probed, not by the
    re-scoring)."""
    return max(depth, min(4 * k, k + depth))


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
    (rows, dims) float16, memory-mapped or read row by row (anything indexed by an array
    of row numbers); ``owners`` (rows,) int64. Returns owners (<= k,)
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
    queries: np.ndarray,
    matrix: np.ndarray,
    k: int,
    *,
    leave_out: np.ndarray | None = None,
    visible: np.ndarray | None = None,
) -> np.ndarray:
    """(m, k) int64 rows of the exact k best rows of ``matrix`` (n, dims) float16 for
    ``queries`` (m, dims) float32, scanned in chunks; ``leave_out`` (m,) rows are skipped
    (each query's own row when measuring with the index's own rows), and so are rows
    whose ``visible`` (n,) bool is False (they come last, if at all)."""
    m = len(queries)
    best_scores = np.full((m, 0), -np.inf, np.float32)
    best_rows = np.zeros((m, 0), np.int64)
    for first in range(0, len(matrix), _CHUNK_ROWS):
        chunk = np.asarray(matrix[first : first + _CHUNK_ROWS], dtype=np.float32)
        scores = queries @ chunk.T
        if visible is not None:
            scores[:, ~visible[first : first + len(chunk)]] = -np.inf
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


def available_memory() -> int | None:
    """Bytes of memory available now without swapping (Linux's MemAvailable: free memory
    and page cache that can be reclaimed), or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
