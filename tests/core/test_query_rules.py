"""The rules of writing and composing queries (pure logic: no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spyglass.cli.searching import build_terms
from spyglass.errors import InvalidQuery
from spyglass.query.methods import EmbeddedTerm, weighted_sum
from spyglass.query.terms import ImageTerm, Query, TextTerm, check_region, parse_terms

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
phrases = st.lists(words, min_size=1, max_size=4).map(" ".join)
weights = st.floats(min_value=0.1, max_value=20, allow_nan=False).map(lambda w: round(w, 2))


def test_rclip_example():
    terms = parse_terms('"2:golden retriever" + ./pool.jpg - fruit')
    assert terms == [
        TextTerm("golden retriever", 2.0),
        ImageTerm(path="./pool.jpg", weight=1.0),
        TextTerm("fruit", -1.0),
    ]


@given(st.lists(st.tuples(st.sampled_from("+-"), weights, phrases), min_size=1, max_size=5))
def test_written_terms_come_back_with_their_signs_and_weights(parts):
    written = " ".join(f"{sign} {weight}:{phrase}" for sign, weight, phrase in parts)
    terms = parse_terms(written)
    assert [(t.text, t.weight) for t in terms] == [
        (phrase, weight if sign == "+" else -weight) for sign, weight, phrase in parts
    ]


@given(phrases)
def test_hyphens_inside_words_are_not_operators(phrase):
    text = f"t-shirt {phrase} x-ray"
    assert parse_terms(text) == [TextTerm(text)]


def test_image_terms_are_recognised_by_existing_files_and_path_shapes(tmp_path: Path):
    (tmp_path / "cat.png").write_bytes(b"x")
    terms = parse_terms("cat.png + dog.png + ~/pics/a.JPG + /abs/b.webp", cwd=tmp_path)
    assert terms == [
        ImageTerm(path="cat.png"),
        TextTerm("dog.png"),  # no such file and not path-shaped: it is words
        ImageTerm(path="~/pics/a.JPG"),
        ImageTerm(path="/abs/b.webp"),
    ]


def test_a_weight_needs_a_term():
    with pytest.raises(InvalidQuery):
        parse_terms("2:")


def test_clock_times_are_not_weights():
    assert parse_terms("10:30 on the clock") == [TextTerm("10:30 on the clock")]


@given(st.floats(0, 1), phrases)
def test_image_weight_splits_between_image_and_text(share, phrase):
    terms = build_terms(phrase, ("q.jpg",), (), share, 0.5, None)
    image = [t for t in terms if isinstance(t, ImageTerm)]
    text = [t for t in terms if isinstance(t, TextTerm)]
    assert image[0].weight == pytest.approx(share)
    assert text[0].weight == pytest.approx(1 - share)


@given(phrases, st.lists(phrases, min_size=1, max_size=3), st.floats(0.01, 5))
def test_negative_terms_get_minus_the_negative_weight(phrase, negatives, weight):
    terms = build_terms(phrase, (), tuple(negatives), 0.5, weight, None)
    assert [t.weight for t in terms[1:]] == [-weight] * len(negatives)
    assert terms[0].weight == 1.0  # no image: text keeps its own weight


def test_region_applies_to_every_image_term():
    terms = build_terms("carpet", ("a.jpg", "b.jpg"), (), 0.5, 0.5, (0.0, 0.5, 1.0, 1.0))
    assert [t.region for t in terms if isinstance(t, ImageTerm)] == [(0.0, 0.5, 1.0, 1.0)] * 2


@given(st.lists(st.floats(-0.5, 1.5), min_size=4, max_size=4))
def test_regions_inside_the_unit_square_only(values):
    left, top, right, bottom = values
    valid = all(0 <= v <= 1 for v in values) and right - left >= 0.01 and bottom - top >= 0.01
    if valid:
        assert check_region(values) == tuple(values)
    else:
        with pytest.raises(InvalidQuery):
            check_region(values)


def test_queries_need_something_positive():
    with pytest.raises(InvalidQuery):
        Query(())
    with pytest.raises(InvalidQuery):
        Query((TextTerm("dogs", -1.0),))
    with pytest.raises(InvalidQuery):
        Query((TextTerm("dogs"),), k=0)
    assert Query((), positives=(3,)).positives == (3,)


unit_vectors = (
    st.lists(st.floats(-1, 1), min_size=3, max_size=3)
    .filter(lambda v: np.linalg.norm(v) > 0.1)
    .map(lambda v: np.asarray(v, np.float32) / np.linalg.norm(v))
)


@given(st.lists(st.tuples(unit_vectors, st.floats(-3, 3)), min_size=1, max_size=4))
def test_weighted_sum_is_the_normalised_weighted_sum(pairs):
    terms = [EmbeddedTerm("text", w, {"joint": v}) for v, w in pairs]
    total = sum(w * v for v, w in pairs)
    if np.linalg.norm(total) < 1e-6:
        with pytest.raises(InvalidQuery):
            weighted_sum(terms, "joint")
        return
    np.testing.assert_allclose(
        weighted_sum(terms, "joint"), total / np.linalg.norm(total), atol=1e-5
    )


@given(unit_vectors, st.floats(0.1, 10))
def test_scaling_all_weights_keeps_the_direction(vector, scale):
    one = weighted_sum([EmbeddedTerm("text", 1.0, {"joint": vector})], "joint")
    scaled = weighted_sum([EmbeddedTerm("text", scale, {"joint": vector})], "joint")
    np.testing.assert_allclose(one, scaled, atol=1e-6)


@given(st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_the_kind_of_query_decides_what_default_means(image, text, good, negative_text):
    from spyglass.query.methods import DEFAULT_METHODS, resolve_method
    from spyglass.query.rerank import resolve_reranker

    terms = ([ImageTerm(path="q.jpg")] if image else []) + ([TextTerm("a cat")] if text else [])
    terms += [TextTerm("dogs", -1.0)] if negative_text else []
    if not (image or text or good):
        return
    query = Query(tuple(terms), positives=(1,) if good else ())
    expected = (
        "feedback" if good else "image+text" if image and text else "image" if image else "text"
    )
    assert query.task == expected  # negative terms never change the kind
    assert resolve_method("default", expected) == DEFAULT_METHODS[expected]
    assert resolve_method("slerp", expected) == "slerp"
    assert resolve_reranker("none", expected) == "none"
    assert resolve_reranker("default", expected) in ("none", "aqe", "kreciprocal")
