"""Thumbnails: made once per image content and size, kept on disk in the server's cache
folder (never in the index folder: see :mod:`spyglass.server.caches`).

Files are named by the content hash of the original, so a thumbnail never goes stale,
even if a rebuilt index gives an id to other bytes. They are written to a temporary name
and renamed into place, so two threads (or two servers) making the same thumbnail cannot
leave half a file. Orientation follows the image's EXIF tag
(:func:`spyglass.images.decode_image` applies it). Without a cache folder, or if it
cannot be written, the most recent thumbnails are kept in memory instead (up to
``MEMORY_BYTES``) and the rest are made again on request.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from spyglass.images import decode_image
from spyglass.server.gate import ImageGate
from spyglass.server.problems import ApiProblem
from spyglass.server.settings import THUMBNAIL_SIZES

log = logging.getLogger("spyglass.server")

JPEG_QUALITY = 84
#: Seconds the disk cache rests after a failed write before it is tried again.
RETRY_SECONDS = 60.0
#: Thumbnails kept in memory when they cannot be kept on disk (about 6,000 of 128 px).
MEMORY_BYTES = 64 * 1024 * 1024


class ThumbnailCache:
    def __init__(self, gate: ImageGate, folder: Path | None, *, max_pixels: int) -> None:
        self.gate = gate
        self.folder = folder
        self.max_pixels = max_pixels
        #: After a failed write the disk is left alone this long, then tried again: a
        #: full disk or a folder removed under the server is usually fixed, and one
        #: failure must not turn the cache off for the life of the process.
        self.retry_seconds = RETRY_SECONDS
        self._disk_paused_until = 0.0 if folder is not None else float("inf")
        self._memory: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._memory_bytes = 0
        self._memory_lock = threading.Lock()

    def path_for(self, content_hash: str, size: int) -> Path | None:
        """Where the thumbnail of a content is kept on disk (None: no cache folder)."""
        if self.folder is None:
            return None
        # 256 buckets by the first two hex digits keep folders small enough to list.
        return self.folder / str(size) / content_hash[:2] / f"{content_hash}.jpg"

    def get(self, image_id: int, size: int) -> tuple[bytes, str]:
        """(JPEG bytes, content hash of the original) for an indexed image."""
        if size not in THUMBNAIL_SIZES:
            allowed = ", ".join(map(str, THUMBNAIL_SIZES))
            raise ApiProblem(422, "invalid-request", f"size must be one of {allowed}")
        record = self.gate.record(image_id)  # 404 for unknown or removed images
        content_hash = self.gate.content_hash(record.id)
        path = self.path_for(content_hash, size)
        if path is not None:
            try:
                return path.read_bytes(), content_hash
            except OSError:
                pass
        with self._memory_lock:
            kept = self._memory.get((content_hash, size))
            if kept is not None:
                self._memory.move_to_end((content_hash, size))
                return kept, content_hash
        data = self.make(record.id, size)
        if path is None or not self._store(path, data):
            self._remember((content_hash, size), data)
        return data, content_hash

    def make(self, image_id: int, size: int) -> bytes:
        served = self.gate.read(image_id)
        decoded = decode_image(served.data, max_pixels=self.max_pixels, min_side=size)
        image = decoded.image
        image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        return buffer.getvalue()

    def in_memory(self, content_hash: str, size: int) -> bytes | None:
        """The thumbnail kept in memory for a content and size, if any."""
        with self._memory_lock:
            return self._memory.get((content_hash, size))

    def _remember(self, key: tuple[str, int], data: bytes) -> None:
        with self._memory_lock:
            if key in self._memory:
                return
            self._memory[key] = data
            self._memory_bytes += len(data)
            while self._memory_bytes > MEMORY_BYTES and self._memory:
                _, dropped = self._memory.popitem(last=False)
                self._memory_bytes -= len(dropped)

    def _store(self, path: Path, data: bytes) -> bool:
        """Write a thumbnail to disk; False if the cache folder cannot be written."""
        if time.monotonic() < self._disk_paused_until:
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            self._disk_paused_until = time.monotonic() + self.retry_seconds
            log.warning(
                "thumbnails are kept in memory for %.0f s: cannot write %s (%s)",
                self.retry_seconds,
                self.folder,
                error,
            )
            return False
        return True
