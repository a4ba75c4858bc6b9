"""The registered feedback methods and re-rankers on a small in-memory index of
hand-made vectors, against brute-force rankings computed directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spyglass.encoders.base import EncoderInfo
from spyglass.errors import InvalidQuery
from spyglass.query import feedback, fusion
from spyglass.query.methods import EmbeddedTerm, RankContext, get_method
from spyglass.query.rerank import alpha_qe_scores, get_reranker
from spyglass.store.index import Index
from spyglass.store.memory import MemoryVectorStore

INFO = EncoderInfo("hand-made", "1", {"joint": 6, "image": 5}, "joint", "image")


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    return {space: unit(rng.normal(size=(80, dims))) for space, dims in INFO.spaces.items()}


def in_memory_index(vectors: dict[str, np.ndarray]) -> Index:
    """An Index over exact in-memory stores; methods only search and fetch vectors."""
    stores = {}
    for space, rows in vectors.items():
        store = MemoryVectorStore(rows.shape[1])
        store.add(np.arange(len(rows)), rows)
        stores[space] = store
    return Index(Path("/nonexistent"), None, INFO, stores)  # type: ignore[arg-type]


def make_context(vectors, text=None, good=(), bad=()) -> RankContext:
    terms = [] if text is None else [EmbeddedTerm("text", 1.0, {"joint": text}, "t")]
    context = RankContext(
        in_memory_index(vectors), INFO, terms, positive_ids=tuple(good), negative_ids=tuple(bad)
    )
    for ids, target in ((good, context.positives), (bad, context.negatives)):
        if ids:
            for space, rows in vectors.items():
                target[space] = rows[list(ids)]
    return context


def brute_force(rows: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = rows.astype(np.float64) @ (query / np.linalg.norm(query))
    return sorted(range(len(rows)), key=lambda i: (-scores[i], i))[:k]


def assert_ranks_as(ids: list[int], rows: np.ndarray, query: np.ndarray, k: int) -> None:
    """``ids`` is the brute-force top k of ``rows`` by cosine with ``query``, up to the order
    of scores that tie within float32 rounding: methods score in float32, this reference
    in float64, so which of two exactly tied images comes first is rounding, not ranking
    (two marked images tie exactly with the mean of the two)."""
    scores = rows.astype(np.float64) @ (query / np.linalg.norm(query))
    expected = brute_force(rows, query, k)
    assert len(ids) == len(set(ids)) == len(expected)
    np.testing.assert_allclose(scores[ids], scores[expected], atol=1e-6)
    near_ties = np.abs(scores[ids][:, None] - scores[None, :]) < 1e-6
    for position, (got, wanted) in enumerate(zip(ids, expected, strict=True)):
        assert got == wanted or near_ties[position, wanted], (position, got, wanted)


def test_rocchio_ranks_exactly_by_the_moved_query(vectors) -> None:
    text = unit(np.ones((1, 6)))[0]
    good, bad = (3, 7, 11), (20, 21)
    ranking = get_method("rocchio")(make_context(vectors, text, good, bad), 30)
    joint = vectors["joint"].astype(np.float64)
    moved = 1.0 * text + 0.75 * joint[list(good)].mean(0) - 0.15 * joint[list(bad)].mean(0)
    assert_ranks_as([i for i, _ in ranking], vectors["joint"], moved, 30)


def test_image_only_feedback_ranks_in_the_image_space(vectors) -> None:
    good = (5, 9)
    ranking = get_method("rocchio")(make_context(vectors, None, good), 20)
    mean = vectors["image"][list(good)].astype(np.float64).mean(0)
    assert_ranks_as([i for i, _ in ranking], vectors["image"], mean, 20)


# -- the learned methods against their objectives, minimised here by SciPy ------------

#: Thirty images marked good cluster around the first axis, one is marked bad, and the
#: text leans elsewhere: every objective then has an optimum away from its text (with a
#: few marks among random vectors the bias alone meets the hinge and w -> 0). With 80
#: images and 1,000 pseudo-negatives wanted, every unmarked image is a negative, so the
#: training set is known here without the method's sampling.
MANY_GOOD = tuple(range(1, 31))
ONE_BAD = (60,)
LEANING_TEXT = unit(np.array([[0.5, 1.0, 0.0, 0.0, 0.0, 0.0]]))[0]


@pytest.fixture(scope="module")
def clustered() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    rows = {space: unit(rng.normal(size=(80, dims))) for space, dims in INFO.spaces.items()}
    for space, dims in INFO.spaces.items():
        noise = 0.5 * rng.normal(size=(len(MANY_GOOD), dims))
        rows[space][list(MANY_GOOD)] = unit(np.eye(dims)[0] + noise)
    return rows


def training_set(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, balanced weights): good, bad, then every other image; the images marked
    good hold half the weight, the others the other half, a bad mark weighs as a good."""
    others = [i for i in range(len(rows)) if i not in MANY_GOOD + ONE_BAD]
    x = rows[list(MANY_GOOD) + list(ONE_BAD) + others].astype(np.float64)
    y = np.array([1.0] * len(MANY_GOOD) + [-1.0] * (len(rows) - len(MANY_GOOD)))
    half = len(rows) / 2
    per_mark = half / len(MANY_GOOD)
    c = np.array([per_mark] * (len(MANY_GOOD) + len(ONE_BAD)) + [half / len(others)] * len(others))
    return x, y, c


