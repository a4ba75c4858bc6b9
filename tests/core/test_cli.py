"""The CLI contract scripts rely on: names, JSON fields, exit codes, summaries."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.cli import main


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory, photos) -> tuple[Path, Path, list[dict[str, str]]]:
    """The 42 captioned photos, indexed through the CLI."""
    folder = photos.root
    index_dir = tmp_path_factory.mktemp("photos-index")
    result = CliRunner().invoke(main, ["index", str(folder / "images"), "--index", str(index_dir)])
    assert result.exit_code == 0, result.output
    assert "indexed: 42 new" in result.stdout
    return folder, index_dir, photos.rows


def search(index_dir: Path, *args: str) -> list[dict]:
    result = CliRunner().invoke(main, ["search", *args, "--index", str(index_dir), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_text_search_json_contract(photo_index):
    folder, index_dir, _ = photo_index
    hits = search(index_dir, "a cup of coffee", "-k", "5")
    assert len(hits) == 5
    for hit in hits:
        assert {"path", "score", "id", "paths", "width", "height"} <= hit.keys()
        assert os.path.isabs(hit["path"]) and Path(hit["path"]).is_file()
        assert Path(hit["path"]).parent == (folder / "images").resolve()
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_image_search_finds_the_image_itself_first(photo_index):
    folder, index_dir, rows = photo_index
    query = folder / rows[5]["path"]
    hits = search(index_dir, "--image", str(query), "-k", "3")
    assert hits[0]["path"] == str(query) and hits[0]["score"] > 0.99


def test_image_and_text_search_moves_towards_the_text(photo_index, tmp_path: Path):
    folder, index_dir, rows = photo_index
    query = tmp_path / "query.jpg"  # not indexed: embedded at query time
    shutil.copy(folder / rows[0]["path"], query)
    alone = search(index_dir, "--image", str(query), "-k", "42")
    combined = search(
        index_dir, "a cup of coffee", "--image", str(query), "--image-weight", "0.3", "-k", "42"
    )
    text = search(index_dir, "a cup of coffee", "-k", "42")
    rank = lambda hits, path: [h["path"] for h in hits].index(path)  # noqa: E731
    best_for_text = text[0]["path"]
    assert rank(combined, best_for_text) < rank(alone, best_for_text)
    assert {h["path"] for h in combined} == {h["path"] for h in alone}  # a ranking of all 42


def test_weighted_terms_and_negatives(photo_index):
    _, index_dir, _ = photo_index
    plain = search(index_dir, "a cup of coffee", "-k", "42")
    pushed = search(index_dir, "a cup of coffee", "--not", "water", "--not-weight", "2", "-k", "42")
    assert [h["path"] for h in plain] != [h["path"] for h in pushed]
    same = search(index_dir, "2:a cup of coffee", "-k", "42")
    assert [h["path"] for h in same] == [h["path"] for h in plain]  # one term: weight is scale


def test_top_k_offset_and_min_score(photo_index):
    _, index_dir, _ = photo_index
    ten = search(index_dir, "a dock by the water", "-k", "10")
    page = search(index_dir, "a dock by the water", "-k", "5", "--offset", "5")
    assert [h["path"] for h in page] == [h["path"] for h in ten[5:]]
    threshold = ten[3]["score"] - 1e-5  # JSON scores are rounded to 6 places
    above = search(index_dir, "a dock by the water", "-k", "10", "--min-score", str(threshold))
    assert all(h["score"] >= threshold for h in above) and len(above) >= 4


def test_plain_output_is_score_id_then_path(photo_index):
    _, index_dir, _ = photo_index
    result = CliRunner().invoke(main, ["search", "a bridge", "--index", str(index_dir), "-k", "2"])
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    score, image_id, path = lines[0].split(maxsplit=2)
    first = search(index_dir, "a bridge", "-k", "1")[0]
    assert float(score) and Path(path).is_file() and path == first["path"]
    assert image_id == f"#{first['id']}"  # what --good and --bad take


def test_info_json_contract(photo_index):
    _, index_dir, _ = photo_index
    result = CliRunner().invoke(main, ["info", "--index", str(index_dir), "--json"])
    info = json.loads(result.stdout)
    assert info["images"] == 42 and info["skipped"] == 0 and info["model"] == "bundled"
    assert info["spaces"] == {"joint": 384, "image": 1280}
    text = CliRunner().invoke(main, ["info", "--index", str(index_dir)]).stdout
    assert "42 files" in text and "bundled" in text


def test_reindex_prints_a_summary_of_nothing_new(photo_index):
    folder, index_dir, _ = photo_index
    result = CliRunner().invoke(
        main, ["index", str(folder / "images"), "--index", str(index_dir), "--json"]
    )
    summary = json.loads(result.stdout)
    assert summary["unchanged"] == 42 and summary["embedded"] == 0


def test_models_lists_the_bundled_model_and_methods():
    result = CliRunner().invoke(main, ["models", "--json"])
    listing = json.loads(result.stdout)
    assert "bundled" in listing["models"] and "sum" in listing["methods"]


def test_demo_runs_the_quick_start_job(tmp_path: Path):
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "indexed: 14 new" in result.stdout
    assert "Search by text" in result.stdout and "Search by image and text" in result.stdout
    # The text search for coffee puts the coffee photo first.
    lines = result.stdout.splitlines()
    first_hit = lines[lines.index(next(line for line in lines if "a cup of coffee" in line)) + 1]
    assert first_hit.strip().endswith("coffee.png")


def test_rankings_longer_than_the_rerank_depth_keep_falling(caltech_engine):
    from spyglass.query.terms import Query, TextTerm

    engine, _ = caltech_engine
    ranking = engine.searcher.rank(
        Query((TextTerm("a photo of a dog"),), k=1000, rerank="kreciprocal")
    )
    scores = [score for _, score in ranking]
    assert len(scores) == 1000
    assert all(a > b for a, b in itertools.pairwise(scores)), "strictly decreasing"
