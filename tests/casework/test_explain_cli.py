"""`spyglass explain` in-process: writes the result image (and the query image) with
its heatmap as PNG of the image's size, and says what went wrong in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from spyglass.cli import main
from spyglass.engine import Spyglass
from spyglass.store.index import Index

from .conftest import PastedObjects, image_id


def result_id(pasted: PastedObjects, bundled: object, n: int) -> int:
    with Spyglass(bundled, Index.open(pasted.index)) as engine:  # type: ignore[arg-type]
        return image_id(engine, pasted.paths[n])


def test_explain_writes_overlays_of_the_images_size(
    pasted: PastedObjects, bundled: object, tmp_path: Path
) -> None:
    target = result_id(pasted, bundled, 3)
    out, query_out = tmp_path / "result.png", tmp_path / "query.png"
    result = CliRunner().invoke(
        main,
        ["explain", "--index", str(pasted.index), "--id", str(target), "--grid", "3",
         "--image", str(pasted.things[3]), "--out", str(out), "--query-out", str(query_out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"#{target}: score" in result.stdout and "image space" in result.stdout
    with Image.open(out) as overlay, Image.open(pasted.paths[3]) as original:
        assert overlay.format == "PNG" and overlay.size == original.size
        changed = np.abs(
            np.asarray(overlay.convert("RGB"), np.int16)
            - np.asarray(original.convert("RGB"), np.int16)
        )
        assert changed.mean() > 5
    with Image.open(query_out) as overlay, Image.open(pasted.things[3]) as thing:
        assert overlay.format == "PNG" and overlay.size == thing.size


def test_explain_errors_are_one_line(pasted: PastedObjects, tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    for args, code, words in (
        (["--id", "123456", "a cup", "--out", out], 2, "no indexed image has id 123456"),
        (["--id", "0", "--out", out], 2, "empty query"),
        (["--id", "0", "a cup", "--out", str(tmp_path / "no" / "x.png")], 2, "does not exist"),
    ):
        result = CliRunner().invoke(main, ["explain", "--index", str(pasted.index), *args])
        assert result.exit_code == code, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], result.stderr
    assert not Path(out).exists()
