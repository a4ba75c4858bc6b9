"""The registered feedback methods and re-rankers on a small in-memory index of
hand-made vectors, against brute-force rankings computed directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spyglass.encoders.base import EncoderInfo
from spyglass.errors import InvalidQuery
from spyglass.query import feedback
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


@pytest.mark.parametrize("method", ["svm", "svm-text", "seesaw"])
def test_learned_methods_rank_by_their_fitted_direction(vectors, method) -> None:
    text = vectors["joint"][0].astype(np.float64)
    good, bad = (1, 2, 4), (60,)
    context = make_context(vectors, text, good, bad)
    space = "image" if method == "svm" else "joint"
    # The training set the method builds: marked images plus seeded pseudo-negatives.
    positives, negatives = feedback.marked_examples(context, space)
    random = feedback.pseudo_negatives(context, space, feedback.PSEUDO_NEGATIVES)
    examples = feedback.build_examples(positives, negatives, random)
    text = feedback.text_query(context, "joint")  # as the method sees it (float32)
    if method == "svm":
        w = feedback.exemplar_svm(examples, positives)
    elif method == "svm-text":
        w = feedback.svm_with_text(examples, text)
    else:
        w = feedback.seesaw_vector(examples, text)
    ranking = get_method(method)(context, 25)
    assert_ranks_as([i for i, _ in ranking], vectors[space], w, 25)
    # Scores are cosines with the unit w (up to the optimiser's tolerance).
    scores = np.array([s for _, s in ranking])
    np.testing.assert_allclose(
        scores, np.sort(vectors[space] @ (w / np.linalg.norm(w)))[::-1][:25], atol=1e-5
    )


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
    monkeypatch.setattr(feedback, "FUSION_DEPTH", 5)
    text = vectors["joint"][10].astype(np.float64)
    image_query = vectors["image"][50].astype(np.float64)
    context = make_context(vectors)
    parts = [
        ("image", image_query.astype(np.float32), 0.6),
        ("joint", text.astype(np.float32), 0.4),
    ]
    ranking = feedback.fused_ranking(context, parts, 5)
    union = sorted(
        set(brute_force(vectors["image"], image_query, 5))
        | set(brute_force(vectors["joint"], text, 5))
    )
    by_image = vectors["image"][union].astype(np.float64) @ image_query
    by_text = vectors["joint"][union].astype(np.float64) @ text
    fused = 0.6 * feedback.zscores(by_image) + 0.4 * feedback.zscores(by_text)
    expected = sorted(range(len(union)), key=lambda i: (-fused[i], union[i]))[:5]
    assert [i for i, _ in ranking] == [union[i] for i in expected]


def test_methods_that_need_a_good_image_say_so(vectors) -> None:
    with pytest.raises(InvalidQuery, match="marked good"):
        get_method("svm")(make_context(vectors, None, (), (3,)), 5)
    with pytest.raises(InvalidQuery):
        get_method("seesaw")(make_context(vectors, None, (), (3,)), 5)


def test_text_methods_without_marks_are_the_text_search(vectors) -> None:
    text = vectors["joint"][7].astype(np.float64)
    for method in ("svm-text", "seesaw", "svm-fusion"):
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
