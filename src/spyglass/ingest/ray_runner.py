"""Ingest on a Ray cluster: ``spyglass index PATH... --ray ADDRESS`` (or ``local[N]``).

The driver (the process that runs :class:`RayIngest`) does what the local pipeline
does, through the same code: it walks the folders, reads and hashes each file, asks the
catalogue what is new (renames and copies are linked, never embedded again), and is the
only writer of the index. Only decoding and embedding move: batches of new files (their
bytes, so the workers need no shared file system) go to Ray actors, one per worker,
each of which builds the encoder from the index's model spec once (encoders are never
pickled) and sends back the vectors. The driver commits results as they arrive, in
whatever order the workers finish, through the same commit groups as the local
pipeline, so a crash of the driver loses at most the group being gathered and a re-run
goes on from the last commit.

A worker that dies (killed, out of memory, its machine gone) loses only the batches it
held: the driver sends them to another worker (starting a replacement when the cluster
has room) and the index ends complete, each file once. A batch that has lost its worker
``RaySettings.max_attempts`` times stops the run with an error, rather than killing
worker after worker (a file that crashes the decoder would).

Workers take one GPU each when Ray reports GPUs, else one CPU each (with one inference
thread, so that N workers on N cores do not fight over them). Joining or starting the
cluster is :mod:`spyglass.ingest.ray_cluster`'s part.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np

from spyglass.encoders import load_encoder
from spyglass.encoders.base import Encoder
from spyglass.errors import ImageRejected, IndexProblem, ModelError, SpyglassError
from spyglass.image_meta import HeaderMeta
from spyglass.images import Region
from spyglass.ingest.decoder import DecodedFile, decode_for
from spyglass.ingest.pipeline import (
    Ingest,
    IngestReport,
    Outcomes,
    ProgressCallback,
    _ordered_lookahead,
    embed_decoded,
)
from spyglass.ingest.ray_cluster import RayCluster, first_line
from spyglass.ingest.reader import FoundFile, ReadFile, read_and_hash
from spyglass.ingest.writer import GroupWriter
from spyglass.settings import IngestSettings, RuntimeSettings
from spyglass.store.catalogue import FileState, NewImage
from spyglass.store.index import Index, SpaceRows

#: A line of Ray's report on a dead actor that names an exception.
_ERROR_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception): ")


# -- the worker ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """A file the worker could not use (``ImageRejected``'s own pickling loses
    ``reason``)."""

    reason: str
    message: str


@dataclass(frozen=True)
class EmbeddedBatch:
    """A worker's answer for one batch: per file, in order, its (width, height, format,
    header metadata) or why it was rejected; ``vectors`` holds the rows of the files that
    decoded, in order (as :func:`~spyglass.ingest.pipeline.embed_decoded` gives them)."""

    files: list[tuple[int, int, str, HeaderMeta] | Rejected]
    vectors: dict[str, SpaceRows]


class EmbeddingWorker:
    """One Ray worker (an actor): builds the encoder from its spec once, then decodes
    and embeds the batches sent to it. Two batches run at once (``max_concurrency=2``):
    one is decoded on threads while the other is in the model."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        runtime: RuntimeSettings,
        settings: IngestSettings,
        windows: list[Region],
    ) -> None:
        self.settings = settings
        self.windows = windows
        self.threads = ThreadPoolExecutor(max(1, settings.decode_workers))
        # Kept for ready() to raise: an actor whose constructor raises dies, and Ray's
        # report of that death keeps only the error's text.
        self.failure: Exception | None = None
        try:
            self.encoder = load_encoder(spec, runtime)
        except Exception as error:
            self.failure = error

    def ready(self) -> int:
        """The worker's process id, once its encoder is loaded; raises what stopped it
        from loading."""
        if self.failure is not None:
            raise self.failure
        return os.getpid()

    def embed(self, reads: list[ReadFile]) -> EmbeddedBatch:
        if self.failure is not None:  # a replacement worker, not waited for
            raise self.failure
        decoded = list(self.threads.map(self._decode, reads))
        ready = [d for d in decoded if isinstance(d, DecodedFile)]
        vectors: dict[str, SpaceRows] = {}
        if ready:
            pixels = np.stack([d.pixels for d in ready])
            vectors = embed_decoded(self.encoder, pixels, ready, self.settings.batch_size)
        return EmbeddedBatch(
            [
                (d.width, d.height, d.format, d.meta) if isinstance(d, DecodedFile) else d
                for d in decoded
            ],
            vectors,
        )

    def _decode(self, read: ReadFile) -> DecodedFile | Rejected:
        try:
            return decode_for(self.encoder, read, self.settings, self.windows)
        except ImageRejected as rejected:
            return Rejected(rejected.reason, str(rejected))


# -- the driver ------------------------------------------------------------------------


