"""Thumbnails: made once per image and size, kept on disk under the index folder.

An image id names one content for good (ids are never reused for other bytes), so a
thumbnail never goes stale. Files are written to a temporary name and renamed into
place, so two threads (or two servers) making the same thumbnail cannot leave half a
file. Orientation follows the image's EXIF tag (:func:`spyglass.images.decode_image`
applies it). If the cache folder cannot be written (a read-only index), thumbnails are
made on every request instead.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path

from PIL import Image

from spyglass.images import decode_image
from spyglass.server.gate import ImageGate
from spyglass.server.problems import ApiProblem
from spyglass.server.settings import THUMBNAIL_SIZES

log = logging.getLogger("spyglass.server")

JPEG_QUALITY = 84


class ThumbnailCache:
    def __init__(self, gate: ImageGate, folder: Path, *, max_pixels: int) -> None:
        self.gate = gate
        self.folder = folder
        self.max_pixels = max_pixels
        self._writable = True

    def path_for(self, image_id: int, size: int) -> Path:
        # Buckets of 1,000 ids keep folders small enough to list.
        return self.folder / str(size) / str(image_id // 1000) / f"{image_id}.jpg"

    def get(self, image_id: int, size: int) -> tuple[bytes, str]:
        """(JPEG bytes, content hash of the original) for an indexed image."""
        if size not in THUMBNAIL_SIZES:
            allowed = ", ".join(map(str, THUMBNAIL_SIZES))
            raise ApiProblem(422, "invalid-request", f"size must be one of {allowed}")
        record = self.gate.record(image_id)  # 404 for unknown or removed images
        content_hash = self.gate.content_hash(record.id)
        path = self.path_for(record.id, size)
        try:
            return path.read_bytes(), content_hash
        except OSError:
            pass
        data = self.make(record.id, size)
        self._store(path, data)
        return data, content_hash

    def make(self, image_id: int, size: int) -> bytes:
        served = self.gate.read(image_id)
        decoded = decode_image(served.data, max_pixels=self.max_pixels, min_side=size)
        image = decoded.image
        image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        return buffer.getvalue()

    def _store(self, path: Path, data: bytes) -> None:
        if not self._writable:
            return
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
            self._writable = False
            log.warning("thumbnails are not cached: cannot write %s (%s)", self.folder, error)
