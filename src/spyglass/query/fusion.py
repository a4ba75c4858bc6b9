"""Late fusion across spaces: each space searched on its own, the lists' union scored in
every space, each score standardised by its mean and spread over the collection, and
the weighted sum ranked. ``svm-fusion`` (feedback) and ``late-fusion`` (image + text)
are this with different parts.

Every candidate needs its score in every space: from the list that found it, else the
cosine of its stored vector. With 200-deep lists that is up to 400 candidates per space
and query, so the bookkeeping is done with sorted arrays, not per-candidate Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spyglass.query.methods import RankContext, Ranking
from spyglass.query.sampling import random_images
from spyglass.store.base import VectorStore

#: How deep each single-space list goes: it decides which images are candidates, not
#: how they score. On the 1M synthetic index, the top 20 of ``svm-fusion`` at depth 200
#: were 99.6% those at depth 1,000 (60 queries; docs/methods.md).
FUSION_DEPTH = 200
#: Random images on which each part's mean and spread are estimated (a sample of its
#: own, seeded apart from the feedback models' negatives, whose scores a fit pushes down).
FUSION_SAMPLE = 1000
FUSION_SAMPLE_SEED = 1


def union_of(*lists: Sequence[tuple[int, float]]) -> np.ndarray:
    """(n,) int64: the ids found by any of the (id, score) lists, sorted, each once."""
    ids = [np.fromiter((i for i, _ in found), np.int64, len(found)) for found in lists]
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)


def scores_over(
    store: VectorStore,
    query: np.ndarray,
    candidates: np.ndarray,
    found: Sequence[tuple[int, float]],
) -> np.ndarray:
    """(n,) float64: each of ``candidates`` (n,) sorted int64 ids scored for ``query``
    (dims,) float32: its score in ``found`` (the (id, score) list the search returned)
    where it is there, else its stored vector's inner product with ``query``."""
    ids = np.fromiter((i for i, _ in found), np.int64, len(found))
    listed = np.fromiter((s for _, s in found), np.float64, len(found))
    order = np.argsort(ids, kind="stable")
    ids, listed = ids[order], listed[order]
    scores = np.empty(len(candidates), np.float64)
    at = np.searchsorted(ids, candidates)
    known = at < len(ids)
    known[known] = ids[at[known]] == candidates[known]
    scores[known] = listed[at[known]]
    missing = candidates[~known]
    if len(missing):
        scores[~known] = store.fetch(missing) @ query
    return scores


def fused_ranking(
    context: RankContext, parts: list[tuple[str, np.ndarray, float]], k: int
) -> Ranking:
    """Late fusion of single-space searches: ``parts`` are (space, unit query (dims,),
    weight). The candidates are the union U of each part's top ``max(k, FUSION_DEPTH)``;
    each gets its exact cosine in every part (stored vectors fetched where a part's list
    missed it), standardised by that part's mean and spread over the collection:

        s(x) = sum_p weight_p (cos_p(x) - mu_p) / sigma_p

    with mu_p and sigma_p the mean and standard deviation of cos_p over
    ``FUSION_SAMPLE`` random images (:func:`random_images`, kept per state of the index).
    Over the whole collection, as the evaluation ranks it, this is the z-score fusion of
    every image; over a large one the depth decides only which images are candidates,
    not how they score (standardised over U instead, a candidate's score depended on how
    deep the lists went)."""
    depth = max(k, FUSION_DEPTH)
    listed = [context.search(space, query, depth) for space, query, _ in parts]
    candidates = union_of(*listed)
    if not len(candidates):
        return []
    fused = np.zeros(len(candidates))
    for (space, query, weight), found in zip(parts, listed, strict=True):
        store = context.index.stores[space]
        sample = random_images(context.index, space, FUSION_SAMPLE, seed=FUSION_SAMPLE_SEED)
        # In float32 (the stored rows' precision is float16): a float64 copy of the
        # sample cost 3 ms a query at 1,280 dims, the product itself 0.3 ms.
        over_collection = (sample.vectors @ query.astype(np.float32)).astype(np.float64)
        fused += weight * standardised(
            scores_over(store, query, candidates, found), over_collection
        )
    order = np.lexsort((candidates, -fused))[:k]
    return [(int(candidates[i]), float(fused[i])) for i in order]


def standardised(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(n,) float64: ``scores`` (n,) less the mean of ``reference`` (m,), divided by its
    standard deviation; zeros where the reference does not vary (or is empty)."""
    spread = float(reference.std()) if len(reference) else 0.0
    if spread < 1e-12:
        return np.zeros(len(scores))
    return np.asarray((scores - float(reference.mean())) / spread, np.float64)