@dataclass
class Batch:
    """New files sent to the workers together; their bytes wait in Ray's object store
    (``payload``) until the batch is done, so that a lost batch can be sent again."""

    files: list[tuple[FoundFile, str]]  # (file, content hash), in order
    payload: Any
    attempts: int = 0


@dataclass(eq=False)  # one per actor: compared by identity
class _Worker:
    handle: Any
    pid: int = 0
    in_flight: int = 0


@dataclass
class WorkerPool:
    """The actors of one run and the batches they hold."""

    ray: ModuleType
    cluster: RayCluster
    spec: Mapping[str, Any]
    settings: IngestSettings
    windows: list[Region]
    workers: list[_Worker] = field(default_factory=list)
    #: Ray's reference of each answer awaited -> (the batch, the worker holding it).
    pending: dict[Any, tuple[Batch, _Worker]] = field(default_factory=dict)
    #: Batches sent again because their worker died.
    resent: int = 0

    def start(self) -> None:
        """Start the workers and wait until each has loaded its encoder."""
        plan = self.cluster.worker_plan()
        self._actor_class = self.ray.remote(
            num_cpus=plan.cpus, num_gpus=plan.gpus, max_concurrency=2
        )(EmbeddingWorker)
        runtime = self.cluster.runtime
        if not plan.gpus and runtime.threads is None:
            runtime = replace(runtime, threads=plan.cpus)
        self._runtime = runtime
        self.workers = [self._new_worker() for _ in range(plan.count)]
        try:
            pids = self.ray.get([w.handle.ready.remote() for w in self.workers])
        except self.ray.exceptions.RayError as error:
            raise _worker_error(error, "a Ray worker could not start") from error
        for worker, pid in zip(self.workers, pids, strict=True):
            worker.pid = pid

    def _new_worker(self) -> _Worker:
        return _Worker(
            self._actor_class.remote(dict(self.spec), self._runtime, self.settings, self.windows)
        )

    @property
    def capacity(self) -> int:
        """Batches in flight at most: a worker's own plus those queued behind it."""
        return len(self.workers) * (1 + max(0, self.cluster.settings.queued_per_worker))

    def send(self, batch: Batch) -> None:
        if not self.workers:
            raise IndexProblem(
                "every Ray worker died and the cluster has no room for new ones; run the "
                "same command again to go on from the last commit"
            )
        worker = min(self.workers, key=lambda w: w.in_flight)
        worker.in_flight += 1
        batch.attempts += 1
        self.pending[worker.handle.embed.remote(batch.payload)] = (batch, worker)

    def finished(self, wait: bool) -> Iterator[tuple[Batch, EmbeddedBatch]]:
        """Answers that have arrived (with ``wait``: at least one, if any is awaited).
        A batch whose worker died is sent again, to another worker."""
        if not self.pending:
            return
        ready, _ = self.ray.wait(
            list(self.pending),
            num_returns=1 if wait else len(self.pending),
            timeout=None if wait else 0,
        )
        for reference in ready:
            batch, worker = self.pending.pop(reference)
            worker.in_flight -= 1
            try:
                answer: EmbeddedBatch = self.ray.get(reference)
            except self.ray.exceptions.RayActorError as error:
                self._lost(batch, worker, error)
                continue
            except self.ray.exceptions.RayError as error:
                raise _worker_error(error, "a Ray worker failed") from error
            yield batch, answer

    def _lost(self, batch: Batch, worker: _Worker, error: Exception) -> None:
        """``worker`` died holding ``batch``: replace the worker (once), send the batch
        again."""
        if batch.attempts >= self.cluster.settings.max_attempts:
            paths = ", ".join(file.path for file, _ in batch.files[:3])
            times = "once" if batch.attempts == 1 else f"{batch.attempts} times"
            raise IndexProblem(
                f"the Ray worker holding a batch died, {times} (one of its files may crash "
                f"the decoder: {paths}, ...); what was committed is kept: "
                f"{first_line(error)}"
            ) from error
        if worker in self.workers:
            self.workers.remove(worker)
            if self._has_room():
                self.workers.append(self._new_worker())
        self.resent += 1
        self.send(batch)

    def _has_room(self) -> bool:
        """Whether the cluster can place one more worker now (the dead one's share may
        be free again; a lost machine's is not)."""
        available = self.ray.available_resources()
        plan_gpus = bool(self.ray.cluster_resources().get("GPU", 0))
        if plan_gpus:
            return bool(available.get("GPU", 0) >= 1)
        return bool(available.get("CPU", 0) >= 1)

    def busy_pids(self) -> list[int]:
        """Process ids of the workers holding batches, busiest first."""
        busy = sorted((w for w in self.workers if w.in_flight), key=lambda w: (-w.in_flight, w.pid))
        return [w.pid for w in busy]

    def close(self) -> None:
        """Stop the workers (answers still awaited are dropped)."""
        for worker in self.workers:
            self.ray.kill(worker.handle)
        self.workers, self.pending = [], {}


