"""A 2D map of the collection, computed in the background when the server starts.

The recipe, chosen by measurement (docs/bench-api.md): PCA to 50 dimensions; exact
nearest neighbours with FAISS; then t-SNE with FFT-accelerated gradients (openTSNE):
125 iterations of early exaggeration and 250 normal ones on a slightly coarser
interpolation grid. 10,000 images take about 10 s on one core. Without openTSNE the
map falls back to scikit-learn's Barnes-Hut t-SNE, which is several times slower.

The map's points are also grouped (k-means over the PCA vectors) and each group is
named by the vocabulary words nearest its centre in the text space (see
:mod:`spyglass.server.vocabulary`): that is the page's legend.

While computing, :meth:`CollectionMap.state` reports the phase and the share done.
The layout is cached on disk (never in the index folder: see
:mod:`spyglass.server.caches`) under a hash of the images it covers, and reused until
images are added or removed; without a cache folder it is kept in memory. Above
``max_points`` images the map shows a seeded random sample.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spyglass.errors import MissingDependency
from spyglass.server.background import BackgroundStopped, stop_point
from spyglass.server.vocabulary import Vocabulary
from spyglass.store.index import Index

log = logging.getLogger("spyglass.server")

#: Changes whenever the layout recipe changes, so old cached maps are not reused.
RECIPE = "pca50-knn-opentsne-fft-ee125-250-v2"
PCA_DIMS = 50
PERPLEXITY = 30.0
EARLY_ITERATIONS = 125
ITERATIONS = 250
#: openTSNE's FFT grid: one interval per 2 units of the embedding (its default is 1)
#: and at least 30 (default 50). Measured on 10,000 images: half the time of the
#: default grid for a 4 % lower neighbour recall (docs/bench-api.md).
INTERVAL_WIDTH = 2.0
MIN_INTERVALS = 30
#: From this many points on, FFT gradients; below, Barnes-Hut (quicker for few points).
FFT_FROM = 2000
#: Most groups in the legend: more colours than this cannot be told apart.
MAX_GROUPS = 12
#: Words naming each group.
GROUP_WORDS = 3

#: Called with (what is being done, share of the whole layout done in 0..1).
ProgressCallback = Callable[[str, float], None]


@dataclass(frozen=True)
class MapGroup:
    """One group of the map: ``size`` members, the ``words`` naming it (best first,
    empty without a vocabulary) and ``x``, ``y`` the median of its members' positions
    (where the page writes its name)."""

    size: int
    words: tuple[str, ...]
    x: float
    y: float


@dataclass(frozen=True)
class MapLayout:
    """``ids`` (n,) int64 image ids; ``xy`` (n, 2) float32 in [0, 1], y down;
    ``labels`` (n,) int64 the group of each point, an index into ``groups`` (groups
    are numbered by size, largest first)."""

    ids: np.ndarray
    xy: np.ndarray
    seconds: float
    total: int
    labels: np.ndarray
    groups: tuple[MapGroup, ...] = ()


@dataclass(frozen=True)
class MapState:
    status: str  # "ready", "computing" or "failed"
    layout: MapLayout | None = None
    message: str = ""
    #: Share of the work done while computing, 0..1.
    progress: float = 0.0


def reduce_dimensions(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, d) float32 -> (n, min(50, n - 1, d)) float32 PCA coordinates."""
    from sklearn.decomposition import PCA

    data = np.asarray(vectors, np.float32)
    dims = max(1, min(PCA_DIMS, len(data) - 1, data.shape[1]))
    return np.asarray(PCA(n_components=dims, random_state=seed).fit_transform(data), np.float32)


