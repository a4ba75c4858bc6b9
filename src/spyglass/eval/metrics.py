"""Ranking quality: AP, precision, recall and hit rate at K, R-precision, curves, and
bootstrap confidence intervals.

Conventions (the same for every protocol):

* **Ties are broken pessimistically.** Items next to each other in the engine's ranking
  with exactly equal scores form a tie; inside a tie the non-relevant items are placed
  first. Every metric here is therefore the worst value over all orders of tied items,
  and a method gains nothing from returning equal scores. The engine's order between
  different scores is kept as it is (a re-ranker may legitimately reorder).
* **Relevant items the ranking leaves out** count as never retrieved: ``total_relevant``
  is the number of relevant items in the collection, not in the ranking.
* **Queries with no relevant item** have no AP: ``results.summarise`` leaves them out of
  every mean and counts them.
* Precision at K divides by K even when the ranking is shorter (trec_eval's rule).
* ``recall@K`` is the share of a query's relevant items in its top K; ``hit@K`` is 1 when
  at least one is (what composed-retrieval and caption papers call Recall@K).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Recall levels of the interpolated precision-recall curve.
RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


@dataclass(frozen=True)
class Judged:
    """One query's ranking reduced to what metrics need.

    ``hits`` (n,) bool: whether the item at each rank is relevant, ties already resolved;
    ``total_relevant``: relevant items in the collection (ranked or not).
    """

    hits: np.ndarray
    total_relevant: int

    @classmethod
    def of(
        cls, relevant: np.ndarray, scores: np.ndarray | None, total_relevant: int | None = None
    ) -> Judged:
        """Judge a ranking: ``relevant`` (n,) bool in the engine's order, ``scores`` (n,)
        (or None: the order has no ties). ``total_relevant`` defaults to the relevant
        items in the ranking."""
        relevant = np.asarray(relevant, dtype=bool)
        hits = relevant if scores is None else relevant[pessimistic_order(relevant, scores)]
        total = int(relevant.sum()) if total_relevant is None else int(total_relevant)
        if total < int(relevant.sum()):
            raise ValueError("total_relevant is smaller than the relevant items ranked")
        return cls(hits, total)


def pessimistic_order(relevant: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(n,) int64 order that keeps the ranking but puts, inside each run of equal
    adjacent scores, the non-relevant items before the relevant ones."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    run = np.concatenate(([0], np.cumsum(scores[1:] != scores[:-1])))
    # lexsort: last key is the primary one; stable, so order inside a class is kept.
    return np.lexsort((np.asarray(relevant, dtype=bool), run)).astype(np.int64)


def _require_relevant(judged: Judged) -> None:
    if judged.total_relevant <= 0:
        raise ValueError("a query with no relevant item has no such metric")


def average_precision(judged: Judged) -> float:
    """AP = (1/R) * sum over relevant ranks i of precision@i; R = total relevant."""
    _require_relevant(judged)
    ranks = np.flatnonzero(judged.hits) + 1
    if len(ranks) == 0:
        return 0.0
    precision_at_hits = np.arange(1, len(ranks) + 1) / ranks
    return float(precision_at_hits.sum() / judged.total_relevant)


def precision_at(judged: Judged, k: int) -> float:
    return float(judged.hits[:k].sum() / k)


def recall_at(judged: Judged, k: int) -> float:
    _require_relevant(judged)
    return float(judged.hits[:k].sum() / judged.total_relevant)


def hit_at(judged: Judged, k: int) -> float:
    _require_relevant(judged)
    return float(judged.hits[:k].any())


def r_precision(judged: Judged) -> float:
    """Precision at R, the number of relevant items."""
    _require_relevant(judged)
    return precision_at(judged, judged.total_relevant)


def reciprocal_rank(judged: Judged) -> float:
    _require_relevant(judged)
    first = np.flatnonzero(judged.hits)
    return float(1.0 / (first[0] + 1)) if len(first) else 0.0


def interpolated_precision(judged: Judged, levels: np.ndarray = RECALL_LEVELS) -> np.ndarray:
    """(len(levels),) float64: the highest precision reached at recall >= each level
    (0 where the ranking never reaches it)."""
    _require_relevant(judged)
    cumulative = np.cumsum(judged.hits)
    precision = cumulative / np.arange(1, len(cumulative) + 1)
    recall = cumulative / judged.total_relevant
    best_from = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    result = np.zeros(len(levels))
    for j, level in enumerate(levels):
        reached = np.flatnonzero(recall >= level - 1e-12)
        if len(reached):
            result[j] = best_from[reached[0]]
    return result


def recall_curve(judged: Judged, ks: Sequence[int]) -> np.ndarray:
    """(len(ks),) float64 recall@k for each k."""
    _require_relevant(judged)
    cumulative = np.concatenate(([0], np.cumsum(judged.hits)))
    at = np.minimum(np.asarray(ks, np.int64), len(judged.hits))
    return cumulative[at] / judged.total_relevant


# -- over queries -----------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A mean over queries with its percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    seed: int = 0,
    resamples: int = 1000,
    level: float = 0.95,
) -> Estimate:
    """Mean of ``values`` (one per query) with a seeded percentile-bootstrap interval:
    queries are resampled with replacement ``resamples`` times."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(data.mean()), float(low), float(high))


def paired_difference(
    first: Sequence[float] | np.ndarray,
    second: Sequence[float] | np.ndarray,
    *,
    seed: int = 0,
    resamples: int = 1000,
) -> Estimate:
    """Mean of first - second over the same queries, with a paired bootstrap interval:
    the honest way to say one method beats another on these queries."""
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("a paired difference needs the same queries on both sides")
    return bootstrap_mean(a - b, seed=seed, resamples=resamples)