class RayIngest(Ingest):
    """:class:`Ingest` with decoding and embedding done by a Ray cluster's workers.

    ``cluster`` must be connected. Scanning, the catalogue's decisions, skipped files,
    progress and commits are the local pipeline's own (:class:`Outcomes`)."""

    def __init__(
        self,
        index: Index,
        encoder: Encoder,
        cluster: RayCluster,
        settings: IngestSettings | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__(index, encoder, settings, progress)
        self.cluster = cluster
        self.pool: WorkerPool | None = None
        #: Seconds the last run waited for its workers to load the model (part of its
        #: ``IngestReport.seconds``).
        self.startup_seconds = 0.0

    def busy_worker_pids(self) -> list[int]:
        """Process ids of the workers holding batches now, busiest first (empty before
        the workers start and after the run)."""
        return self.pool.busy_pids() if self.pool is not None else []

    @property
    def resent_batches(self) -> int:
        """Batches sent again in the last run because their worker died."""
        return self.pool.resent if self.pool is not None else 0

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
        total = len(todo)
        self._notify("indexing", 0, total, report)
        if not todo:
            return
        spec = self.encoder.info.spec
        if not spec:
            raise ModelError(
                f"model {self.encoder.info.name!r} records no spec to load it from, so Ray "
                "workers cannot build it; index without --ray"
            )
        ray = self.cluster.ray
        pool = WorkerPool(ray, self.cluster, spec, settings, windows)
        self.pool = pool
        #: Content hash of each file in a batch in flight -> files read meanwhile with
        #: the same bytes (linked to it once its batch is recorded).
        twins: dict[str, list[FoundFile]] = {}

        def record(batch: Batch, answer: EmbeddedBatch) -> None:
            ready: list[tuple[FoundFile, NewImage]] = []
            for (file, content_hash), outcome in zip(batch.files, answer.files, strict=True):
                if isinstance(outcome, Rejected):
                    outcomes.skip(file, ImageRejected(outcome.reason, outcome.message))
                else:
                    ready.append((file, NewImage(content_hash, *outcome)))
            if ready:
                outcomes.embedded(ready, answer.vectors)
            for _, content_hash in batch.files:
                for twin in twins.pop(content_hash, []):
                    outcomes.link_to_twin(twin, content_hash)
            if len(writer) >= settings.commit_every:
                writer.commit()

        def send(reads: list[ReadFile]) -> None:
            pool.send(Batch([(r.file, r.content_hash) for r in reads], ray.put(reads)))
            while len(pool.pending) >= pool.capacity:
                for done_batch, answer in pool.finished(wait=True):
                    record(done_batch, answer)

        done = 0
        filling: list[ReadFile] = []
        with ThreadPoolExecutor(max(1, settings.decode_workers)) as threads:
            try:
                started = time.perf_counter()
                pool.start()
                self.startup_seconds = time.perf_counter() - started
                reads = _ordered_lookahead(
                    threads,
                    lambda f: read_and_hash(f, settings.max_file_bytes),
                    todo,
                    lookahead=settings.batch_size * 2,
                )
                for file, outcome in reads:
                    done += 1
                    if isinstance(outcome, ImageRejected):
                        outcomes.skip(file, outcome)
                    elif isinstance(outcome, BaseException):
                        raise outcome
                    elif outcomes.link_if_indexed(file, outcome.content_hash):
                        pass
                    elif outcome.content_hash in twins:
                        twins[outcome.content_hash].append(file)
                    else:
                        twins[outcome.content_hash] = []
                        filling.append(outcome)
                        if len(filling) >= settings.batch_size:
                            send(filling)
                            filling = []
                    for done_batch, answer in pool.finished(wait=False):
                        record(done_batch, answer)
                    if len(writer) >= settings.commit_every:
                        writer.commit()
                    self._notify("indexing", done, total, report)
                if filling:
                    send(filling)
                while pool.pending:
                    for done_batch, answer in pool.finished(wait=True):
                        record(done_batch, answer)
                    self._notify("indexing", done, total, report)
            finally:
                pool.close()
        self._notify("indexing", done, total, report)


def _worker_error(error: Exception, what: str) -> SpyglassError:
    """A worker's failure as the engine's error: the worker's own typed error when it
    raised one (a model that cannot load), else one line naming what happened."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, SpyglassError):
        return cause
    if isinstance(cause, Exception):
        return IndexProblem(f"{what}: {type(cause).__name__}: {first_line(cause)}")
    # Ray's own report (an actor that died): its last "SomethingError: ..." line says why.
    lines = [line.strip() for line in str(error).splitlines()]
    reason = next((line for line in reversed(lines) if _ERROR_LINE.match(line)), None)
    return IndexProblem(f"{what}: {reason or first_line(error)}")
