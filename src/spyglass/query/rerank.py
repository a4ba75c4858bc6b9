"""Re-ranking the top of a ranking: selectable by name (``Query.rerank``).

A re-ranker sees the method's ranking of the top ``RERANK_DEPTH`` images, (id, score)
best first, and returns the same images in a new order with new scores. Both re-rankers
here work from two things only: the scores, read as the cosine between the query and
each image, and the images' own vectors, fetched from the store. So they need no query
vector and work after any method; they are exact for methods whose score is a cosine in
the space they use (``rerank_space``: the text space when the query has text, else the
image space, the same rule as the ``sum`` method).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spyglass.errors import InvalidQuery
from spyglass.query.methods import RankContext, Ranking
from spyglass.store.index import Index

#: (context, ranking of the top results) -> new ranking of the same results.
Reranker = Callable[[RankContext, Ranking], Ranking]

_RERANKERS: dict[str, Reranker] = {"none": lambda context, ranking: ranking}
_ABOUT: dict[str, str] = {"none": "keep the method's order"}
#: How many of the top results a re-ranker sees (it re-orders those only).
RERANK_DEPTH = 300

#: alpha-QE: how many top results join the query, and the exponent on their scores.
AQE_NEIGHBOURS = 10
AQE_ALPHA = 3.0
#: k-reciprocal re-ranking: Zhong et al.'s k1, k2 and lambda.
KRECIPROCAL_K1 = 20
KRECIPROCAL_K2 = 6
KRECIPROCAL_LAMBDA = 0.3


def register_reranker(name: str, about: str) -> Callable[[Reranker], Reranker]:
    def wrap(function: Reranker) -> Reranker:
        _RERANKERS[name] = function
        _ABOUT[name] = about
        return function

    return wrap


def reranker_names() -> dict[str, str]:
    return dict(_ABOUT)


#: From how many images k-reciprocal re-ranking helps image -> image search: the
#: smallest measured collection where it did (Fashion, 300 images: +0.022 mAP; Caltech-101
#: +0.058 from 1,000), and it never hurt at or above it. At 100 images it did not help
#: (-0.005 and -0.001), and text queries it helped only on Caltech-101's class names from
#: 1,000 images, while it hurt captions (docs/methods.md, `spyglass eval rerank`).
KRECIPROCAL_MIN_IMAGES = 300

#: What the re-ranking name "default" means, per kind of query (``Query.task``): the
#: re-ranking and the smallest collection it applies to. Smaller collections, and kinds
#: of query not listed, get ``none``.
DEFAULT_RERANKING: dict[str, tuple[str, int]] = {
    "image": ("kreciprocal", KRECIPROCAL_MIN_IMAGES),
}


def resolve_reranker(name: str, task: str, collection_size: int | None = None) -> str:
    """The re-ranking a query gets: ``name`` itself, or for ``default`` the one chosen for
    the kind of query and the number of images in the collection. Without a size, the
    choice for a collection large enough (what listings of the defaults show; see
    ``describe_default_reranker`` for the whole rule)."""
    if name != "default":
        return name
    if task not in DEFAULT_RERANKING:
        return "none"
    reranker, smallest = DEFAULT_RERANKING[task]
    return reranker if collection_size is None or collection_size >= smallest else "none"


def describe_default_reranker(task: str) -> str:
    """The rule behind ``default`` for a kind of query, in words: ``none``, or e.g.
    ``kreciprocal from 300 images, else none``."""
    if task not in DEFAULT_RERANKING:
        return "none"
    reranker, smallest = DEFAULT_RERANKING[task]
    return f"{reranker} from {smallest:,} images, else none" if smallest > 0 else reranker


def collection_size(index: Index) -> int:
    """How many images the default re-ranking should assume the index holds: the rows of
    its image space, read in O(1). Images whose files were all removed still count (the
    catalogue's exact count is SQL COUNTs over the images table, measured at 2 ms on
    9,461 images, too slow to run on every query for a threshold)."""
    store = index.stores.get(index.info.image_space)
    return len(store) if store is not None else 0


def get_reranker(name: str, task: str = "text", collection_size: int | None = None) -> Reranker:
    name = resolve_reranker(name, task, collection_size)
    if name not in _RERANKERS:
        known = ", ".join(sorted(_RERANKERS))
        raise InvalidQuery(f"unknown re-ranking '{name}': choose one of default, {known}")
    return _RERANKERS[name]


def rerank_space(context: RankContext) -> str:
    return context.info.text_space if context.has_text else context.info.image_space


def top_vectors(context: RankContext, ranking: Ranking) -> tuple[np.ndarray, np.ndarray]:
    """(scores (n,) float64, vectors (n, dims) float64) of the ranked images.

    Scores outside [-1, 1] (a method that fuses z-scores) are divided by the largest
    magnitude, so that they can stand in for cosines."""
    space = rerank_space(context)
    owners = np.array([image_id for image_id, _ in ranking], np.int64)
    scores = np.array([score for _, score in ranking], np.float64)
    largest = float(np.abs(scores).max()) if len(scores) else 0.0
    if largest > 1.0 + 1e-6:
        scores = scores / largest
    return scores, context.index.stores[space].fetch(owners).astype(np.float64)


def _reordered(ranking: Ranking, scores: np.ndarray) -> Ranking:
    """The same images, sorted by the new scores, ties by image id (as every ranking)."""
    ids = np.array([image_id for image_id, _ in ranking], np.int64)
    order = np.lexsort((ids, -scores))
    return [(ranking[i][0], float(scores[i])) for i in order.tolist()]


# -- alpha query expansion ---------------------------------------------------------------


def alpha_qe_scores(
    scores: np.ndarray,
    vectors: np.ndarray,
    neighbours: int = AQE_NEIGHBOURS,
    alpha: float = AQE_ALPHA,
) -> np.ndarray:
    """Cosine of every ranked image with the expanded query

        q' = q + sum_{i < n} max(s_i, 0)^alpha x_i

    computed without q from s_j = q . x_j (``scores`` (m,)) and the images' unit vectors
    ``vectors`` (m, dims): q' . x_j = s_j + sum_i w_i x_i . x_j and
    ||q'||^2 = 1 + 2 sum_i w_i s_i + sum_ik w_i w_k x_i . x_k. Returns (m,) float64."""
    n = min(neighbours, len(scores))
    weights = np.maximum(scores[:n], 0.0) ** alpha
    top = vectors[:n]
    expanded = scores + (vectors @ top.T) @ weights
    norm_squared = 1.0 + 2.0 * weights @ scores[:n] + weights @ (top @ top.T) @ weights
    return np.asarray(expanded / np.sqrt(max(float(norm_squared), 1e-12)), np.float64)


