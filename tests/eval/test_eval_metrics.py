"""Each metric against a brute-force computation on small hand-made and generated
rankings, including ties, relevant items the ranking misses, and no relevant items."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.eval.metrics import (
    RECALL_LEVELS,
    Judged,
    average_precision,
    bootstrap_mean,
    hit_at,
    interpolated_precision,
    paired_difference,
    pessimistic_order,
    precision_at,
    r_precision,
    recall_at,
    recall_curve,
    reciprocal_rank,
)
from spyglass.eval.results import MetricSet, QueryOutcome, summarise

# -- brute-force references -----------------------------------------------------------


def ap_by_definition(order: list[bool], total: int) -> float:
    """(1/R) sum over ranks k holding a relevant item of (relevant in top k) / k."""
    found = 0
    total_precision = 0.0
    for k, relevant in enumerate(order, start=1):
        if relevant:
            found += 1
            total_precision += found / k
    return total_precision / total


def tie_orders(relevant: list[bool], scores: list[float]) -> list[list[bool]]:
    """Every order of the ranking that permutes items only inside runs of equal scores."""
    runs: list[list[bool]] = []
    for i, flag in enumerate(relevant):
        if i and scores[i] == scores[i - 1]:
            runs[-1].append(flag)
        else:
            runs.append([flag])
    per_run = [set(itertools.permutations(run)) for run in runs]
    return [[x for part in combo for x in part] for combo in itertools.product(*per_run)]


def worst(metric, relevant: list[bool], scores: list[float], total: int) -> float:
    return min(metric(order, total) for order in tie_orders(relevant, scores))


def p_at(k: int):
    return lambda order, total: sum(order[:k]) / k


def r_at(k: int):
    return lambda order, total: sum(order[:k]) / total


def h_at(k: int):
    return lambda order, total: float(any(order[:k]))


def rr(order: list[bool], total: int) -> float:
    return next((1 / (i + 1) for i, x in enumerate(order) if x), 0.0)


def rprec(order: list[bool], total: int) -> float:
    return sum(order[:total]) / total


# -- hand-made rankings ------------------------------------------------------------------


def test_ap_of_a_plain_ranking() -> None:
    judged = Judged.of(np.array([1, 0, 1, 0], bool), np.array([4.0, 3.0, 2.0, 1.0]))
    assert average_precision(judged) == pytest.approx((1 + 2 / 3) / 2)
    assert precision_at(judged, 2) == 0.5
    assert recall_at(judged, 1) == 0.5
    assert r_precision(judged) == 0.5
    assert reciprocal_rank(judged) == 1.0


def test_a_tie_puts_relevant_items_last() -> None:
    # All three tied: whatever the engine's order, the relevant item counts as third.
    for relevant in ([1, 0, 0], [0, 1, 0], [0, 0, 1]):
        judged = Judged.of(np.array(relevant, bool), np.array([0.5, 0.5, 0.5]))
        assert judged.hits.tolist() == [False, False, True]
        assert average_precision(judged) == pytest.approx(1 / 3)
        assert hit_at(judged, 2) == 0.0
        assert reciprocal_rank(judged) == pytest.approx(1 / 3)


def test_ties_only_join_neighbours_with_equal_scores() -> None:
    # 0.9 | 0.5 0.5 | 0.1: only the middle pair is a tie.
    judged = Judged.of(np.array([0, 1, 0, 1], bool), np.array([0.9, 0.5, 0.5, 0.1]))
    assert judged.hits.tolist() == [False, False, True, True]
    assert average_precision(judged) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_the_engine_order_between_different_scores_is_kept() -> None:
    # A re-ranker may reorder: a lower score ranked first stays first.
    judged = Judged.of(np.array([1, 0], bool), np.array([0.2, 0.8]))
    assert judged.hits.tolist() == [True, False]


def test_relevant_items_missing_from_the_ranking_count_as_never_found() -> None:
    judged = Judged.of(np.array([1, 0], bool), np.array([2.0, 1.0]), total_relevant=3)
    assert average_precision(judged) == pytest.approx(1 / 3)
    assert recall_at(judged, 10) == pytest.approx(1 / 3)
    assert r_precision(judged) == pytest.approx(1 / 3)  # precision at R = 3
    assert recall_curve(judged, [1, 100]).tolist() == pytest.approx([1 / 3, 1 / 3])


def test_nothing_found() -> None:
    judged = Judged.of(np.array([0, 0, 0], bool), np.array([3.0, 2.0, 1.0]), total_relevant=2)
    assert average_precision(judged) == 0.0
    assert reciprocal_rank(judged) == 0.0
    assert interpolated_precision(judged).tolist() == [0.0] * len(RECALL_LEVELS)


def test_a_query_with_no_relevant_item_has_no_ap() -> None:
    judged = Judged.of(np.array([0, 0], bool), np.array([1.0, 0.0]))
    assert judged.total_relevant == 0
    for metric in (average_precision, r_precision, reciprocal_rank, interpolated_precision):
        with pytest.raises(ValueError):
            metric(judged)


def test_total_relevant_cannot_be_below_what_is_ranked() -> None:
    with pytest.raises(ValueError):
        Judged.of(np.array([1, 1], bool), None, total_relevant=1)


def test_precision_at_k_divides_by_k_beyond_the_ranking() -> None:
    judged = Judged.of(np.array([1], bool), None, total_relevant=1)
    assert precision_at(judged, 10) == pytest.approx(0.1)


def test_interpolated_precision_by_hand() -> None:
    # ranks: R N R N, R = 2: precision 1 at recall .5, 2/3 at recall 1.
    judged = Judged.of(np.array([1, 0, 1, 0], bool), None)
    expected = [1.0 if level <= 0.5 else 2 / 3 for level in RECALL_LEVELS]
    assert interpolated_precision(judged).tolist() == pytest.approx(expected)


def test_summary_leaves_out_and_counts_queries_without_relevant_items() -> None:
    outcomes = [
        QueryOutcome("a", Judged.of(np.array([1, 0], bool), None), 0.01),
        QueryOutcome("b", Judged.of(np.array([0, 1], bool), None), 0.03),
        QueryOutcome("c", None, 0.0, engine_calls=0),
    ]
    result = summarise("m", outcomes, MetricSet(precision=(1,)), seed=0)
    assert result.queries == 2
    assert result.excluded == 1
    assert result.metrics["mAP"] == pytest.approx((1.0 + 0.5) / 2)
    assert result.metrics["P@1"] == pytest.approx(0.5)
    assert result.per_query_ap == pytest.approx([1.0, 0.5])
    assert result.seconds_per_query == pytest.approx(0.02)
    assert result.map_ci.low <= result.metrics["mAP"] <= result.map_ci.high


# -- generated rankings ------------------------------------------------------------------

rankings = st.integers(1, 7).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n),
        # few distinct scores, so ties are common; sorted descending as an engine returns
        st.lists(st.sampled_from([0.1, 0.4, 0.7]), min_size=n, max_size=n).map(
            lambda s: sorted(s, reverse=True)
        ),
        st.integers(0, 3),  # relevant items the ranking does not contain
    )
)


@settings(max_examples=300, deadline=None)
@given(rankings, st.integers(1, 8))
def test_every_metric_is_its_worst_case_over_tied_orders(ranking, k) -> None:
    relevant, scores, unranked = ranking
    total = sum(relevant) + unranked
    judged = Judged.of(np.array(relevant, bool), np.array(scores), total_relevant=total)
    assert precision_at(judged, k) == pytest.approx(worst(p_at(k), relevant, scores, total))
    if total == 0:
        with pytest.raises(ValueError):
            average_precision(judged)
        return
    assert average_precision(judged) == pytest.approx(
        worst(ap_by_definition, relevant, scores, total)
    )
    assert recall_at(judged, k) == pytest.approx(worst(r_at(k), relevant, scores, total))
    assert hit_at(judged, k) == worst(h_at(k), relevant, scores, total)
    assert reciprocal_rank(judged) == pytest.approx(worst(rr, relevant, scores, total))
    assert r_precision(judged) == pytest.approx(worst(rprec, relevant, scores, total))


@settings(max_examples=200, deadline=None)
@given(rankings)
def test_curves_match_their_definitions(ranking) -> None:
    relevant, scores, unranked = ranking
    total = sum(relevant) + unranked
    if total == 0:
        return
    judged = Judged.of(np.array(relevant, bool), np.array(scores), total_relevant=total)
    order = judged.hits.tolist()
    points = [(sum(order[:k]) / total, sum(order[:k]) / k) for k in range(1, len(order) + 1)]
    for level, value in zip(RECALL_LEVELS, interpolated_precision(judged), strict=True):
        reached = [p for r, p in points if r >= level - 1e-12]
        assert value == pytest.approx(max(reached) if reached else 0.0)
    ks = [1, 2, 3, 50]
    expected = [sum(order[:k]) / total for k in ks]
    assert recall_curve(judged, ks).tolist() == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(rankings)
def test_pessimistic_order_is_a_permutation_that_keeps_scores_sorted(ranking) -> None:
    relevant, scores, _ = ranking
    order = pessimistic_order(np.array(relevant, bool), np.array(scores))
    assert sorted(order.tolist()) == list(range(len(scores)))
    assert [scores[i] for i in order] == scores


# -- bootstrap ---------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_matches_a_plain_loop() -> None:
    values = np.array([0.1, 0.9, 0.4, 0.35, 0.6, 0.2, 0.8])
    first = bootstrap_mean(values, seed=7, resamples=500)
    assert first == bootstrap_mean(values, seed=7, resamples=500)
    assert first != bootstrap_mean(values, seed=8, resamples=500)
    rng = np.random.default_rng(7)
    draws = rng.integers(0, len(values), size=(500, len(values)))
    means = sorted(sum(values[i] for i in row) / len(row) for row in draws)
    assert first.mean == pytest.approx(values.mean())
    assert first.low == pytest.approx(np.percentile(means, 2.5))
    assert first.high == pytest.approx(np.percentile(means, 97.5))
    assert first.low < first.mean < first.high


def test_bootstrap_of_constant_or_empty_values() -> None:
    same = bootstrap_mean([0.5] * 10)
    assert (same.low, same.mean, same.high) == pytest.approx((0.5, 0.5, 0.5))
    empty = bootstrap_mean([])
    assert math.isnan(empty.mean)


def test_paired_difference_sees_a_consistent_small_gain() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200)
    better = base + 0.02  # a small gain on every query, far inside the spread
    difference = paired_difference(better, base, seed=0)
    assert difference.low > 0
    unpaired_low = bootstrap_mean(better).low - bootstrap_mean(base).high
    assert unpaired_low < 0  # intervals of the two means overlap; pairing tells them apart
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])