def smoothed_hinge(z: np.ndarray, h: float = 0.1) -> np.ndarray:
    return np.where(z >= 1 + h, 0.0, np.where(z <= 1 - h, 1 - z, (1 + h - z) ** 2 / (4 * h)))


def reference_objective(method: str, rows: np.ndarray) -> tuple[Any, np.ndarray]:
    """(J(params), start) of each method's paper objective, written out here."""
    x, y, balanced = training_set(rows)
    q = LEANING_TEXT.astype(np.float64)

    def svm(loss: Any, c: np.ndarray, text_weight: float) -> Any:
        def value(p: np.ndarray) -> float:
            w, b = p[:-1], p[-1]
            total = c @ loss(y * (x @ w + b)) + 10.0 / 2 * (w @ w)
            if text_weight:
                total += text_weight * (1 - q @ w / np.linalg.norm(w))
            return float(total)

        return value

    if method == "svm":
        return svm(smoothed_hinge, balanced, 0.0), np.append(x[y > 0].mean(0), 0.0)
    if method == "svm-text":  # Moll's loss as written: hinge, weights 1
        hinge = lambda z: np.maximum(0.0, 1.0 - z)  # noqa: E731
        return svm(hinge, np.ones(len(x)), 1000.0), np.append(q, 0.0)
    if method == "svm-text-balanced":
        return svm(smoothed_hinge, balanced, 1000.0), np.append(q, 0.0)
    if method == "seesaw-style":

        def style(p: np.ndarray) -> float:
            w, b = p[:-1], p[-1]
            pull = w - 10.0 * q
            return float(balanced @ np.logaddexp(0.0, -y * (x @ w + b)) + 0.5 * pull @ pull)

        return style, np.append(10.0 * q, 0.0)
    # seesaw: the marked images only, centred; positives weighted n_bad / n_good.
    marked = len(MANY_GOOD) + len(ONE_BAD)
    xm, ym = x[:marked], y[:marked]
    centred = xm - xm.mean(axis=0)
    c = np.where(ym > 0, len(ONE_BAD) / len(MANY_GOOD), 1.0)

    def seesaw(w: np.ndarray) -> float:
        norm = np.linalg.norm(w)
        angle = w / norm - q
        penalty = (norm - 1.0) ** 2 + angle @ angle
        return float(c @ np.logaddexp(0.0, -ym * (centred @ w)) / marked + penalty / marked)

    return seesaw, q.copy()


