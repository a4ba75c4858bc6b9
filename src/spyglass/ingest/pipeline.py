"""Ingest: bring an index up to date with folders on disk, incrementally and resumably.

The pipeline streams: reader threads read and hash files ahead of time, decoder threads
(or worker processes, ``IngestSettings.decode_in``) turn new contents into encoder input,
the encoder embeds batches on the calling thread while the next batch is being decoded,
and the writer commits groups. Files in flight are bounded (a few batches), so memory
stays flat whatever the folder's size. Work is decided per file by comparing with the
catalogue:

* same path, same size and modification time: nothing to do;
* content hash already indexed (a rename, a copy, a touched file): link, no embedding;
* new content: decode, embed, commit;
* a path indexed before but gone from disk: removed from the results.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from spyglass.encoders.base import Encoder
from spyglass.errors import ImageRejected, IndexProblem, InvalidQuery
from spyglass.images import Region
from spyglass.ingest.decoder import DecodeBatch, DecodedFile, Decoder, crop_windows
from spyglass.ingest.header_backfill import backfill_header_meta
from spyglass.ingest.reader import FoundFile, normalise_root, read_and_hash, walk
from spyglass.ingest.writer import GroupWriter
from spyglass.settings import IngestSettings
from spyglass.store.catalogue import FileState, NewImage, SkippedFile
from spyglass.store.index import Index, SpaceRows, crop_space


@dataclass(frozen=True)
class IngestProgress:
    """Where an ingest run stands; sent to the progress callback."""

    stage: str  # "scanning", "indexing" or "done"
    done: int
    total: int
    embedded: int
    linked: int
    skipped: int


@dataclass
class IngestReport:
    """What one ingest run did."""

    #: New contents embedded.
    added: int = 0
    #: New paths whose content was indexed already (renames, copies): not embedded again.
    linked: int = 0
    #: Known paths whose file changed (re-embedded, or re-linked if the content is known).
    changed: int = 0
    #: Indexed paths that are gone from disk.
    removed: int = 0
    #: Paths found unchanged.
    unchanged: int = 0
    #: Files skipped in this run, with reasons (also kept in the index).
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0
    #: Images sent through the encoder in this run.
    embedded: int = 0

    @property
    def embed_rate(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[IngestProgress], None]


class Ingest:
    """Indexes folders into an :class:`Index` opened for writing, with an encoder."""

    def __init__(
        self,
        index: Index,
        encoder: Encoder,
        settings: IngestSettings | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.index = index
        self.encoder = encoder
        self.settings = settings or IngestSettings()
        self.progress = progress

    def run(self, paths: Sequence[str]) -> IngestReport:
        """Bring the index up to date with ``paths`` (folders or files)."""
        started = time.perf_counter()
        roots = [normalise_root(p) for p in paths]
        missing = [p for p, r in zip(paths, roots, strict=True) if not _exists(r)]
        if missing:
            raise InvalidQuery(f"not found: {', '.join(map(str, missing))}")
        report = IngestReport()
        self._notify("scanning", 0, 0, report)
        catalogue = self.index.catalogue
        self.index.add_roots(roots)

        found: dict[str, FoundFile] = {}
        skipped_in_walk: list[SkippedFile] = []
        for item in walk(roots, exclude=[str(self.index.folder)]):
            if isinstance(item, FoundFile):
                found[item.path] = item
            else:
                skipped_in_walk.append(item)

        known: dict[str, FileState] = {}
        previously_skipped: dict[str, tuple[int | None, int | None]] = {}
        for root in roots:
            known.update(catalogue.files_under(root))
            previously_skipped.update(catalogue.skipped_under(root))
            single = catalogue.file(root)
            if single is not None:
                known[root] = single

        gone = [path for path in known if path not in found]
        if gone:
            report.removed = self.index.remove_files(gone)
        walk_skips = {s.path for s in skipped_in_walk}
        stale_skips = [p for p in previously_skipped if p not in found and p not in walk_skips]
        todo: list[FoundFile] = []
        for file in found.values():
            state = known.get(file.path)
            if state is not None and (state.size, state.mtime_ns) == (file.size, file.mtime_ns):
                report.unchanged += 1
            elif previously_skipped.get(file.path) == (file.size, file.mtime_ns):
                pass  # failed before and has not changed since: do not try again
            else:
                todo.append(file)

        writer = GroupWriter(self.index)
        for skip in skipped_in_walk:
            writer.add_skipped(skip, None, None)
        report.skipped.extend(skipped_in_walk)
        if stale_skips:
            with catalogue.transaction():
                catalogue.forget_skipped(stale_skips)

        windows = crop_windows(self._crop_grid())
        self._process(todo, known, writer, report, windows)
        writer.commit()
        if catalogue.has_table("image_meta"):
            # Images indexed before headers were kept; their filter fields change too.
            backfill_header_meta(catalogue, self.index.rewrite_filter_fields)
        report.seconds = time.perf_counter() - started
        self._notify("done", len(todo), len(todo), report)
        return report

    def _process(
        self,
        todo: list[FoundFile],
        known: dict[str, FileState],
        writer: GroupWriter,
        report: IngestReport,
        windows: list[Region],
    ) -> None:
        settings = self.settings
        outcomes = Outcomes(self.index, writer, report, known)
        done = 0
        total = len(todo)
        self._notify("indexing", 0, total, report)
        # Full batches waiting for the encoder, oldest first, then the one being filled:
        # while the encoder embeds the oldest, the decoders work on those behind it.
        waiting: deque[DecodeBatch] = deque()
        batch: DecodeBatch | None = None
        #: Content hashes in ``waiting`` and ``batch`` (each once: a copy met in flight
        #: flushes them first).
        in_flight: set[str] = set()

        def embed(pending: DecodeBatch) -> None:
            decoded: list[tuple[int, DecodedFile]] = []
            for row, item in enumerate(pending.items):
                in_flight.discard(item.read.content_hash)
                try:
                    decoded.append((row, item.result()))
                except ImageRejected as error:
                    outcomes.skip(item.read.file, error)
            ready = [d for _, d in decoded]
            if ready:
                vectors = embed_decoded(
                    self.encoder, pending.pixels(decoded), ready, settings.batch_size
                )
                outcomes.embedded([(d.read.file, new_image(d)) for d in ready], vectors)

        def flush() -> None:
            nonlocal batch
            while waiting:
                embed(waiting.popleft())
            if batch is not None:
                embed(batch)
                batch = None

        with ThreadPoolExecutor(max(1, settings.decode_workers)) as pool:
            decoder = Decoder(self.encoder, settings, windows, pool)
            try:
                reads = _ordered_lookahead(
                    pool,
                    lambda f: read_and_hash(f, settings.max_file_bytes),
                    todo,
                    lookahead=settings.batch_size * (2 + max(0, settings.decode_ahead_batches)),
                )
                for file, outcome in reads:
                    done += 1
                    if isinstance(outcome, ImageRejected):
                        outcomes.skip(file, outcome)
                        continue
                    if isinstance(outcome, BaseException):
                        raise outcome
                    read = outcome
                    if outcomes.link_if_indexed(file, read.content_hash):
                        pass
                    elif read.content_hash in in_flight:
                        # A copy of a file being decoded: embed it once, now, and link this
                        # one to its position once it is added.
                        flush()
                        outcomes.link_to_twin(file, read.content_hash)
                    else:
                        if batch is None:
                            batch = decoder.batch()
                        batch.add(read)
                        in_flight.add(read.content_hash)
                        if len(batch) >= settings.batch_size:
                            waiting.append(batch)
                            batch = None
                            while len(waiting) > max(0, settings.decode_ahead_batches):
                                embed(waiting.popleft())
                    if len(writer) >= settings.commit_every:
                        # Files still decoding go to the next group: no need to wait.
                        writer.commit()
                    self._notify("indexing", done, total, report)
                flush()
            finally:
                # Stopped early (Ctrl-C, an error): drop what was not started.
                for stopped in [*waiting, *([batch] if batch else [])]:
                    for item in stopped.items:
                        item.future.cancel()
                decoder.close()
                pool.shutdown(wait=True, cancel_futures=True)
        self._notify("indexing", done, total, report)

    def _crop_grid(self) -> int:
        """The index's crop grid: recorded at its first run, the same ever after."""
        catalogue = self.index.catalogue
        recorded = catalogue.meta("crop_grid")
        wanted = self.settings.crop_grid
        if recorded is None:
            grid = wanted or 0
            if grid and catalogue.counts()["embedded"]:
                raise IndexProblem(
                    f"{self.index.folder} already holds images embedded without crops; "
                    "use a new --index to add --crops"
                )
            with catalogue.transaction():
                catalogue.set_meta("crop_grid", str(grid))
        else:
            grid = int(recorded)
            if wanted is not None and wanted != grid:
                raise IndexProblem(
                    f"{self.index.folder} was built with --crops {grid}; "
                    f"use --crops {grid} (or leave it out), or a new --index"
                )
        if grid:
            for space, dims in self.encoder.info.spaces.items():
                self.index.add_space(crop_space(space), dims)
        return grid

    def _notify(self, stage: str, done: int, total: int, report: IngestReport) -> None:
        if self.progress is not None:
            self.progress(
                IngestProgress(
                    stage=stage,
                    done=done,
                    total=total,
                    embedded=report.embedded,
                    linked=report.linked,
                    skipped=len(report.skipped),
                )
            )


