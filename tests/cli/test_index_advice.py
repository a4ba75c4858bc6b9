"""`--index` naming the photo folder gets advice that keeps the index out of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.cli import main


@pytest.mark.parametrize("command", [["search", "a dog"], ["info"], ["serve", "--port", "0"]])
def test_a_photo_folder_as_index_is_told_apart(photo_folder: Path, command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--index", str(photo_folder)])
    assert result.exit_code == 3 and result.stdout == ""
    assert result.stderr == (
        f"error: {photo_folder} holds images, not an index: index it with "
        f"`spyglass index {photo_folder} --index ANOTHER_FOLDER`, then search with "
        "--index ANOTHER_FOLDER\n"
    )
    assert not (photo_folder / "catalogue.sqlite").exists()


def test_photos_one_folder_down_count_too(photo_folder: Path, tmp_path: Path) -> None:
    library = tmp_path / "Pictures"
    (library / "2024").mkdir(parents=True)
    (library / "2024" / "cup.jpg").write_bytes((photo_folder / "cup.jpg").read_bytes())
    result = CliRunner().invoke(main, ["search", "a cup", "--index", str(library)])
    assert result.exit_code == 3 and "holds images, not an index" in result.stderr


def test_an_empty_folder_still_gets_the_create_advice(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["search", "a dog", "--index", str(tmp_path)])
    assert result.exit_code == 3
    assert result.stderr == (
        f"error: no index at {tmp_path} (create one with: spyglass index PATH --index {tmp_path})\n"
    )
