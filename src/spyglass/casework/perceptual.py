"""Perceptual hashes (pHash): 64 bits per image that survive re-encoding, resizing and
colour shifts, where an embedding drifts; and their cache in the index folder.

The hash is the one of ``imagehash.phash`` (Zauner's pHash as described by N. Krawetz):
the image in grey at 32 x 32, its 2-D DCT-II, the top-left 8 x 8 coefficients compared
with their median. Written with numpy alone (a DCT by matrix products), it matches
``imagehash`` bit for bit (scripts/bench_duplicates.py checks it), so no extra is needed.

Hashes are kept in ``INDEX/casework/phash.npz`` by image id (images are content: a
hash never goes stale), written atomically; files are read only for images not hashed
yet. A reader (the server) never writes it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from spyglass.store.index import Index

HASH_SIDE = 8
_SAMPLE_SIDE = HASH_SIDE * 4
CACHE_FILE = Path("casework") / "phash.npz"


def _dct_matrix(n: int) -> np.ndarray:
    """(n, n) float64: row k holds cos(pi k (2i + 1) / 2n), the DCT-II basis (unscaled:
    the scale does not change a comparison with the median)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT = _dct_matrix(_SAMPLE_SIDE)


def phash(image: Image.Image) -> int:
    """The 64-bit perceptual hash of ``image`` as an unsigned integer (bit 63 is the
    top-left coefficient, rows first, as imagehash prints it)."""
    grey = image.convert("L").resize((_SAMPLE_SIDE, _SAMPLE_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    coefficients = _DCT @ pixels @ _DCT.T
    low = coefficients[:HASH_SIDE, :HASH_SIDE]
    bits = (low > np.median(low)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def phash_file(path: str | Path) -> int | None:
    """The hash of an image file, or None when it cannot be read now."""
    try:
        with Image.open(path) as image:
            # A JPEG is decoded at 1/2 .. 1/8 scale where that still leaves 32+ pixels.
            image.draft("RGB", (_SAMPLE_SIDE * 4, _SAMPLE_SIDE * 4))
            return phash(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class PerceptualHashes:
    """image id -> 64-bit pHash, for the images hashed so far.

    Held as two sorted arrays (ids, hashes) as loaded from the cache, so that opening
    the hashes of a million images costs one file read (16 MB), not a million Python
    objects; hashes added since sit in a dict until :meth:`save`."""

    def __init__(self, hashes: dict[int, int] | None = None) -> None:
        self._ids = np.zeros(0, np.int64)
        self._values = np.zeros(0, np.uint64)
        self._added: dict[int, int] = dict(hashes or {})

    def __len__(self) -> int:
        return len(self._ids) + len(self._added)

    def ids(self) -> list[int]:
        """Every hashed image id, ascending."""
        return sorted({*self._ids.tolist(), *self._added})

    def get(self, image_id: int) -> int | None:
        added = self._added.get(image_id)
        if added is not None:
            return added
        at = int(np.searchsorted(self._ids, image_id))
        if at < len(self._ids) and int(self._ids[at]) == image_id:
            return int(self._values[at])
        return None

    def distance(self, a: int, b: int) -> int | None:
        """Bits that differ between the hashes of images ``a`` and ``b`` (None if either
        has none)."""
        first, second = self.get(a), self.get(b)
        if first is None or second is None:
            return None
        return hamming(first, second)

    @classmethod
    def load(cls, index: Index) -> PerceptualHashes:
        """The cached hashes of ``index`` (none if it was never hashed)."""
        hashes = cls()
        path = index.folder / CACHE_FILE
        if not path.is_file():
            return hashes
        try:
            with np.load(path) as stored:
                ids = np.asarray(stored["ids"], np.int64)
                values = np.asarray(stored["hashes"], np.int64).view(np.uint64)
        except (OSError, ValueError, KeyError):
            return hashes  # a damaged cache is only rebuilt
        if len(ids) == len(values):
            order = np.argsort(ids, kind="stable")
            hashes._ids, hashes._values = ids[order], values[order]
        return hashes

    def save(self, index: Index) -> None:
        """Write atomically: a reader sees the old file or the new one."""
        self._merge()
        path = index.folder / CACHE_FILE
        path.parent.mkdir(exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, ids=self._ids, hashes=self._values.view(np.int64))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _merge(self) -> None:
        if not self._added:
            return
        ids = np.concatenate([self._ids, np.fromiter(self._added, np.int64, len(self._added))])
        values = np.concatenate([self._values, np.array(list(self._added.values()), np.uint64)])
        order = np.argsort(ids, kind="stable")
        self._ids, self._values = ids[order], values[order]
        self._added = {}

    def add_missing(
        self,
        index: Index,
        image_ids: Iterable[int],
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Hash the images among ``image_ids`` not hashed yet (reading one file of
        each); returns how many were added."""
        wanted = np.asarray(list(image_ids), np.int64)
        known = np.isin(wanted, self._ids) if len(self._ids) else np.zeros(len(wanted), bool)
        missing = [int(i) for i in wanted[~known].tolist() if int(i) not in self._added]
        added = 0
        for start in range(0, len(missing), 1000):
            chunk = missing[start : start + 1000]
            records = index.catalogue.images(chunk)
            for image_id in chunk:
                record = records.get(image_id)
                for path in record.paths if record else ():
                    value = phash_file(path)
                    if value is not None:
                        self._added[image_id] = value
                        added += 1
                        break
            if progress is not None:
                progress(min(start + len(chunk), len(missing)), len(missing))
        return added
