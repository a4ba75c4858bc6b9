"""``spyglass eval attribute`` end to end on a small real Fashion subset (3 article types x
4 colours x 5 images) with the real bundled model."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from spyglass.cli import main


def run_attribute(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["eval", "attribute", *args])
    assert result.exit_code == 0, result.output + str(result.exception)
    return json.loads(result.stdout)


def test_attribute_protocol_asks_every_pair_and_every_value(small_fashion) -> None:
    report = run_attribute(
        *small_fashion.cli_args(),
        "--attribute",
        "baseColour",
        "--method",
        "sum",
        "--json",
        "--per-query",
    )
    assert report["protocol"] == "attribute"
    assert report["settings"]["object_column"] == "label"
    # Counted from the labels here: 12 (type, colour) cells of 5 images, 4 colours.
    cells = {(r["label"], r["baseColour"]) for r in small_fashion.rows}
    colours = {r["baseColour"] for r in small_fashion.rows}
    assert report["settings"]["queries"] == len(cells) == 12
    assert report["settings"]["value_queries"] == len(colours) == 4
    rows = {r["method"]: r for r in report["results"]}
    assert rows["sum"]["queries"] == 12
    assert rows["sum, value alone"]["queries"] == 4
    assert {f"sum · {c}" for c in colours} <= set(rows)
    for colour in colours:
        assert rows[f"sum · {colour}"]["queries"] == 3 + 1  # its three types, then alone
    for row in report["results"]:
        for value in row["metrics"].values():
            assert 0.0 <= value <= 1.0


def test_attribute_queries_find_the_colour_and_the_object(small_fashion) -> None:
    """With the attribute channel, "a red tshirts" finds red T-shirts among 60 items of
    which 5 are relevant (chance mAP about 0.1), and "something red" the 15 red items
    (chance 0.25)."""
    report = run_attribute(*small_fashion.cli_args(), "--method", "sum", "--json")
    rows = {r["method"]: r for r in report["results"]}
    assert rows["sum"]["metrics"]["mAP"] > 0.5, rows["sum"]
    assert rows["sum, value alone"]["metrics"]["mAP"] > 0.5, rows["sum, value alone"]


def test_attribute_protocol_refuses_a_template_without_the_value(small_fashion) -> None:
    result = CliRunner().invoke(
        main, ["eval", "attribute", *small_fashion.cli_args(), "--template", "a {object}"]
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "{value}" in result.stderr
