"""The product end to end over the demo's 14 sample photos (CC0 / public domain, from
scikit-image's wheel): these tests need no SPYGLASS_TEST_DATA, so a fresh clone anywhere
tests indexing, search by text, by image and by both, marks, incremental indexing, bad
input and the meaning of ``score`` with the real bundled model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from spyglass.cli import main
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.errors import ImageNotFound, InvalidQuery
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.store.index import Index


@pytest.fixture(scope="module")
def sample_index(
    sample_photos: Path, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Spyglass, Path]]:
    """The 14 sample photos indexed once through the engine (read-only for tests)."""
    index = Index.open_for_writing(tmp_path_factory.mktemp("sample-index"), bundled.info)
    engine = Spyglass(bundled, index)
    report = engine.add([str(sample_photos)])
    assert (report.added, report.embedded, len(report.skipped)) == (14, 14, 0)
    yield engine, sample_photos
    engine.close()


def names(results) -> list[str]:
    return [Path(r.path).name for r in results]


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cup of coffee", "coffee.png"),
        ("a cat", "chelsea-the-cat.png"),
        ("a horse", "horse.png"),
        ("a rocket launch", "rocket.jpg"),
        ("a brick wall", "brick.png"),
    ],
)
def test_text_search_finds_the_described_photo_first(sample_index, text, expected) -> None:
    engine, _ = sample_index
    assert names(engine.search(Query((TextTerm(text),), k=3)))[0] == expected


def test_image_search_finds_the_image_itself_then_others(sample_index) -> None:
    engine, folder = sample_index
    results = engine.search(Query((ImageTerm(path=str(folder / "horse.png")),), k=14))
    assert names(results)[0] == "horse.png" and results[0].score > 0.999
    assert len(results) == 14 and all(r.score < 0.99 for r in results[1:])


def test_image_and_text_moves_the_ranking_towards_the_text(sample_index) -> None:
    engine, folder = sample_index
    camera = ImageTerm(path=str(folder / "cameraman.png"), weight=0.5)
    alone = names(engine.search(Query((replace_weight(camera, 1.0),), k=14)))
    both = names(engine.search(Query((camera, TextTerm("a rocket launch", 0.5)), k=14)))
    # The text's ablation: without it the rocket is far down; with it, next to the query.
    assert alone.index("rocket.jpg") > 3
    assert both.index("rocket.jpg") <= 1 and "cameraman.png" in both[:2]


def replace_weight(term: ImageTerm, weight: float) -> ImageTerm:
    return ImageTerm(path=term.path, weight=weight)


def test_marks_move_images_up_and_down_but_leave_their_score(sample_index) -> None:
    engine, folder = sample_index
    horse = engine.index.catalogue.file(str(folder / "horse.png"))
    assert horse is not None
    text = (TextTerm("a cup of coffee"),)
    plain = engine.search(Query(text, k=14))
    good = engine.search(Query(text, k=14, positives=(horse.image_id,)))
    bad = engine.search(Query(text, k=14, negatives=(horse.image_id,)))
    assert names(plain).index("horse.png") > 0 and names(good)[0] == "horse.png"
    assert names(bad).index("horse.png") > names(plain).index("horse.png")
    # score answers "how close is this image to what was asked", marks or not.
    scores = [{r.image_id: r.score for r in results} for results in (plain, good, bad)]
    assert scores[1] == pytest.approx(scores[0], abs=1e-6)
    assert scores[2] == pytest.approx(scores[0], abs=1e-6)


def test_the_same_image_cannot_be_marked_good_and_bad(sample_index) -> None:
    engine, folder = sample_index
    horse = engine.index.catalogue.file(str(folder / "horse.png"))
    assert horse is not None
    with pytest.raises(InvalidQuery, match="both good and bad"):
        Query((TextTerm("a horse"),), positives=(horse.image_id,), negatives=(horse.image_id,))
    result = CliRunner().invoke(
        main,
        [
            *("search", "a horse", "--index", str(engine.index.folder)),
            *("--good", str(horse.image_id), "--bad", str(folder / "horse.png")),
        ],
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: an image cannot be marked both good and bad: #{horse.image_id}"
    ]


def test_score_is_the_cosine_with_the_query_whatever_the_method(sample_index, bundled) -> None:
    """``score`` is cos(image, normalize(sum of the query's weighted terms)) in the joint
    space for every method; ``rank_score`` is the method's own value."""
    engine, folder = sample_index
    camera = folder / "cameraman.png"
    terms = (ImageTerm(path=str(camera), weight=0.5), TextTerm("a rocket launch", 0.5))
    space = bundled.info.text_space
    owner = engine.index.catalogue.file(str(camera))
    assert owner is not None
    store = engine.index.stores[space]
    query = unit(
        0.5 * store.fetch(np.array([owner.image_id]))[0].astype(np.float64)
        + 0.5 * bundled.embed_texts(["a rocket launch"])[0].astype(np.float64)
    )
    by_method = {}
    for method in ("sum", "late-fusion", "slerp"):
        results = engine.search(Query(terms, k=14, method=method, rerank="none"))
        by_method[method] = {r.image_id: r for r in results}
        for r in results:
            expected = float(store.fetch(np.array([r.image_id]))[0].astype(np.float64) @ query)
            assert r.score == pytest.approx(expected, abs=1e-4)
    # Late fusion ranks by fused z-scores, which are no cosines; the scores still are.
    fused = [r.rank_score for r in by_method["late-fusion"].values()]
    assert max(fused) > 1.0
    for image_id, result in by_method["late-fusion"].items():
        assert result.score == pytest.approx(by_method["sum"][image_id].score, abs=1e-5)


def test_min_score_filters_on_the_cosine_for_every_method(sample_index) -> None:
    engine, folder = sample_index
    terms = (ImageTerm(path=str(folder / "cameraman.png"), weight=0.5), TextTerm("a rocket", 0.5))
    everything = engine.search(Query(terms, k=14, method="sum", rerank="none"))
    cut = sorted(r.score for r in everything)[-3]  # keep the best three by cosine
    for method in ("sum", "late-fusion"):
        kept = engine.search(Query(terms, k=14, method=method, rerank="none", min_score=cut))
        assert {r.image_id for r in kept} == {r.image_id for r in everything if r.score >= cut}


def test_json_has_score_and_rank_score(sample_index) -> None:
    engine, folder = sample_index
    result = CliRunner().invoke(
        main,
        [
            *("search", "a rocket", "--image", str(folder / "cameraman.png")),
            *("--index", str(engine.index.folder), "--json", "-k", "3"),
        ],
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert all({"id", "path", "score", "rank_score"} <= hit.keys() for hit in hits)
    assert all(-1.0 <= hit["score"] <= 1.0 for hit in hits)
    ranks = [hit["rank_score"] for hit in hits]
    assert ranks == sorted(ranks, reverse=True)


def test_incremental_indexing_embeds_only_what_changed(
    sample_photos: Path, bundled: Encoder, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(sample_photos, folder)
    index_dir = tmp_path / "index"
    with Spyglass(bundled, Index.open_for_writing(index_dir, bundled.info)) as engine:
        first = engine.add([str(folder)])
    assert (first.added, first.embedded) == (14, 14)

    (folder / "horse.png").unlink()
    (folder / "coins.png").rename(folder / "old-coins.png")
    shutil.copy2(folder / "rocket.jpg", folder / "rocket-copy.jpg")
    with Spyglass(bundled, Index.open_for_writing(index_dir, bundled.info)) as engine:
        second = engine.add([str(folder)])
        found = {p for r in engine.search(Query((TextTerm("a photo"),), k=50)) for p in r.paths}
        rockets = engine.search(Query((ImageTerm(path=str(folder / "rocket.jpg")),), k=1))
        # The O(1) count agrees with the catalogue's full count, and the images the
        # commits marked dead are exactly those a full recomputation finds.
        assert engine.index.count() == engine.status().unique_images == 13
        with engine.index.catalogue.transaction():
            assert engine.index.catalogue.refresh_alive() == (set(), set())
        third = engine.add([str(folder)])
    assert second.embedded == 0, "a rename and a copy are recognised by their bytes"
    assert (second.removed, second.linked) == (2, 2)
    assert str(folder / "horse.png") not in found and str(folder / "old-coins.png") in found
    assert set(rockets[0].paths) == {str(folder / "rocket.jpg"), str(folder / "rocket-copy.jpg")}
    assert (third.added, third.embedded, third.removed, third.unchanged) == (0, 0, 0, 14)


def test_bad_files_are_skipped_with_a_reason_and_indexing_goes_on(
    sample_photos: Path, bundled: Encoder, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee.png", "rocket.jpg"):
        shutil.copy2(sample_photos / name, folder / name)
    (folder / "notes.jpg").write_text("not an image", encoding="utf-8")
    (folder / "empty.png").write_bytes(b"")
    data = (sample_photos / "horse.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 3])
    with Spyglass(bundled, Index.open_for_writing(tmp_path / "index", bundled.info)) as engine:
        report = engine.add([str(folder)])
        skipped = {Path(s.path).name: s.reason for s in engine.status().skipped_files}
        with pytest.raises(ImageNotFound):
            engine.search(Query((ImageTerm(path=str(folder / "missing.jpg")),)))
        with pytest.raises(InvalidQuery):
            ImageTerm(path=str(folder / "coffee.png"), region=(0.5, 0.5, 0.2, 0.9))
    assert (report.added, len(report.skipped)) == (2, 3)
    assert set(skipped) == {"notes.jpg", "empty.png", "truncated.png"}
    assert all(reason for reason in skipped.values())


def test_info_says_how_each_space_is_searched(sample_index) -> None:
    engine, _ = sample_index
    search = engine.status().search
    assert set(search) == set(engine.encoder.info.spaces)
    assert all(method["kind"] == "exact" and method["rows"] == 14 for method in search.values())


def test_a_text_search_loads_no_image_model(sample_photos_index: Path, runtime) -> None:
    from spyglass.encoders import load_encoder

    encoder = load_encoder("bundled", runtime)  # a fresh one: nothing embedded yet
    with Spyglass(encoder, Index.open(sample_photos_index)) as engine:
        assert names(engine.search(Query((TextTerm("a cat"),), k=1))) == ["chelsea-the-cat.png"]
        assert not encoder.image_model_loaded  # type: ignore[attr-defined]
        pixels = encoder.preprocess(Image.new("RGB", (64, 64), (200, 30, 30)))
        encoder.embed_pixels(pixels[None])  # what an uploaded query image needs
        assert encoder.image_model_loaded  # type: ignore[attr-defined]
