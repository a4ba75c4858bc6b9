"""`spyglass bench ingest` on a few real photos: one run gives the end-to-end and the
model-only rate of every configuration, their ratio and the memory peak."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from spyglass.bench.ingest import command, parse_configuration
from spyglass.settings import IngestSettings


def test_one_run_reports_end_to_end_model_only_their_ratio_and_memory(
    small_folder: Path,
) -> None:
    arguments = ["--data", str(small_folder), "--limit", "8", "--rounds", "2"]
    arguments += ["--batch-size", "4", "--try", "decode_ahead_batches=0", "--json"]
    result = CliRunner().invoke(command, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 8 and report["rounds"] == 2
    default, other = report["configurations"]
    assert (default["name"], other["name"]) == ("default", "decode_ahead_batches=0")
    for entry in (report, default, other):
        assert entry["end_to_end_images_per_s"] > 0 and entry["model_only_images_per_s"] > 0
        ratio = entry["end_to_end_images_per_s"] / entry["model_only_images_per_s"]
        assert 0.5 * ratio < entry["ratio"] < 2 * ratio  # a median of per-round ratios
    assert report["rss_peak_mib"] > report["rss_rise_mib"] > 0
    assert len(other["rounds"]) == 2 and default["end_to_end_vs_default"] == 1.0


def test_alternatives_are_checked_before_anything_runs() -> None:
    base = IngestSettings(batch_size=32)
    changed = parse_configuration("batch_size=64,spinning=off,image_model=int8", base)
    assert changed.ingest.batch_size == 64 and changed.tuning.spinning is False
    assert changed.image_model == "int8"
    for wrong in ("batch_size", "foo=1", "batch_size=many", "decode_in=fibres", "image_model=x"):
        with pytest.raises(click.BadParameter):
            parse_configuration(wrong, base)
