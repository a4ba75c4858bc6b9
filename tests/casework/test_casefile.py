"""Case files: what a search exported holds (checked against hashes computed here),
and `spyglass verify` telling an unchanged case from a changed file, an edited score
and an edited result."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.casework.casefile import CaseFile, content_digest
from spyglass.casework.queryspec import MAX_RECORDED_K, SearchSpec
from spyglass.cli import main
from spyglass.errors import InvalidQuery

from .conftest import EditedCollection


def export(index: Path, target: Path, *args: str) -> dict:
    result = CliRunner().invoke(
        main, ["search", *args, "--index", str(index), "--export", str(target)]
    )
    assert result.exit_code == 0, result.output
    return json.loads(target.read_text()) if target.suffix == ".json" else {}


def verify(index: Path, case: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify", str(case), "--index", str(index)])
    return result.exit_code, result.stdout


def test_json_case_file_holds_query_model_index_and_file_hashes(
    edited_index: Path, edited: EditedCollection, tmp_path: Path
) -> None:
    query_image = edited.by_class["watch"][2]
    outside = tmp_path / "query.jpg"  # a query image outside the index: copied in
    outside.write_bytes(query_image.read_bytes())
    before = datetime.now(UTC).replace(microsecond=0)
    case = export(
        edited_index,
        tmp_path / "case.json",
        "a wrist watch",
        "--image",
        str(outside),
        "--region",
        "0.1,0.1,0.9,0.9",
        "--not",
        "a flower",
        "-k",
        "6",
    )
    assert case["case_file"] == 1 and case["tool"]["version"] == version("spyglass")
    assert before <= datetime.fromisoformat(case["searched_at"]) <= datetime.now(UTC)
    assert case["model_name"] == "bundled" and case["model_version"]
    assert case["index_state"]["files"] == sum(1 for p in edited.root.rglob("*") if p.is_file())
    terms = case["search"]["terms"]
    image = next(t["image"] for t in terms if "image" in t)
    assert image["sha256"] == hashlib.sha256(outside.read_bytes()).hexdigest()
    assert base64.b64decode(image["copy"]) == outside.read_bytes()
    assert image["region"] == [0.1, 0.1, 0.9, 0.9]
    assert {"text": "a flower", "weight": -0.5} in terms
    assert case["search"]["filters"] == {} and case["count"] == 6
    for result in case["results"]:
        data = Path(result["path"]).read_bytes()
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        assert result["md5"] == hashlib.md5(data).hexdigest()
    assert [r["rank"] for r in case["results"]] == list(range(1, 7))
    digest = case.pop("digest")
    assert digest == content_digest(case)


def test_csv_case_file_is_flat_and_formula_safe(edited_index: Path, tmp_path: Path) -> None:
    export(edited_index, tmp_path / "case.json", "a sunflower", "-k", "3", "--good", "0")
    export(edited_index, tmp_path / "case.csv", "a sunflower", "-k", "3", "--good", "0")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "case.csv").read_text())))
    document = json.loads((tmp_path / "case.json").read_text())
    assert [r["path"] for r in rows] == [r["path"] for r in document["results"]]
    assert [r["sha256"] for r in rows] == [r["sha256"] for r in document["results"]]
    assert [r["mark"] for r in rows] == [r["mark"] or "" for r in document["results"]]
    assert json.loads(rows[0]["search"])["marks"]["good"] == [0]
    assert rows[0]["index_digest"] == document["index_state"]["digest"]
    # A file named like a formula stays text in a spreadsheet.
    case = CaseFile.from_json((tmp_path / "case.json").read_text())
    crafted = replace(case.results[0], path='=HYPERLINK("http://x")', paths=("=x",))
    flat = replace(case, results=(crafted,)).to_csv()
    assert next(csv.DictReader(io.StringIO(flat)))["path"] == '\'=HYPERLINK("http://x")'


def test_verify_an_unchanged_case(edited_index: Path, tmp_path: Path) -> None:
    case = tmp_path / "case.json"
    export(edited_index, case, "a sunflower", "-k", "5", "--collapse-duplicates")
    status, out = verify(edited_index, case)
    assert status == 0, out
    assert out.startswith("verified: the search gives the same 5 results")


def test_verify_finds_an_edited_score_and_an_edited_result(
    edited_index: Path, tmp_path: Path
) -> None:
    case = tmp_path / "case.json"
    document = export(edited_index, case, "a starfish", "-k", "5")
    edited_score = json.loads(json.dumps(document))
    edited_score["results"][2]["score"] += 0.05
    (tmp_path / "score.json").write_text(json.dumps(edited_score))
    status, out = verify(edited_index, tmp_path / "score.json")
    assert status == 6 and "edited after export" in out and "rank 3:" in out

    # A careful forger swaps two results and recomputes the digest: the search run
    # again still tells.
    swapped = json.loads(json.dumps(document))
    results = swapped["results"]
    results[0]["id"], results[1]["id"] = results[1]["id"], results[0]["id"]
    swapped.pop("digest")
    swapped["digest"] = content_digest(swapped)
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    status, out = verify(edited_index, tmp_path / "swapped.json")
    assert status == 6 and "edited after export" not in out
    assert "rank 1:" in out and "rank 2:" in out


def test_verify_finds_a_changed_file(
    own_collection: tuple[EditedCollection, Path], tmp_path: Path
) -> None:
    _, index = own_collection
    case = tmp_path / "case.json"
    document = export(index, case, "a grand piano", "-k", "4")
    changed = Path(document["results"][1]["path"])
    changed.write_bytes(changed.read_bytes() + b"\0")  # one byte more: the same picture
    status, out = verify(index, case)
    assert status == 7, out
    assert f"rank 2: {changed} changed since the export" in out
    changed.unlink()
    status, out = verify(index, case)
    assert status == 7 and f"{changed} is missing" in out


def test_verify_refuses_what_is_not_a_case_file(edited_index: Path, tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"results": []}')
    result = CliRunner().invoke(
        main, ["verify", str(tmp_path / "other.json"), "--index", str(edited_index)]
    )
    assert result.exit_code == 2 and "not a case file" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_verify_tells_a_search_that_cannot_run_again_and_a_missing_digest(
    edited_index: Path, edited: EditedCollection, tmp_path: Path
) -> None:
    case = tmp_path / "case.json"
    document = export(edited_index, case, "--image", str(edited.by_class["starfish"][1]), "-k", "3")
    image = document["search"]["terms"][0]["image"]
    assert image["kind"] == "indexed" and "copy" not in image  # its stored vectors
    image["image_id"] = 10**9  # an image this index never held
    document.pop("digest")
    (tmp_path / "gone.json").write_text(json.dumps(document))
    status, out = verify(edited_index, tmp_path / "gone.json")
    assert status == 6
    assert "the case file carries no digest" in out
    assert f"the search cannot be run again: no indexed image has id {10**9}" in out


def test_a_recorded_search_asking_for_too_many_results_is_refused_before_it_runs() -> None:
    """A forged k of 10^12 would make the search allocate terabytes: ``spyglass verify``
    and saved searches refuse it when they read the recorded search."""
    recorded = {"terms": [], "k": 10, "offset": 0}
    assert SearchSpec.from_json(recorded).k == 10
    for forged in ({"k": 10**12}, {"k": MAX_RECORDED_K + 1}, {"k": 0}, {"offset": 10**12}):
        with pytest.raises(InvalidQuery, match="at most"):
            SearchSpec.from_json({**recorded, **forged})