def layout_vectors(
    vectors: np.ndarray,
    seed: int = 0,
    threads: int = 1,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """(n, d) float32 -> (n, 2) float32 positions in [0, 1] (PCA, then t-SNE).

    Both axes share one scale, so distances on the map keep their proportions. The
    work runs on ``threads`` threads: the map is background work next to searches."""
    n = len(vectors)
    if n < 5:
        return _circle(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingDependency(
            "the map needs scikit-learn: pip install 'spyglass[server]'"
        ) from error
    report = progress or (lambda _what, _done: None)
    with threadpool_limits(threads):
        report("reducing to 50 dimensions", 0.0)
        reduced = reduce_dimensions(vectors, seed)
        return layout_reduced(reduced, seed, threads, report)


def layout_reduced(
    reduced: np.ndarray, seed: int, threads: int, report: ProgressCallback
) -> np.ndarray:
    """(n, k) float32 PCA coordinates -> (n, 2) float32 positions in [0, 1]."""
    n = len(reduced)
    if n < 5:
        return _circle(n)
    perplexity = float(min(PERPLEXITY, max(1.0, (n - 1) / 3.0)))
    try:
        import openTSNE  # noqa: F401 - only whether it is there
    except ImportError:
        xy = _sklearn_tsne(reduced, perplexity, seed, threads, report)
    else:
        xy = _open_tsne(reduced, perplexity, seed, threads, report)
    return _fit_unit_square(xy)


def _open_tsne(
    reduced: np.ndarray, perplexity: float, seed: int, threads: int, report: ProgressCallback
) -> np.ndarray:
    import faiss
    from openTSNE import TSNEEmbedding, affinity, initialization
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    n = len(reduced)
    report("finding nearest neighbours", 0.05)
    # Exact neighbours from FAISS: faster here than openTSNE's approximate search
    # (0.8 s against 6 s for 10,000 points) and exact.
    k = min(n - 1, int(3 * perplexity))
    search = faiss.IndexFlatL2(reduced.shape[1])
    data = np.ascontiguousarray(reduced, np.float32)
    search.add(data)
    faiss.omp_set_num_threads(threads)
    squared, neighbours = search.search(data, k + 1)
    neighbours, distances = _without_self(neighbours, squared)
    report("weighing the neighbours", 0.15)
    affinities = affinity.PerplexityBasedNN(
        perplexity=perplexity,
        knn_index=PrecomputedNeighbors(neighbours, distances),
        n_jobs=threads,
        random_state=seed,
    )
    start = initialization.pca(reduced, random_state=seed)
    # FFT gradients cost a fixed grid per iteration; below a few thousand points
    # Barnes-Hut is quicker (152 images: 0.2 s against 4 s).
    method = "fft" if n >= FFT_FROM else "bh"
    embedding = TSNEEmbedding(
        start, affinities, negative_gradient_method=method, n_jobs=threads, random_state=seed
    )
    total = EARLY_ITERATIONS + ITERATIONS
    done = [0]

    def step(_iteration: int, _error: float, _embedding: object) -> bool:
        done[0] += 25
        report("placing the images", 0.2 + 0.7 * min(1.0, done[0] / total))
        return False  # go on

    embedding = embedding.optimize(
        n_iter=EARLY_ITERATIONS,
        exaggeration=12,
        momentum=0.5,
        callbacks=step,
        callbacks_every_iters=25,
    )
    grid = {"ints_in_interval": INTERVAL_WIDTH, "min_num_intervals": MIN_INTERVALS}
    embedding = embedding.optimize(
        n_iter=ITERATIONS,
        momentum=0.8,
        callbacks=step,
        callbacks_every_iters=25,
        **(grid if method == "fft" else {}),
    )
    return np.asarray(embedding, np.float64)


def _without_self(neighbours: np.ndarray, squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop each row's own index from its k + 1 nearest (duplicates may list another
    row first, so the row itself is removed wherever it is, else the last column)."""
    n, width = neighbours.shape
    rows = np.arange(n)[:, None]
    is_self = neighbours == rows
    drop = np.where(is_self.any(1), is_self.argmax(1), width - 1)
    keep = np.ones_like(is_self)
    keep[np.arange(n), drop] = False
    kept = neighbours[keep].reshape(n, width - 1)
    distances = np.sqrt(np.maximum(squared[keep].reshape(n, width - 1), 0.0))
    return kept.astype(np.int64), distances.astype(np.float64)


def _sklearn_tsne(
    reduced: np.ndarray, perplexity: float, seed: int, threads: int, report: ProgressCallback
) -> np.ndarray:
    from sklearn.manifold import TSNE

    report("placing the images (scikit-learn t-SNE: pip install openTSNE is faster)", 0.1)
    result: np.ndarray = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        random_state=seed,
        n_jobs=threads,
    ).fit_transform(reduced)
    return result


def _circle(n: int) -> np.ndarray:
    if n == 0:
        return np.zeros((0, 2), np.float32)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return (0.5 + 0.4 * np.stack([np.cos(angles), np.sin(angles)], 1)).astype(np.float32)


def _fit_unit_square(xy: np.ndarray) -> np.ndarray:
    xy = xy - xy.min(axis=0)
    scale = float(xy.max()) or 1.0
    xy = xy / scale
    xy += (1.0 - xy.max(axis=0)) / 2.0  # centre the shorter axis
    return xy.astype(np.float32)


def group_count(n: int) -> int:
    """Groups in the legend for n points: about sqrt(n) / 2, between 2 and 12."""
    return int(min(MAX_GROUPS, max(2, round(n**0.5 / 2)))) if n >= 4 else 1


def group_points(reduced: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, k) float32 PCA coordinates -> (n,) int64 groups by k-means over their
    directions, numbered by size (largest first; ties by smallest member)."""
    n = len(reduced)
    count = min(group_count(n), len(np.unique(reduced.round(5), axis=0)))
    if count < 2:
        return np.zeros(n, np.int64)
    from sklearn.cluster import KMeans

    directions = reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
    raw = KMeans(n_clusters=count, n_init=2, random_state=seed).fit_predict(directions)
    order = sorted(
        set(raw.tolist()), key=lambda g: (-int((raw == g).sum()), int(np.argmax(raw == g)))
    )
    renumber = {g: i for i, g in enumerate(order)}
    return np.array([renumber[g] for g in raw.tolist()], np.int64)


class CollectionMap:
    """The map of one index, computed once per set of images, in the background."""

    def __init__(
        self,
        index: Index,
        folder: Path | None,
        *,
        max_points: int,
        vocabulary: Vocabulary | None = None,
        threads: int = 1,
        seed: int = 0,
        stopping: threading.Event | None = None,
    ) -> None:
        self.stopping = stopping
        self.index = index
        self.folder = folder
        self.max_points = max_points
        self.vocabulary = vocabulary
        self.threads = threads
        self.seed = seed
        self._lock = threading.Lock()
        self._layouts: dict[str, MapLayout] = {}
        self._running: dict[str, threading.Thread] = {}
        self._progress: dict[str, tuple[str, float]] = {}
        self._failed: dict[str, str] = {}
        #: (index generation, ids on the map, images in all): see ``_ids``.
        self._sample: tuple[tuple[int, int], np.ndarray, int] | None = None

    @property
    def space(self) -> str:
        return self.index.info.image_space

    def state(self, start: bool = True) -> MapState:
        """The map of the images indexed now; starts computing it (or reading it from
        the cache) in the background if needed."""
        ids, total = self._ids()
        key = self._key(ids)
        with self._lock:
            if key in self._layouts:
                return MapState("ready", self._layouts[key], progress=1.0)
            if key in self._failed:
                return MapState("failed", message=self._failed[key])
            if key not in self._running and start:
                thread = threading.Thread(
                    target=self._run, args=(key, ids, total), name="spyglass-map", daemon=True
                )
                self._running[key] = thread
                self._progress[key] = ("starting", 0.0)
                thread.start()
            what, done = self._progress.get(key, ("waiting", 0.0))
            return MapState(
                "computing", message=f"{len(ids):,} images: {what}", progress=round(done, 3)
            )

    def join(self, timeout: float) -> None:
        """Wait for the maps being computed (after ``stopping`` is set: one step)."""
        with self._lock:
            running = list(self._running.values())
        deadline = time.monotonic() + timeout
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))

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
        """The images on the map (a seeded sample beyond ``max_points``) and how many
        there are in all. Listing them is O(N) (1M images: about a second), so the
        answer is kept until the index's set of images changes."""
        generation = self.index.generation()
        with self._lock:
            if self._sample is not None and self._sample[0] == generation:
                return self._sample[1], self._sample[2]
        store = self.index.stores[self.space]
        ids = np.sort(store.visible_owners())
        total = len(ids)
        if total > self.max_points:
            rng = np.random.default_rng(self.seed)
            ids = np.sort(rng.choice(ids, self.max_points, replace=False))
        ids = ids.astype(np.int64)
        with self._lock:
            self._sample = (generation, ids, total)
        return ids, total

    def _key(self, ids: np.ndarray) -> str:
        digest = hashlib.blake2b(digest_size=12)
        info = self.index.info
        digest.update(f"{RECIPE}|{info.name}|{info.version}|{self.space}|{self.seed}|".encode())
        digest.update(np.ascontiguousarray(ids, np.int64).tobytes())
        return digest.hexdigest()

    def _report(self, key: str) -> ProgressCallback:
        def report(what: str, done: float) -> None:
            stop_point(self.stopping)  # every progress report is a place to stop
            with self._lock:
                self._progress[key] = (what, done)

        return report

    def _run(self, key: str, ids: np.ndarray, total: int) -> None:
        try:
            report = self._report(key)
            layout = self._load(key, total)
            if layout is None:
                layout = self._compute(ids, total, report)
                self._save(key, layout)
            report("naming the groups", 0.95)
            layout = self._named(layout)
            with self._lock:
                self._layouts = {key: layout}
        except BackgroundStopped:
            pass  # shutting down: the next server starts the map again
        except Exception as error:  # a failed map must not take the server down
            log.exception("the collection map failed")
            with self._lock:
                self._failed[key] = f"the map could not be computed: {error}"
        finally:
            with self._lock:
                self._running.pop(key, None)
                self._progress.pop(key, None)

    def _compute(self, ids: np.ndarray, total: int, report: ProgressCallback) -> MapLayout:
        from threadpoolctl import threadpool_limits

        started = time.perf_counter()
        if len(ids) < 5:
            return MapLayout(ids, _circle(len(ids)), 0.0, total, np.zeros(len(ids), np.int64))
        vectors = self.index.stores[self.space].fetch(ids)
        with threadpool_limits(self.threads):
            report("reducing to 50 dimensions", 0.0)
            reduced = reduce_dimensions(vectors, self.seed)
            xy = layout_reduced(reduced, self.seed, self.threads, report)
            report("grouping", 0.9)
            labels = group_points(reduced, self.seed)
        return MapLayout(ids, xy, time.perf_counter() - started, total, labels)

    def _named(self, layout: MapLayout) -> MapLayout:
        """The layout with its groups' sizes, positions and names (text-space words)."""
        count = int(layout.labels.max()) + 1 if len(layout.labels) else 0
        centres = []
        if count and self.vocabulary is not None:
            text_space = self.index.info.text_space
            vectors = self.index.stores[text_space].fetch(layout.ids)
            for g in range(count):
                members = vectors[layout.labels == g]
                centres.append(members.mean(axis=0))
            names = self.vocabulary.name(np.array(centres), GROUP_WORDS)
        else:
            names = []
        groups = []
        for g in range(count):
            where = layout.xy[layout.labels == g]
            words = names[g].words if names else ()
            groups.append(
                MapGroup(
                    size=len(where),
                    words=words,
                    x=float(np.median(where[:, 0])),
                    y=float(np.median(where[:, 1])),
                )
            )
        return MapLayout(
            layout.ids, layout.xy, layout.seconds, layout.total, layout.labels, tuple(groups)
        )

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"map-{key}.npz"

    def _load(self, key: str, total: int) -> MapLayout | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as saved:
                return MapLayout(
                    saved["ids"],
                    saved["xy"],
                    float(saved["seconds"]),
                    total,
                    saved["labels"].astype(np.int64),
                )
        except (OSError, ValueError, KeyError) as error:
            log.warning("ignoring unreadable map cache %s: %s", path, error)
            return None

    def _save(self, key: str, layout: MapLayout) -> None:
        path = self._path(key)
        if path is None:
            return
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=".part")
            try:
                with os.fdopen(handle, "wb") as out:
                    np.savez(
                        out,
                        ids=layout.ids,
                        xy=layout.xy,
                        labels=layout.labels,
                        seconds=np.float64(layout.seconds),
                    )
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            for old in folder.glob("map-*.npz"):
                if old.name != path.name:
                    old.unlink(missing_ok=True)
        except OSError as error:
            log.warning("the map is not cached: cannot write %s (%s)", folder, error)
