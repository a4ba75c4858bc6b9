"""`spyglass index` checks its paths before an index is created, and says when a folder
held no images."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from spyglass.cli import main


def index(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["index", *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    missing, new_index = tmp_path / "no" / "such" / "folder", tmp_path / "NEW"
    code, stdout, stderr = index(str(missing), "--index", str(new_index))
    assert code == 2 and stdout == ""
    assert stderr == f"error: not found: {missing} (nothing was indexed)\n"
    assert not new_index.exists()


def test_one_missing_path_among_good_ones_creates_nothing(
    photo_folder: Path, tmp_path: Path
) -> None:
    code, _, stderr = index(
        str(photo_folder), str(tmp_path / "typo"), "--index", str(tmp_path / "NEW")
    )
    assert code == 2 and "not found: " in stderr and "typo" in stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_folder_is_indexed_with_a_warning(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, stdout, stderr = index(str(empty), "--index", str(tmp_path / "index"), "-q")
    assert code == 0
    assert stderr == f"warning: no images found in {empty}\n"
    assert stdout.startswith("indexed: 0 new, 0 changed")


def test_a_folder_without_images_is_named_among_others(photo_folder: Path, tmp_path: Path) -> None:
    papers = tmp_path / "papers"
    (papers / "2024").mkdir(parents=True)
    (papers / "notes.txt").write_text("no pictures here")
    (papers / "2024" / "report.pdf").write_bytes(b"%PDF-1.4")
    code, stdout, stderr = index(
        str(photo_folder), str(papers), "--index", str(tmp_path / "index"), "--json"
    )
    assert code == 0
    assert stderr == f"warning: no images found in {papers}\n"
    assert json.loads(stdout)["added"] == 8


def test_an_image_folder_as_index_is_refused_and_left_alone(
    photo_folder: Path, tmp_path: Path
) -> None:
    """`spyglass index ~/Pictures --index ~/Pictures` would write the catalogue among the
    photos, and index nothing (the walk never enters the index folder)."""
    before = sorted(photo_folder.iterdir())
    code, _, stderr = index(str(photo_folder), "--index", str(photo_folder))
    assert code == 2
    assert stderr == (
        f"error: --index {photo_folder} holds images, not an index: give the index a folder "
        "of its own (a new or empty one)\n"
    )
    assert sorted(photo_folder.iterdir()) == before


def test_a_folder_inside_the_index_is_refused(photo_index: Path) -> None:
    inside = photo_index / "vectors"
    code, _, stderr = index(str(inside), "--index", str(photo_index))
    assert code == 2
    assert stderr == (
        f"error: {inside} is inside the index folder {photo_index}, which indexing never "
        "looks into: choose another --index\n"
    )
