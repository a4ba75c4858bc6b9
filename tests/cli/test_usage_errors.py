"""Every usage error is one line on stderr with where to read more, exit status 2: never
click's four-line usage block."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), prog_name="spyglass")
    return result.exit_code, result.stdout, result.stderr


def test_a_value_out_of_range_names_the_rule(photo_index: Path) -> None:
    code, stdout, stderr = run("search", "-k", "0", "x", "--index", str(photo_index))
    assert code == 2 and stdout == ""
    assert stderr == "error: -k must be between 1 and 100000 (see: spyglass search --help)\n"


def test_a_folder_given_as_the_query_image(photo_index: Path, tmp_path: Path) -> None:
    code, _, stderr = run("search", "--image", str(tmp_path), "x", "--index", str(photo_index))
    assert code == 2
    assert stderr == (
        f"error: invalid value for --image: file '{tmp_path}' is a directory "
        "(see: spyglass search --help)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["index"], "missing argument 'PATHS...' (see: spyglass index --help)"),
        (["search", "--topp", "3", "x"], "no such option --topp; did you mean --top?"),
        (["search", "-k", "many", "x"], "-k must be a whole number between 1 and 100000"),
        (["search", "--image-weight", "2", "x"], "--image-weight must be between 0.0 and 1.0"),
        (["search", "--device", "tpu", "x"], "invalid value for --device"),
        (["info", "--skipped", "x"], "invalid value for --skipped"),
        (["serve", "--port", "70000"], "--port must be between 0 and 65535"),
        (["serve", "--host", "0.0.0.0"], "--host 0.0.0.0 exposes the index to the network"),
        (["serve", "--token", "short"], "--token must be at least"),
        (["train", "pic2word", "--epochs", "0"], "--epochs must be between 1 and 1000"),
        (["export-onnx"], "missing argument 'SOURCE' (see: spyglass export-onnx --help)"),
        (["bench", "nosuch"], "no such command 'nosuch' (see: spyglass bench --help)"),
        (["nosuch"], "no such command 'nosuch' (see: spyglass --help)"),
        (["--nosuch"], "no such option --nosuch (see: spyglass --help)"),
    ],
)
def test_every_command_says_it_in_one_line(args: list[str], message: str) -> None:
    code, stdout, stderr = run(*args)
    assert code == 2 and stdout == ""
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("error: ") and message in stderr
    assert stderr.rstrip().endswith("--help)")


def test_json_and_paths_together_is_a_usage_error(photo_index: Path) -> None:
    code, _, stderr = run("search", "x", "--json", "--paths", "--index", str(photo_index))
    assert code == 2
    assert stderr == (
        "error: --json and --paths cannot be combined: choose one (see: spyglass search --help)\n"
    )


def test_spyglass_alone_still_shows_the_help() -> None:
    code, _, stderr = run()
    assert code == 2 and "Commands:" in stderr and "search" in stderr
