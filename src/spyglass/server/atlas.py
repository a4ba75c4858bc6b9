"""A 2D map of the collection: PCA to 50 dimensions, then t-SNE, cached on disk.

t-SNE over ten thousand images takes a while (see docs/bench-api.md), so the map is
computed in a background thread the first time it is asked for; until then the API
answers "computing". The layout is saved under the index folder, named by a hash of
the images it covers, and reused until images are added or removed. Above
``max_points`` images the map shows a seeded random sample.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spyglass.errors import MissingDependency
from spyglass.store.index import Index

log = logging.getLogger("spyglass.server")

#: Changes whenever the layout recipe changes, so old cached maps are not reused.
RECIPE = "pca50-tsne-v1"
PCA_DIMS = 50


@dataclass(frozen=True)
class MapLayout:
    """``ids`` (n,) int64 image ids; ``xy`` (n, 2) float32 in [0, 1], y down."""

    ids: np.ndarray
    xy: np.ndarray
    seconds: float
    total: int


@dataclass(frozen=True)
class MapState:
    status: str  # "ready", "computing" or "failed"
    layout: MapLayout | None = None
    message: str = ""


def layout_vectors(vectors: np.ndarray, seed: int = 0, threads: int = 1) -> np.ndarray:
    """(n, d) float32 -> (n, 2) float32 positions in [0, 1] (PCA then t-SNE).

    Both axes share one scale, so distances on the map keep their proportions. The
    work runs on ``threads`` threads: the map is background work next to searches."""
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if n < 5:
        angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return (0.5 + 0.4 * np.stack([np.cos(angles), np.sin(angles)], 1)).astype(np.float32)
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingDependency(
            "the map needs scikit-learn: pip install 'spyglass[eval]'"
        ) from error
    data = np.asarray(vectors, np.float32)
    dims = min(PCA_DIMS, n - 1, data.shape[1])
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    with threadpool_limits(threads):
        reduced = PCA(n_components=dims, random_state=seed).fit_transform(data)
        xy = TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            random_state=seed,
            n_jobs=threads,
        ).fit_transform(reduced)
    xy = xy - xy.min(axis=0)
    scale = float(xy.max()) or 1.0
    xy = xy / scale
    xy += (1.0 - xy.max(axis=0)) / 2.0  # centre the shorter axis
    return xy.astype(np.float32)


class CollectionMap:
    """The map of one index, computed once per set of images, in the background."""

    def __init__(
        self, index: Index, folder: Path, *, max_points: int, threads: int = 1, seed: int = 0
    ) -> None:
        self.index = index
        self.folder = folder
        self.max_points = max_points
        self.threads = threads
        self.seed = seed
        self._lock = threading.Lock()
        self._layouts: dict[str, MapLayout] = {}
        self._running: dict[str, threading.Thread] = {}
        self._failed: dict[str, str] = {}

    @property
    def space(self) -> str:
        return self.index.info.image_space

    def state(self, start: bool = True) -> MapState:
        """The map of the images indexed now; starts computing it if needed."""
        ids, total = self._ids()
        key = self._key(ids)
        with self._lock:
            if key in self._layouts:
                return MapState("ready", self._layouts[key])
            if key in self._failed:
                return MapState("failed", message=self._failed[key])
            cached = self._load(key)
            if cached is not None:
                self._layouts = {key: cached}
                return MapState("ready", cached)
            if key not in self._running and start:
                thread = threading.Thread(
                    target=self._compute, args=(key, ids, total), name="spyglass-map", daemon=True
                )
                self._running[key] = thread
                thread.start()
            return MapState("computing", message=f"laying out {len(ids):,} images")

    def wait(self, timeout: float | None = None) -> MapState:
        """Block until the current map is ready or failed (tests, benchmarks)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.state()
            if state.status != "computing":
                return state
            if deadline is not None and time.monotonic() > deadline:
                return state
            time.sleep(0.05)

    def _ids(self) -> tuple[np.ndarray, int]:
        store = self.index.stores[self.space]
        ids = np.sort(store.visible_owners())
        total = len(ids)
        if total > self.max_points:
            rng = np.random.default_rng(self.seed)
            ids = np.sort(rng.choice(ids, self.max_points, replace=False))
        return ids.astype(np.int64), total

    def _key(self, ids: np.ndarray) -> str:
        digest = hashlib.blake2b(digest_size=12)
        info = self.index.info
        digest.update(f"{RECIPE}|{info.name}|{info.version}|{self.space}|{self.seed}|".encode())
        digest.update(np.ascontiguousarray(ids, np.int64).tobytes())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / f"map-{key}.npz"

    def _load(self, key: str) -> MapLayout | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as saved:
                return MapLayout(
                    saved["ids"], saved["xy"], float(saved["seconds"]), int(saved["total"])
                )
        except (OSError, ValueError, KeyError) as error:
            log.warning("ignoring unreadable map cache %s: %s", path, error)
            return None

    def _compute(self, key: str, ids: np.ndarray, total: int) -> None:
        started = time.perf_counter()
        try:
            vectors = self.index.stores[self.space].fetch(ids) if len(ids) else np.zeros((0, 1))
            xy = layout_vectors(vectors, self.seed, self.threads)
            layout = MapLayout(ids, xy, time.perf_counter() - started, total)
            self._save(key, layout)
            with self._lock:
                self._layouts = {key: layout}
        except Exception as error:  # a failed map must not take the server down
            log.exception("the collection map failed")
            with self._lock:
                self._failed[key] = f"the map could not be computed: {error}"
        finally:
            with self._lock:
                self._running.pop(key, None)

    def _save(self, key: str, layout: MapLayout) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".npz")
            with os.fdopen(handle, "wb") as out:
                np.savez(
                    out,
                    ids=layout.ids,
                    xy=layout.xy,
                    seconds=np.float64(layout.seconds),
                    total=np.int64(layout.total),
                )
            os.replace(temporary, self._path(key))
            for old in self.folder.glob("map-*.npz"):
                if old.name != self._path(key).name:
                    old.unlink(missing_ok=True)
        except OSError as error:
            log.warning("the map is not cached: cannot write %s (%s)", self.folder, error)