def reference_minimum(objective: Any, start: np.ndarray) -> np.ndarray:
    """SciPy's L-BFGS-B (numerical gradients), polished by Powell for the plain hinge."""
    from scipy.optimize import minimize

    found = minimize(objective, start, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-11})
    return minimize(objective, found.x, method="Powell", options={"xtol": 1e-9, "ftol": 1e-14}).x


def direction_of(ranking: list[tuple[int, float]], rows: np.ndarray) -> np.ndarray:
    """The unit query a full ranking's cosines were computed with (least squares)."""
    ids = [i for i, _ in ranking]
    solution, *_ = np.linalg.lstsq(
        rows[ids].astype(np.float64), np.array([s for _, s in ranking]), rcond=None
    )
    return np.asarray(solution / np.linalg.norm(solution))


LEARNED = ["svm", "svm-text", "svm-text-balanced", "seesaw", "seesaw-style"]


@pytest.mark.parametrize("method", LEARNED)
def test_learned_methods_rank_by_the_minimum_of_their_objective(clustered, method) -> None:
    space = "image" if method == "svm" else "joint"
    rows = clustered[space]
    context = make_context(clustered, LEANING_TEXT, MANY_GOOD, ONE_BAD)
    ranking = get_method(method)(context, len(rows))
    direction = direction_of(ranking, rows)
    objective, start = reference_objective(method, rows)
    optimum = reference_minimum(objective, start)
    w = optimum[: rows.shape[1]]
    assert direction @ (w / np.linalg.norm(w)) > 1 - 1e-8
    assert_ranks_as([i for i, _ in ranking], rows, w, len(rows))
    # Ablation: the method is not its starting point (the text, or the mean image
    # marked good): replaced by it, the direction and the ranking change.
    plain = LEANING_TEXT if space == "joint" else rows[list(MANY_GOOD)].mean(axis=0)
    plain = plain / np.linalg.norm(plain)
    assert direction @ plain < 1 - 1e-6
    assert [i for i, _ in ranking] != brute_force(rows, plain, len(rows))


def test_svm_text_as_moll_writes_it_and_its_balanced_variant_differ(clustered) -> None:
    context = make_context(clustered, LEANING_TEXT, MANY_GOOD, ONE_BAD)
    literal = direction_of(get_method("svm-text")(context, 80), clustered["joint"])
    balanced = direction_of(get_method("svm-text-balanced")(context, 80), clustered["joint"])
    # Unit weights leave the thousand negatives' side heavy: w stays closer to the text.
    assert literal @ balanced < 1 - 1e-5
    assert literal @ LEANING_TEXT > balanced @ LEANING_TEXT


def test_pseudo_negatives_are_seeded_by_the_marks_and_leave_marked_images_out(vectors) -> None:
    context = make_context(vectors, None, (1, 2), (3,))
    first = feedback.pseudo_negatives(context, "joint", 40)
    again = feedback.pseudo_negatives(context, "joint", 40)
    np.testing.assert_array_equal(first, again)
    marked = vectors["joint"][[1, 2, 3]]
    assert not any(np.allclose(row, m) for row in first for m in marked)
    other = feedback.pseudo_negatives(make_context(vectors, None, (1, 5)), "joint", 40)
    assert not np.array_equal(first, other)


def test_svm_fusion_equals_z_score_fusion_computed_over_every_image(vectors) -> None:
    text = vectors["joint"][10].astype(np.float64)
    good, bad = (11, 12, 13), (40,)
    context = make_context(vectors, text, good, bad)
    ranking = get_method("svm-fusion")(context, 80)  # depth >= n: the union is everything
    positives, negatives = feedback.marked_examples(context, "image")
    random = feedback.pseudo_negatives(context, "image", feedback.PSEUDO_NEGATIVES)
    w = feedback.exemplar_svm(feedback.build_examples(positives, negatives, random), positives)
    by_image = vectors["image"].astype(np.float64) @ (w / np.linalg.norm(w))
    by_text = vectors["joint"].astype(np.float64) @ text

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / x.std()

    share = feedback.FUSION_TEXT_SHARE
    fused = (1 - share) * z(by_image) + share * z(by_text)
    expected = sorted(range(80), key=lambda i: (-fused[i], i))
    assert [i for i, _ in ranking] == expected
    np.testing.assert_allclose([s for _, s in ranking], fused[expected], atol=1e-4)