class Outcomes:
    """What each file's outcome adds to the commit group and the report: one place, so
    that every runner (this pipeline, :mod:`spyglass.ingest.ray_runner`) decides and
    counts alike. ``known`` is what the catalogue held for the run's paths."""

    def __init__(
        self,
        index: Index,
        writer: GroupWriter,
        report: IngestReport,
        known: dict[str, FileState],
    ) -> None:
        self.catalogue = index.catalogue
        self.writer = writer
        self.report = report
        self.known = known

    def skip(self, file: FoundFile, error: ImageRejected) -> None:
        entry = SkippedFile(file.path, error.reason, str(error))
        self.writer.add_skipped(
            entry, file.size, file.mtime_ns, was_indexed=file.path in self.known
        )
        self.report.skipped.append(entry)

    def link_if_indexed(self, file: FoundFile, content_hash: str) -> bool:
        """Link ``file`` to its content when that is committed already or waits in the
        group being gathered (a rename, a copy, a touched file): True then, False when
        the content must be embedded."""
        existing = self.catalogue.images_by_hash([content_hash]).get(content_hash)
        if existing is not None:
            self.writer.add_linked(FileState(file.path, existing, file.size, file.mtime_ns))
            previous = self.known.get(file.path)
            if previous is None:
                self.report.linked += 1
            elif previous.image_id != existing:
                self.report.changed += 1
            else:
                self.report.unchanged += 1  # touched, same bytes
            return True
        pending = self.writer.pending_position(content_hash)
        if pending is not None:
            self.writer.add_copy_of_pending(file.path, file.size, file.mtime_ns, pending)
            self.report.linked += 1
            return True
        return False

    def link_to_twin(self, file: FoundFile, content_hash: str) -> None:
        """``file`` has the bytes of a file that was in flight when it was read, and whose
        outcome is in the group now: link it, or skip it as its twin was skipped."""
        position = self.writer.pending_position(content_hash)
        if position is not None:
            self.writer.add_copy_of_pending(file.path, file.size, file.mtime_ns, position)
            self.report.linked += 1
        else:  # its twin was refused; this copy would be too
            self.skip(file, ImageRejected("duplicate-of-skipped", "same bytes as a skipped file"))

    def embedded(
        self, ready: Sequence[tuple[FoundFile, NewImage]], vectors: Mapping[str, SpaceRows]
    ) -> None:
        """Add embedded files: ``vectors`` holds their rows in the order of ``ready``."""
        self.writer.add_embedded(
            [image for _, image in ready],
            [(file.path, file.size, file.mtime_ns) for file, _ in ready],
            vectors,
        )
        self.report.embedded += len(ready)
        for file, _ in ready:
            if file.path in self.known:
                self.report.changed += 1
            else:
                self.report.added += 1


