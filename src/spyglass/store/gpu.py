"""The approximate index searched on a GPU, where FAISS can.

The PyPI ``faiss-cpu`` wheel has no GPU code. With the ``gpu`` extra (``faiss-gpu-cu12``,
CUDA 12) and a device in sight, :class:`~spyglass.store.ivf.IvfVectorStore` copies its
saved index (coarse centroids and 8-bit codes) to the first device on its first search
and scans the lists there; everything else stays as on the CPU: rows committed since the
save are searched in a small CPU index beside it, candidates are re-scored exactly from
the float16 file, ties are broken by owner id. So a GPU changes how fast candidates are
found, never which scores are returned.

FAISS's GPU indexes take no row selector, so a search that may return only some rows
(hidden images, a filter) asks the device for more candidates and drops the others
after, as long as most rows are allowed and the candidates fit the device's top-k limit;
otherwise that search runs on the CPU with the selector, as without a GPU.

Not run on a GPU yet: no machine with one was lent to this work (docs/performance.md).
Any error from the device turns it off for that store, which then searches on the CPU
and says why in ``spyglass info``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

#: FAISS's GPU k-selection handles at most this many results (and lists probed) per
#: query; 2048 with recent CUDA, 1024 kept for older builds.
DEVICE_MAX_K = 1024
#: A search restricted to a selection goes to the device only when the selection keeps
#: at least this share of the rows: the device cannot skip the others, so it is asked
#: for 1/share times the candidates.
DEVICE_FROM_SHARE = 0.5


class DeviceIndex(Protocol):
    """An index copied to a device: ``search`` gives (n, k) int64 row numbers, -1 padded."""

    def search(self, queries: np.ndarray, k: int, nprobe: int) -> np.ndarray: ...


class Placer(Protocol):
    """Copies a CPU FAISS IVF index to a device; ``where`` names it for ``spyglass info``."""

    where: str

    def place(self, index: Any) -> DeviceIndex: ...


@dataclass(frozen=True)
class NoDevice:
    """Why searches stay on the CPU, for ``spyglass info``."""

    reason: str


class FaissGpuPlacer:
    """Places indexes on device 0 through FAISS's own GPU code; one per process (its
    resources reserve device memory for temporary buffers)."""

    def __init__(self, faiss: Any) -> None:
        self._faiss = faiss
        self._resources: Any = None
        self.where = f"GPU 0 of {faiss.get_num_gpus()}"

    def place(self, index: Any) -> DeviceIndex:
        faiss = self._faiss
        if self._resources is None:
            self._resources = faiss.StandardGpuResources()
        return _FaissDeviceIndex(faiss.index_cpu_to_gpu(self._resources, 0, index))


class _FaissDeviceIndex:
    def __init__(self, index: Any) -> None:
        self._index = index

    def search(self, queries: np.ndarray, k: int, nprobe: int) -> np.ndarray:
        # Set, not passed as search parameters: the store holds its FAISS lock here, and
        # every FAISS GPU version has the attribute.
        self._index.nprobe = nprobe
        _, rows = self._index.search(queries, k)
        return np.asarray(rows, np.int64)


def find_placer(mode: str) -> Placer | NoDevice:
    """The device to search on, for ``VectorSearchSettings.gpu``: ``"off"`` never;
    ``"auto"`` when FAISS was built with GPU support and sees a device."""
    if mode == "off":
        return NoDevice("GPU turned off")
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return NoDevice("this FAISS build has no GPU support")
    try:
        devices = int(faiss.get_num_gpus())
    except RuntimeError as error:  # a driver that cannot start
        return NoDevice(f"FAISS cannot reach a GPU: {error}")
    if devices == 0:
        return NoDevice("FAISS sees no GPU")
    return FaissGpuPlacer(faiss)


class DeviceChoice:
    """Where an index's stores look for candidates: found on first use, then shared by
    all of them (FAISS's GPU resources reserve device memory, so one set per index).
    ``find`` is :func:`find_placer` but in tests."""

    def __init__(
        self, mode: str = "auto", find: Callable[[str], Placer | NoDevice] = find_placer
    ) -> None:
        self.mode = mode
        self._find = find
        self._found: Placer | NoDevice | None = None
        self._lock = threading.Lock()

    def get(self) -> Placer | NoDevice:
        with self._lock:
            if self._found is None:
                self._found = self._find(self.mode)
            return self._found


def device_fetch(fetch: int, kept_share: float) -> int | None:
    """Candidates to ask the device for, so that about ``fetch`` of them are in a
    selection keeping ``kept_share`` of the rows; None when the device cannot serve it
    (too narrow a selection, or more than it can select)."""
    if kept_share < DEVICE_FROM_SHARE:
        return None
    wanted = int(np.ceil(fetch / max(kept_share, 1e-9)))
    return wanted if wanted <= DEVICE_MAX_K else None


def keep_selected(rows: np.ndarray, bitmap: np.ndarray | None) -> np.ndarray:
    """(n, k) candidate rows with those outside ``bitmap`` (FAISS's little-endian row
    bitmap; None: all allowed) set to -1, as the CPU search's selector would leave them."""
    if bitmap is None:
        return rows
    inside = (rows >= 0) & (rows < len(bitmap) * 8)
    safe = np.where(inside, rows, 0)
    allowed = (bitmap[safe >> 3] >> (safe & 7).astype(np.uint8)) & 1
    return np.where(inside & (allowed == 1), rows, -1)