def test_fusion_scores_a_candidate_missing_from_one_list_by_its_exact_cosine(
    vectors, monkeypatch
) -> None:
    """The candidates are the union of two depth-5 lists; each part's cosine is
    standardised by its mean and spread over the collection (here every image: the
    sample is larger than the collection), not over the union."""
    monkeypatch.setattr(fusion, "FUSION_DEPTH", 5)
    text = vectors["joint"][10].astype(np.float64)
    image_query = vectors["image"][50].astype(np.float64)
    context = make_context(vectors)
    parts = [
        ("image", image_query.astype(np.float32), 0.6),
        ("joint", text.astype(np.float32), 0.4),
    ]
    ranking = fusion.fused_ranking(context, parts, 5)
    union = sorted(
        set(brute_force(vectors["image"], image_query, 5))
        | set(brute_force(vectors["joint"], text, 5))
    )
    all_image = vectors["image"].astype(np.float64) @ image_query
    all_text = vectors["joint"].astype(np.float64) @ text

    def z_over_collection(scores: np.ndarray) -> np.ndarray:
        return (scores[union] - scores.mean()) / scores.std()

    fused = 0.6 * z_over_collection(all_image) + 0.4 * z_over_collection(all_text)
    expected = sorted(range(len(union)), key=lambda i: (-fused[i], union[i]))[:5]
    assert [i for i, _ in ranking] == [union[i] for i in expected]
    np.testing.assert_allclose([s for _, s in ranking], fused[expected], atol=1e-4)
    # Standardised over the union instead, the scores would differ.
    over_union = 0.6 * (all_image[union] - all_image[union].mean()) / all_image[union].std()
    over_union += 0.4 * (all_text[union] - all_text[union].mean()) / all_text[union].std()
    assert not np.allclose(np.sort(over_union)[::-1][:5], [s for _, s in ranking], atol=1e-3)


def test_methods_that_need_a_good_image_say_so(vectors) -> None:
    with pytest.raises(InvalidQuery, match="marked good"):
        get_method("svm")(make_context(vectors, None, (), (3,)), 5)
    with pytest.raises(InvalidQuery):
        get_method("seesaw")(make_context(vectors, None, (), (3,)), 5)


def test_text_methods_without_marks_are_the_text_search(vectors) -> None:
    text = vectors["joint"][7].astype(np.float64)
    for method in ("svm-text", "svm-text-balanced", "seesaw", "seesaw-style", "svm-fusion"):
        ranking = get_method(method)(make_context(vectors, text), 10)
        assert_ranks_as([i for i, _ in ranking], vectors["joint"], text, 10)


def test_aqe_reranker_reorders_the_same_images_by_the_expanded_query(vectors) -> None:
    text = vectors["joint"][3].astype(np.float64)
    context = make_context(vectors, text)
    ranking = get_method("sum")(context, 40)
    reranked = get_reranker("aqe")(context, ranking)
    assert {i for i, _ in reranked} == {i for i, _ in ranking}
    ids = [i for i, _ in ranking]
    scores = alpha_qe_scores(
        np.array([s for _, s in ranking], np.float64), vectors["joint"][ids].astype(np.float64)
    )
    expected = [ids[i] for i in np.lexsort((ids, -scores))]
    assert [i for i, _ in reranked] == expected


def test_kreciprocal_reranker_keeps_the_images_and_scores_them_by_the_final_distance(
    vectors,
) -> None:
    text = vectors["joint"][3].astype(np.float64)
    context = make_context(vectors, text)
    ranking = get_method("sum")(context, 60)
    reranked = get_reranker("kreciprocal")(context, ranking)
    assert sorted(i for i, _ in reranked) == sorted(i for i, _ in ranking)
    scores = [s for _, s in reranked]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
