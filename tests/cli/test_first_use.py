"""With an empty model cache, the bundled model's preparation (tens of seconds) is told
on stderr step by step. Slow: it really exports the model to ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.cli import main


@pytest.mark.slow
def test_first_use_says_what_it_is_doing(photo_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "empty-cache"
    result = CliRunner(env={"SPYGLASS_CACHE_DIR": str(cache)}).invoke(
        main, ["index", str(photo_folder), "--index", str(tmp_path / "index"), "--json"]
    )
    assert result.exit_code == 0, result.output
    heading = "preparing the bundled model (first use only)"
    lines = [line for line in result.stderr.splitlines() if line.startswith(heading)]
    assert lines[:4] == [
        f"{heading}: exporting the image model to ONNX ... 1/4",
        f"{heading}: exporting the text model to ONNX ... 2/4",
        f"{heading}: quantising the image model to int8 ... 3/4",
        f"{heading}: embedding the 1,000 class names ... 4/4",
    ]
    assert len(lines) == 5 and lines[4].startswith(f"{heading}: ready in ")
    assert (cache / "models" / "bundled-onnx-1" / "manifest.json").is_file()
    # Prepared once: the next run says nothing of it.
    again = CliRunner(env={"SPYGLASS_CACHE_DIR": str(cache)}).invoke(
        main, ["search", "a cup", "--index", str(tmp_path / "index")]
    )
    assert again.exit_code == 0 and heading not in again.stderr
