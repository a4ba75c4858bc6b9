"""Plain `spyglass search` output: score, #id (what --good and --bad take), path; and
--paths for piping."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from spyglass.cli import main

LINE = re.compile(r"^ +(-?\d\.\d{4})  #(\d+) *  (/.+)$")


def search(index: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["search", *args, "--index", str(index)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_each_line_shows_score_id_and_path_as_json_does(photo_index: Path) -> None:
    lines = search(photo_index, "an airplane", "-k", "4").splitlines()
    hits = json.loads(search(photo_index, "an airplane", "-k", "4", "--json"))
    assert len(lines) == 4
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m[2], m[3]) for m in parsed if m] == [(str(h["id"]), h["path"]) for h in hits]
    assert [float(m[1]) for m in parsed if m] == [round(h["score"], 4) for h in hits]


def test_the_printed_id_marks_an_image_good(photo_index: Path) -> None:
    first = LINE.match(search(photo_index, "a brain", "-k", "1").splitlines()[0])
    assert first
    marked = json.loads(search(photo_index, "a brain", "--good", f"#{first[2]}", "--json"))
    plain = json.loads(search(photo_index, "a brain", "--good", first[2], "--json"))
    assert marked == plain and marked[0]["id"] == int(first[2])


def test_paths_prints_only_paths(photo_index: Path, photo_folder: Path) -> None:
    out = search(photo_index, "a dolphin", "-k", "3", "--paths")
    hits = json.loads(search(photo_index, "a dolphin", "-k", "3", "--json"))
    assert out == "".join(f"{h['path']}\n" for h in hits)
    assert all(Path(line).parent == photo_folder for line in out.splitlines())
