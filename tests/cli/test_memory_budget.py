"""`--memory-budget` (or SPYGLASS_MEMORY_BUDGET) picks how the vectors are searched, and a
budget nothing fits, like any failed build of the approximate index, is one line and
exit status 3 after the images are indexed; they stay searchable, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.cli import main
from spyglass.settings import parse_bytes


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), prog_name="spyglass", env=env)
    return result.exit_code, result.stdout, result.stderr


def search_line(index: Path, *args: str, env: dict[str, str] | None = None) -> str:
    code, stdout, stderr = run("info", "--index", str(index), "--json", *args, env=env)
    assert code == 0, stderr
    return json.loads(stdout)["search"]["image"]["summary"]


def test_a_budget_nothing_fits_is_one_line_and_the_images_stay_searchable(
    photo_folder: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    code, stdout, stderr = run(
        "index", str(photo_folder), "--index", str(index), "--memory-budget", "1KiB", "-q"
    )
    assert code == 3
    assert stdout.startswith("indexed: 8 new")
    assert len(stderr.splitlines()) == 1, stderr
    # The bundled model's two spaces, one line.
    assert stderr.startswith("error: the approximate indexes were not built (space 'image': ")
    assert "a memory budget of 1.0 KiB cannot hold an approximate index of 8 rows" in stderr
    code, stdout, stderr = run("search", "dolphin", "--index", str(index), "--paths")
    assert code == 0 and stdout.splitlines()[0].endswith("dolphin.jpg"), stderr


def test_a_budget_the_float32_rows_exceed_makes_even_a_small_index_approximate(
    photo_folder: Path, tmp_path: Path
) -> None:
    """The bundled model's image space: 8 photos x 1280 float32 dims take 40 KiB, their
    8-bit codes 15 KiB (its joint space, 8 x 384 x 4 = 12 KiB, fits as it is)."""
    index = tmp_path / "index"
    code, _, stderr = run(
        "index", str(photo_folder), "--index", str(index), "--memory-budget", "20 KiB", "-q"
    )
    assert code == 0, stderr
    assert search_line(index).startswith("exact")  # no budget given to info: 8 rows
    assert search_line(index, "--memory-budget", "20KiB").startswith(
        "approximate: IVF with 1 lists and 8-bit scalar codes over 8 rows"
    )
    env = {"SPYGLASS_MEMORY_BUDGET": "20KiB"}
    assert search_line(index, env=env).startswith("approximate")
    code, stdout, _ = run("search", "dolphin", "--index", str(index), "--paths", env=env)
    assert code == 0 and stdout.splitlines()[0].endswith("dolphin.jpg")
    assert search_line(index, "--memory-budget", "4GiB").startswith("exact")


def test_a_budget_that_is_not_a_size_is_a_usage_error() -> None:
    code, stdout, stderr = run("info", "--memory-budget", "lots")
    assert code == 2 and stdout == ""
    assert stderr == (
        "error: invalid value for --memory-budget: 'lots' is not a size such as 4GiB or "
        "512MiB (see: spyglass info --help)\n"
    )
    code, _, stderr = run("search", "x", "--memory-budget", "0")
    assert code == 2 and "'0' is not a positive size" in stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4GiB", 4 * 2**30),
        ("4 GiB", 4 * 2**30),
        ("1.5G", 3 * 2**29),
        ("512MiB", 512 * 2**20),
        ("512", 512 * 2**20),  # a plain number is MiB
        ("512MB", 512 * 10**6),
        ("2gb", 2 * 10**9),
        ("64KiB", 64 * 2**10),
        ("1TiB", 2**40),
    ],
)
def test_sizes_are_read_with_their_units(text: str, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["", "GiB", "4XB", "-1G", "0", "inf", "nan"])
def test_what_is_not_a_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)
