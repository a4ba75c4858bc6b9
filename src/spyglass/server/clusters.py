"""Group the top results into clusters (k-means) and link each image to its nearest
neighbours, for the page's graph view.

Vectors are the encoder's image space (for the bundled model, pooled CNN features):
clusters of what the images look like, whatever the query was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spyglass.errors import MissingDependency

#: Largest k tried when the number of clusters is chosen automatically.
MAX_AUTO_CLUSTERS = 8


@dataclass(frozen=True)
class Clustering:
    """Clusters of n images given as rows of a unit-vector matrix.

    ``labels`` (n,) int cluster of each row, numbered so that cluster 0 holds the first
    row (the best result), cluster 1 the best row not in cluster 0, and so on.
    ``centres`` (clusters,) int row nearest each cluster's mean direction; ``cohesion``
    (clusters,) float mean cosine of members to that direction. ``edges`` are (row,
    row, cosine) with the first row < the second, each pair once.
    """

    labels: np.ndarray
    centres: np.ndarray
    cohesion: np.ndarray
    edges: list[tuple[int, int, float]]
    silhouette: float | None


def cluster_vectors(
    vectors: np.ndarray, *, clusters: int | None = None, neighbours: int = 3, seed: int = 0
) -> Clustering:
    """Cluster (n, d) float32 unit rows with k-means; ``clusters=None`` picks k in
    2..8 by the best cosine silhouette."""
    n = len(vectors)
    vectors = np.asarray(vectors, np.float32)
    if n == 0:
        empty = np.zeros(0, np.int64)
        return Clustering(empty, empty, np.zeros(0, np.float32), [], None)
    similarity = vectors @ vectors.T
    edges = neighbour_edges(similarity, neighbours)
    if n < 3:
        labels = np.zeros(n, np.int64)
        silhouette = None
    else:
        labels, silhouette = _kmeans(vectors, clusters, seed)
    labels = _renumber_by_rank(labels)
    count = int(labels.max()) + 1
    centres = np.zeros(count, np.int64)
    cohesion = np.zeros(count, np.float32)
    for c in range(count):
        members = np.flatnonzero(labels == c)
        direction = vectors[members].sum(axis=0)
        direction /= max(float(np.linalg.norm(direction)), 1e-12)
        scores = vectors[members] @ direction
        centres[c] = members[int(np.argmax(scores))]
        cohesion[c] = float(scores.mean())
    return Clustering(labels, centres, cohesion, edges, silhouette)


def neighbour_edges(similarity: np.ndarray, neighbours: int) -> list[tuple[int, int, float]]:
    """Each row's ``neighbours`` most similar other rows, as undirected edges."""
    n = len(similarity)
    edges: dict[tuple[int, int], float] = {}
    if n < 2:
        return []
    masked = similarity.copy()
    np.fill_diagonal(masked, -np.inf)
    take = min(neighbours, n - 1)
    nearest = np.argsort(-masked, axis=1, kind="stable")[:, :take]
    for i in range(n):
        for j in nearest[i].tolist():
            pair = (min(i, j), max(i, j))
            edges[pair] = float(similarity[i, j])
    return [(a, b, s) for (a, b), s in sorted(edges.items())]


def _kmeans(
    vectors: np.ndarray, clusters: int | None, seed: int
) -> tuple[np.ndarray, float | None]:
    try:
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score
        from threadpoolctl import threadpool_limits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingDependency(
            "clustering needs scikit-learn: pip install 'spyglass[eval]'"
        ) from error
    n = len(vectors)
    distinct = len(np.unique(vectors.round(5), axis=0))
    if clusters is not None:
        candidates = [min(clusters, distinct)]
    else:
        candidates = list(range(2, min(MAX_AUTO_CLUSTERS, distinct - 1, n - 1) + 1))
    if not candidates or candidates[0] < 2:
        return np.zeros(n, np.int64), None
    best: tuple[float, np.ndarray] | None = None
    # One thread: for 50 points, OpenMP start-up and contention with the server's other
    # threads cost several times the work itself (1.3 s against 0.3 s measured).
    with threadpool_limits(1):
        for k in candidates:
            labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(vectors)
            if len(set(labels.tolist())) < 2:
                continue
            score = float(silhouette_score(vectors, labels, metric="cosine"))
            if best is None or score > best[0]:
                best = (score, labels)
    if best is None:
        return np.zeros(n, np.int64), None
    return best[1].astype(np.int64), best[0]


def _renumber_by_rank(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], np.int64)