def new_image(decoded: DecodedFile) -> NewImage:
    """The catalogue's record of a decoded file's content."""
    return NewImage(
        decoded.read.content_hash, decoded.width, decoded.height, decoded.format, decoded.meta
    )


def embed_decoded(
    encoder: Encoder, pixels: np.ndarray, ready: Sequence[DecodedFile], batch_size: int
) -> dict[str, SpaceRows]:
    """Vectors of decoded files: ``pixels`` is their stacked encoder input (n, ...) in
    order. Returns {space: (n, dims) float32} and, when the files carry crops,
    {crop space: (positions (m,) int, rows (m, dims) float32)}, crops embedded
    ``batch_size`` at a time."""
    vectors: dict[str, SpaceRows] = dict(encoder.embed_pixels(pixels))
    per_image = len(ready[0].crops) if ready else 0
    if per_image:
        crops = np.stack([c for d in ready for c in d.crops])
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(crops), batch_size):
            for space, part in encoder.embed_pixels(crops[start : start + batch_size]).items():
                parts.setdefault(space, []).append(part)
        positions = np.repeat(np.arange(len(ready)), per_image)
        for space, pieces in parts.items():
            vectors[crop_space(space)] = (positions, np.concatenate(pieces))
    return vectors


T = TypeVar("T")
R = TypeVar("R")


def _ordered_lookahead(
    pool: ThreadPoolExecutor, function: Callable[[T], R], items: Iterable[T], lookahead: int
) -> Iterator[tuple[T, R | BaseException]]:
    """Like ``pool.map`` but with at most ``lookahead`` tasks in flight, and errors
    returned in place of results instead of ending the iteration.

    Only the task's own errors are caught, never what is thrown in at the ``yield``
    (``GeneratorExit`` when the caller stops early, e.g. on Ctrl-C): catching those made
    Python print "generator ignored GeneratorExit". Tasks not yet started are cancelled
    when the caller stops."""
    queue: deque[tuple[T, Future[R]]] = deque()
    iterator = iter(items)
    try:
        for item in iterator:
            queue.append((item, pool.submit(function, item)))
            if len(queue) >= lookahead:
                break
        while queue:
            item, future = queue.popleft()
            try:
                outcome: R | BaseException = future.result()
            except Exception as error:  # returned, not raised: the caller decides
                outcome = error
            yield item, outcome
            for next_item in iterator:
                queue.append((next_item, pool.submit(function, next_item)))
                break
    finally:
        for _, pending in queue:
            pending.cancel()


def _exists(path: str) -> bool:
    import os

    return os.path.lexists(path)
