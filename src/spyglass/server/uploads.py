"""Uploaded query images: checked, kept in memory for a while, never indexed.

An upload is decoded once on arrival (size limit, pixel limit, bombs and non-images are
refused by :func:`spyglass.images.decode_image`), then held under a random id so that
the page can page through results, draw a region and re-rank without sending the
image again. The oldest uploads are forgotten first; nothing is written to disk.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from spyglass.images import decode_image
from spyglass.search import QUERY_MAX_SIDE
from spyglass.server.problems import ApiProblem
from spyglass.server.process import release_freed_memory

#: After decoding an upload this large, hand freed memory back to the system.
_TRIM_ABOVE_PIXELS = 16_000_000


@dataclass(frozen=True)
class Upload:
    id: str
    data: bytes
    width: int
    height: int
    format: str


class UploadStore:
    """At most ``slots`` uploads and ``max_total_bytes`` bytes, oldest forgotten first."""

    def __init__(
        self, *, slots: int, max_bytes: int, max_pixels: int, max_total_bytes: int | None = None
    ) -> None:
        self.slots = max(1, slots)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.max_total_bytes = max_total_bytes or max(max_bytes * 4, 256 * 1024 * 1024)
        self._items: OrderedDict[str, Upload] = OrderedDict()
        # Decoding is the memory peak of an upload: one per core at a time.
        self._decoding = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
        self._total = 0
        self._lock = threading.Lock()

    def add(self, data: bytes) -> Upload:
        """Check and keep an uploaded image. Raises :class:`ImageRejected` (422) for
        what is not a usable image and :class:`ApiProblem` (413) for what is too big."""
        if len(data) > self.max_bytes:
            raise ApiProblem(
                413,
                "file-too-large",
                f"the upload is {len(data):,} bytes, over the limit of {self.max_bytes:,}",
            )
        with self._decoding:
            decoded = decode_image(
                data, max_pixels=self.max_pixels, min_side=32, max_side=QUERY_MAX_SIDE
            )
        if decoded.width * decoded.height > _TRIM_ABOVE_PIXELS:
            release_freed_memory()
        upload = Upload(
            secrets.token_urlsafe(12), data, decoded.width, decoded.height, decoded.format
        )
        with self._lock:
            self._items[upload.id] = upload
            self._total += len(data)
            while len(self._items) > self.slots or (
                self._total > self.max_total_bytes and len(self._items) > 1
            ):
                _, dropped = self._items.popitem(last=False)
                self._total -= len(dropped.data)
        return upload

    def get(self, upload_id: str) -> Upload:
        with self._lock:
            upload = self._items.get(upload_id)
            if upload is not None:
                self._items.move_to_end(upload_id)
        if upload is None:
            raise ApiProblem(
                404,
                "unknown-upload",
                "that upload is gone (the server forgets old ones): upload it again",
            )
        return upload
