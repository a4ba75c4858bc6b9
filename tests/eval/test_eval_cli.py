"""Every protocol end to end through the CLI (in-process), on small real subsets with the
real bundled model; the JSON is parsed and checked for sane values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spyglass.cli import main
from spyglass.query.methods import method_names
from spyglass.query.rerank import reranker_names


def run_eval(*args: str, expect: int = 0) -> Any:
    result = CliRunner().invoke(main, ["eval", *args])
    assert result.exit_code == expect, result.output + str(result.exception)
    if expect == 0 and "--json" in args:
        return json.loads(result.stdout)
    return result


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["method"]: r for r in report["results"]}


def check_sane(report: dict[str, Any], protocol: str, images: int) -> None:
    assert report["protocol"] == protocol
    assert report["model"] == "bundled"
    assert report["collection"]["images"] == images
    assert report["results"], report["notes"]
    for row in report["results"]:
        for name, value in row["metrics"].items():
            assert 0.0 <= value <= 1.0, (row["method"], name, value)
        low, high = row["mAP_ci95"]
        assert low <= row["metrics"]["mAP"] <= high
        assert row["seconds_per_query"] > 0


def test_text_protocol_on_five_caltech_classes(small_caltech) -> None:
    report = run_eval("text", *small_caltech.cli_args(), "--json")
    # 68 rows: background and Faces_easy are left out by the caltech101 rules.
    check_sane(report, "text", images=60)
    assert report["collection"]["rows_left_out"] == 8
    assert report["settings"]["templates"] == ["a photo of a {}"]
    assert set(rows(report)) == set(method_names("text"))
    baseline = rows(report)["sum"]
    assert baseline["queries"] == 5
    # Chance is about 12/60 = 0.2; the bundled model is far better on these classes.
    assert baseline["metrics"]["mAP"] > 0.6

    # Relevance feedback's round 0 is the same text query: the same APs.
    feedback = run_eval(
        "feedback", *small_caltech.cli_args(), "--rounds", "2", "--per-round", "5", "--json"
    )
    check_sane(feedback, "feedback", images=60)
    assert set(rows(feedback)) == set(method_names("feedback")) - {
        note.split(":")[0] for note in feedback["notes"] if "not applicable" in note
    }
    summed = rows(feedback)["sum"]["metrics"]
    assert summed["mAP r0"] == pytest.approx(baseline["metrics"]["mAP"])
    assert summed["mAP r2"] == pytest.approx(summed["mAP"])
    assert 0.0 < summed["P@shown"] <= 1.0


def test_image_protocol_is_seeded(small_caltech) -> None:
    reranks = [r for r in reranker_names() if r != "none"][:1]
    extra = [arg for r in reranks for arg in ("--rerank", r)]
    base = ["image", *small_caltech.cli_args(), "--sample", "20", "--json"]
    args = [*base, "--seed", "3"]
    first = run_eval(*args, *extra)
    check_sane(first, "image", images=60)
    assert first["settings"]["sample"] == 20
    assert rows(first)["sum"]["queries"] == 20
    assert rows(first)["sum"]["metrics"]["mAP"] > 0.5  # chance is about 11/59
    for rerank in reranks:
        assert f"sum+{rerank}" in rows(first)
    again = run_eval(*args, *extra)
    for name, row in rows(first).items():
        assert rows(again)[name]["metrics"] == row["metrics"]
        assert rows(again)[name]["mAP_ci95"] == row["mAP_ci95"]
    other_seed = run_eval(*base, "--seed", "4", "--method", "sum")
    assert other_seed["results"][0]["metrics"] != rows(first)["sum"]["metrics"]


def test_fewshot_protocol_compares_exemplars_text_and_learned_methods(small_caltech) -> None:
    report = run_eval("fewshot", *small_caltech.cli_args(), "--shots", "3", "--json")
    check_sane(report, "fewshot", images=60)
    names = set(rows(report))
    assert {"image kNN", "text", "sum + text"} <= names
    skipped = {note.split(":")[0] for note in report["notes"]}
    for method in set(method_names("feedback")) - {"sum"}:
        assert method in names | skipped
        assert f"{method} + text" in names | skipped
    for row in report["results"]:
        assert row["queries"] == 5
    # Each class's win is shared out among the approaches with the best AP.
    assert sum(r["metrics"]["wins"] for r in report["results"]) == pytest.approx(1.0, abs=1e-5)


def test_composed_protocol_on_fashion_colours(small_fashion) -> None:
    report = run_eval("composed", *small_fashion.cli_args(), "--queries", "30", "--json")
    check_sane(report, "composed", images=len(small_fashion.rows))
    assert report["settings"]["attribute"] == "baseColour"
    assert report["settings"]["modifier"] == "in {}"
    names = set(rows(report))
    assert {"image only", "text only"} <= names
    skipped = {note.split(":")[0] for note in report["notes"]}
    assert set(method_names("image+text")) <= names | skipped
    for row in report["results"]:
        assert row["queries"] == 30
        m = row["metrics"]
        assert m["hit@1"] <= m["hit@5"] <= m["hit@10"] <= m["hit@50"]


def test_composed_protocol_on_pacs_domains_with_a_plot(small_pacs, tmp_path: Path) -> None:
    plot = tmp_path / "curves.png"
    report = run_eval(
        "composed",
        *small_pacs.cli_args(),
        "--queries",
        "20",
        "--method",
        "sum",
        "--plot",
        str(plot),
        "--json",
    )
    check_sane(report, "composed", images=45)
    assert report["settings"]["modifier"] == "as a {}"
    assert list(rows(report)) == ["image only", "text only", "sum"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 10_000


def test_caption_protocol_on_the_photos(photos_set) -> None:
    report = run_eval("caption", *photos_set.cli_args(), "--json")
    check_sane(report, "caption", images=42)
    baseline = rows(report)["sum"]
    assert baseline["queries"] == 42
    # Chance of the right photo in the top 10 of 42 is 0.24.
    assert baseline["metrics"]["hit@10"] > 0.4
    assert baseline["metrics"]["hit@1"] <= baseline["metrics"]["hit@10"]


def test_table_output_names_every_column(small_caltech) -> None:
    result = run_eval("text", *small_caltech.cli_args(), "--method", "sum")
    for heading in ("mAP", "P@10", "mAP 95% CI", "ms/query", "sum"):
        assert heading in result.stdout


def test_qrels_on_the_users_own_judgements(small_caltech) -> None:
    airplanes = [r["path"] for r in small_caltech.rows if r["label"] == "airplanes"]
    bikes = [r["path"] for r in small_caltech.rows if r["label"] == "Motorbikes"]
    qrels = small_caltech.folder / "judged.jsonl"
    lines = [
        "# my judgements",
        json.dumps({"name": "planes", "query": "an airplane", "relevant": airplanes}),
        json.dumps({"name": "bikes", "image": bikes[0], "relevant": bikes[1:]}),
        json.dumps({"name": "nothing", "query": "a unicorn", "relevant": []}),
        "",
    ]
    qrels.write_text("\n".join(lines), encoding="utf-8")
    report = run_eval(
        "qrels",
        "--qrels",
        str(qrels),
        "--data",
        str(small_caltech.folder),
        "--index",
        str(small_caltech.index_dir),
        "--per-query",
        "--json",
    )
    assert report["protocol"] == "qrels"
    # The whole index is the collection: the 8 rows left out by labels.csv rules count too.
    assert report["collection"]["images"] == 68
    assert report["settings"]["tasks"] == ["image", "text"]
    baseline = rows(report)["sum"]
    assert baseline["queries"] == 2
    assert baseline["excluded_queries"] == 1
    assert set(baseline["per_query_ap"]) == {"planes", "bikes"}
    assert baseline["metrics"]["mAP"] > 0.6

    bad = small_caltech.folder / "bad.jsonl"
    bad.write_text(json.dumps({"query": "x", "relevant": ["images/nope.jpg"]}), "utf-8")
    failed = run_eval(
        "qrels", "--qrels", str(bad), "--index", str(small_caltech.index_dir), expect=2
    )
    assert "line 1" in failed.output and "images/nope.jpg" in failed.output
    assert "Traceback" not in failed.output


def test_bad_input_is_one_line_and_exit_status_2(small_caltech, tmp_path: Path) -> None:
    unlabelled = tmp_path / "plain"
    unlabelled.mkdir()
    cases = [
        (["text", "--data", str(unlabelled)], "labels.csv"),
        (["text", *small_caltech.cli_args(), "--label", "colour"], "no column 'colour'"),
        (["text", *small_caltech.cli_args(), "--method", "no-such"], "unknown method"),
        (["composed", *small_caltech.cli_args()], "--attribute"),
        (["text", *small_caltech.cli_args(), "--template", "no slot"], "{}"),
    ]
    feedback_only = set(method_names("feedback")) - set(method_names("text"))
    if feedback_only:
        method = sorted(feedback_only)[0]
        cases.append((["text", *small_caltech.cli_args(), "--method", method], "does not answer"))
    for args, message in cases:
        result = run_eval(*args, expect=2)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
