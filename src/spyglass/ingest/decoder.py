"""Ingest, stage 2: bytes -> the encoder's input array, in worker threads or processes.

Threads are the default: Pillow and NumPy release the GIL while they decode, resize and
convert, so threads overlap with the encoder without sending every image's pixels
(600 KB for the bundled model) back through a pipe. On two cores, worker processes
(``IngestSettings.decode_in = "processes"``) took 17-25% more CPU per image and indexed
0.81x as fast (docs/ingest.md); they remain a setting for machines whose cores outnumber
what one GIL keeps busy (not measured here), and need an encoder whose preprocessing a
fresh process can import (:func:`process_preprocess`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from spyglass.encoders.base import Encoder
from spyglass.errors import ImageRejected, IndexProblem
from spyglass.image_meta import HeaderMeta
from spyglass.images import Region, crop_region, decode_image
from spyglass.ingest.reader import ReadFile
from spyglass.settings import IngestSettings

#: One image -> the encoder's input array; a module-level function, so that a worker
#: process can import it by name.
Preprocess = Callable[[Image.Image], np.ndarray]


@dataclass(frozen=True)
class DecodedFile:
    """A file ready for the encoder: ``pixels`` is ``encoder.preprocess``'s output for
    the whole image, ``crops`` the same for each crop window (maybe none)."""

    read: ReadFile
    pixels: np.ndarray
    crops: list[np.ndarray]
    width: int
    height: int
    format: str
    meta: HeaderMeta = field(default_factory=HeaderMeta)


def crop_windows(grid: int) -> list[Region]:
    """``grid`` x ``grid`` windows, each 2/(grid+1) of the width and height, half
    overlapping their neighbours, as (left, top, right, bottom) fractions."""
    if grid <= 0:
        return []
    size, step = 2.0 / (grid + 1), 1.0 / (grid + 1)
    return [
        (col * step, row * step, col * step + size, row * step + size)
        for row in range(grid)
        for col in range(grid)
    ]


def decode_for(
    encoder: Encoder, read: ReadFile, settings: IngestSettings, windows: list[Region]
) -> DecodedFile:
    """Decode and preprocess one file (and its crops). Raises ``ImageRejected``;
    thread-safe."""
    decoded = decode_image(read.data, max_pixels=settings.max_pixels, header=True)
    pixels = encoder.preprocess(decoded.image)
    crops = [encoder.preprocess(crop_region(decoded.image, window)) for window in windows]
    return DecodedFile(
        read, pixels, crops, decoded.width, decoded.height, decoded.format, decoded.meta
    )


def process_preprocess(encoder: Encoder) -> Preprocess | None:
    """The encoder's preprocessing as a function a worker process can import, or None
    when it has none (its ``preprocess`` needs the loaded encoder)."""
    function = getattr(encoder, "preprocess_function", None)
    return function if callable(function) else None


class PendingDecode:
    """One file on its way through a decoder; :meth:`result` waits for it."""

    def __init__(self, read: ReadFile, future: Future[Any], remote: bool) -> None:
        self.read = read
        self.future = future
        self._remote = remote

    def result(self) -> DecodedFile:
        """The decoded file. Raises ``ImageRejected`` when the file is not a usable
        image, ``IndexProblem`` when a worker process died (it cannot tell which file
        killed it)."""
        try:
            outcome = self.future.result()
        except BrokenProcessPool as exc:
            raise IndexProblem(
                "an image decoding process stopped unexpectedly (out of memory?); "
                "run the same command again to go on from the last commit"
            ) from exc
        if not self._remote:
            decoded: DecodedFile = outcome
            return decoded
        if isinstance(outcome, _Rejected):
            raise ImageRejected(outcome.reason, outcome.message)
        pixels, crops, width, height, fmt, meta = outcome
        return DecodedFile(self.read, pixels, crops, width, height, fmt, meta)


class DecodeBatch:
    """Files decoded for one encoder call. With decoder threads, each file's pixels are
    copied into its own row of one (capacity, ...) array by the thread that decoded it,
    so the encoder's input is ready when the last file is: stacking 32 images (19 MB for
    the bundled model) on the encoder's thread cost 7% of the ingest time with the int8
    model on two cores."""

    def __init__(self, decoder: Decoder, capacity: int) -> None:
        self.decoder = decoder
        self.capacity = capacity
        self.items: list[PendingDecode] = []
        self._rows: np.ndarray | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    def add(self, read: ReadFile) -> None:
        self.items.append(self.decoder.submit(read, self, len(self.items)))

    def into_row(self, decoded: DecodedFile, row: int) -> DecodedFile:
        """Copy ``decoded.pixels`` into row ``row``; the returned file's pixels are that
        row. Rows are allocated on the first call (the shape is the encoder's)."""
        with self._lock:
            if self._rows is None:
                shape = (self.capacity, *decoded.pixels.shape)
                self._rows = np.empty(shape, decoded.pixels.dtype)
            rows = self._rows
        if rows.shape[1:] != decoded.pixels.shape:
            return decoded  # not the encoder's fixed shape: stacked later, as given
        rows[row] = decoded.pixels
        return replace(decoded, pixels=rows[row])

    def pixels(self, ready: list[tuple[int, DecodedFile]]) -> np.ndarray:
        """The encoder's input for the (row, file) pairs that decoded, in order."""
        rows = self._rows
        if rows is not None and all(d.pixels.base is rows for _, d in ready):
            if [n for n, _ in ready] == list(range(len(ready))):
                return rows[: len(ready)]
            return rows[[n for n, _ in ready]]
        return np.stack([d.pixels for _, d in ready])


class Decoder:
    """Decodes :class:`ReadFile` s off the calling thread: on ``threads`` (shared with the
    reader) or on worker processes of its own, started on first use. :meth:`close`
    stops it; files not started by then are dropped."""

    def __init__(
        self,
        encoder: Encoder,
        settings: IngestSettings,
        windows: list[Region],
        threads: Executor,
    ) -> None:
        self.encoder = encoder
        self.settings = settings
        self.windows = windows
        self._threads = threads
        self._preprocess = (
            process_preprocess(encoder) if settings.decode_in == "processes" else None
        )
        self._processes: ProcessPoolExecutor | None = None

    @property
    def uses_processes(self) -> bool:
        """True when files go to worker processes (asked for, and the encoder allows)."""
        return self._preprocess is not None

    def batch(self) -> DecodeBatch:
        """A new, empty batch of ``settings.batch_size`` files."""
        return DecodeBatch(self, self.settings.batch_size)

    def submit(
        self, read: ReadFile, batch: DecodeBatch | None = None, row: int = 0
    ) -> PendingDecode:
        """Start decoding ``read``; on threads, into row ``row`` of ``batch``."""
        if self._preprocess is None:
            future = self._threads.submit(self._decode_here, read, batch, row)
            return PendingDecode(read, future, remote=False)
        remote = self._pool().submit(
            _decode_in_worker,
            self._preprocess,
            read.data,
            self.settings.max_pixels,
            self.windows,
        )
        return PendingDecode(read, remote, remote=True)

    def _decode_here(self, read: ReadFile, batch: DecodeBatch | None, row: int) -> DecodedFile:
        decoded = decode_for(self.encoder, read, self.settings, self.windows)
        return decoded if batch is None else batch.into_row(decoded, row)

    def _pool(self) -> ProcessPoolExecutor:
        if self._processes is None:
            # "spawn": forking a process that runs onnxruntime's thread pool can copy a
            # held lock into the child, which then waits on it forever.
            self._processes = ProcessPoolExecutor(
                max(1, self.settings.decode_workers),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_started,
                initargs=(os.getpid(),),
            )
        return self._processes

    def close(self) -> None:
        """Stop the worker processes, if any: files not started are dropped, the ones
        being decoded finish first (a few milliseconds each)."""
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=True)
            self._processes = None


@dataclass(frozen=True)
class _Rejected:
    """``ImageRejected`` as a worker returns it: its own pickling loses ``reason``."""

    reason: str
    message: str


def _decode_in_worker(
    preprocess: Preprocess, data: bytes, max_pixels: int, windows: list[Region]
) -> tuple[np.ndarray, list[np.ndarray], int, int, str, HeaderMeta] | _Rejected:
    """:func:`decode_for` in a worker process, with the file's bytes sent over."""
    try:
        decoded = decode_image(data, max_pixels=max_pixels, header=True)
    except ImageRejected as rejected:
        return _Rejected(rejected.reason, str(rejected))
    pixels = preprocess(decoded.image)
    crops = [preprocess(crop_region(decoded.image, window)) for window in windows]
    return pixels, crops, decoded.width, decoded.height, decoded.format, decoded.meta


def _worker_started(parent: int) -> None:
    """Runs first in each worker process.

    Ctrl-C reaches every process of the terminal's group: the parent alone answers it
    (one line, exit 130) and stops the workers; a worker would print a traceback. A
    parent killed outright (SIGKILL) cannot stop them, so each worker also watches for
    its parent to go and then leaves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_leave_with, args=(parent,), daemon=True).start()


def _leave_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