@register_reranker("aqe", "alpha query expansion: the query plus its top 10, weighted sim^3")
def rerank_aqe(context: RankContext, ranking: Ranking) -> Ranking:
    """alpha-weighted query expansion (alpha-QE: F. Radenović, G. Tolias, O. Chum,
    "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018; the query-side
    refinement of SuperGlobal: S. Shao et al., "Global Features are All You Need for
    Image Retrieval and Reranking", ICCV 2023):

        q' = normalize(q + sum_{i <= n} sim(q, x_i)^alpha x_i)

    over the top n = 10 results with alpha = 3, then the top ``RERANK_DEPTH`` are
    re-scored by q' . x (see ``alpha_qe_scores``).
    """
    if len(ranking) < 2:
        return ranking
    scores, vectors = top_vectors(context, ranking)
    return _reordered(ranking, alpha_qe_scores(scores, vectors))


# -- k-reciprocal re-ranking -------------------------------------------------------------


def neighbour_ranks(distances: np.ndarray) -> np.ndarray:
    """(m, m) int: [i, j] = the rank of j among i's neighbours, nearest first (i itself is
    rank 0: its distance is 0; ties go to the lower index)."""
    order = np.argsort(distances, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(len(distances))[:, None]
    ranks[rows, order] = np.arange(len(distances))[None, :]
    return ranks


def kreciprocal_distances(
    distances: np.ndarray,
    k1: int = KRECIPROCAL_K1,
    k2: int = KRECIPROCAL_K2,
    lam: float = KRECIPROCAL_LAMBDA,
) -> np.ndarray:
    """Zhong et al.'s final distance from point 0 (the query) to every point.

    ``distances`` (m, m) symmetric, zero diagonal. Returns (m,) float64
    d*(0, j) = (1 - lambda) d_J(0, j) + lambda d(0, j). N(i, k) is i itself and its k
    nearest points; set sizes are counted with float32 matrix products (exact for counts
    this small, and fast)."""
    m = len(distances)
    k1 = min(k1, m - 1)
    half = max(round(k1 / 2), 1)
    ranks = neighbour_ranks(distances)
    near_k1, near_half = ranks <= k1, ranks <= half
    r_k1 = near_k1 & near_k1.T  # R(i, k1): j in N(i, k1) and i in N(j, k1)
    r_half = near_half & near_half.T
    # R*(i): R(i, k1) plus R(j, k1/2) for each j in R(i, k1) sharing >= 2/3 of it.
    r_k1_f, r_half_f = r_k1.astype(np.float32), r_half.astype(np.float32)
    shared = r_k1_f @ r_half_f.T
    take = r_k1 & (shared >= (2.0 / 3.0) * r_half_f.sum(axis=1)[None, :])
    expanded = r_k1 | ((take.astype(np.float32) @ r_half_f) > 0)
    v = np.where(expanded, np.exp(-distances), 0.0)
    # Local query expansion: average V over each point's k2 nearest (itself included).
    near_k2 = (ranks <= min(k2, m - 1)).astype(np.float64)
    v = (near_k2 @ v) / near_k2.sum(axis=1, keepdims=True)
    jaccard = 1.0 - np.minimum(v[0], v).sum(axis=1) / np.maximum(
        np.maximum(v[0], v).sum(axis=1), 1e-12
    )
    return np.asarray((1.0 - lam) * jaccard + lam * distances[0], np.float64)


@register_reranker("kreciprocal", "k-reciprocal re-ranking (Zhong et al. 2017) of the top 300")
def rerank_kreciprocal(context: RankContext, ranking: Ranking) -> Ranking:
    """k-reciprocal re-ranking (Z. Zhong, L. Zheng, D. Cao, S. Li, "Re-ranking Person
    Re-identification with k-reciprocal Encoding", CVPR 2017), over the query and its top
    ``RERANK_DEPTH`` results only:

        d(x, y) = ||x - y||^2 = 2 - 2 cos(x, y)     (query-to-image: 2 - 2 score)
        R(p, k) = {g in N(p, k) : p in N(g, k)}
        R*(p)   = R(p, k1) u R(q, k1/2) for q in R(p, k1) with
                  |R(p, k1) n R(q, k1/2)| >= 2/3 |R(q, k1/2)|
        V_p,g   = exp(-d(p, g)) if g in R*(p) else 0, then averaged over N(p, k2)
        d_J     = 1 - sum min(V_p, V_g) / sum max(V_p, V_g)
        d*      = (1 - lambda) d_J + lambda d

    with k1 = 20, k2 = 6, lambda = 0.3. Images are returned by d*, scored 1 - d*/2 (the
    cosine when lambda = 1).

    A collection of at most 2 k1 images is left as it is: there every image is among
    nearly every other's k1 nearest, the reciprocal sets say nothing, and d* would only
    squeeze the scores together.
    """
    if len(ranking) <= 2 * KRECIPROCAL_K1:
        return ranking
    scores, vectors = top_vectors(context, ranking)
    m = len(scores) + 1
    distances = np.empty((m, m))
    distances[1:, 1:] = 2.0 - 2.0 * (vectors @ vectors.T)
    distances[0, 1:] = distances[1:, 0] = 2.0 - 2.0 * scores
    np.fill_diagonal(distances, 0.0)
    distances = np.maximum(distances, 0.0)
    final = kreciprocal_distances(distances)[1:]
    return _reordered(ranking, 1.0 - final / 2.0)
