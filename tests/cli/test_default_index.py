"""Without --index, commands meet at one index in the per-user data folder (rclip's
convenience): `spyglass index ~/Pictures`, then `spyglass search "a dog"`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.cli import main
from spyglass.settings import default_index_folder


@pytest.fixture
def home(tmp_path: Path, model_cache: Path) -> dict[str, str | None]:
    """An environment whose HOME is a new temporary folder, no SPYGLASS_INDEX, and the
    model cache of this run."""
    (tmp_path / "home").mkdir()
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": None,
        "SPYGLASS_INDEX": None,
        "SPYGLASS_CACHE_DIR": str(model_cache),
    }


def test_index_then_search_without_index_flags(
    photo_folder: Path, home: dict[str, str | None]
) -> None:
    runner = CliRunner(env=home)
    indexed = runner.invoke(main, ["index", str(photo_folder), "-q"])
    assert indexed.exit_code == 0, indexed.output
    expected = Path(str(home["HOME"])) / ".local" / "share" / "spyglass" / "index"
    assert (expected / "catalogue.sqlite").is_file()
    found = runner.invoke(main, ["search", "an accordion", "--json", "-k", "1"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)[0]["path"] == str(photo_folder / "accordion.jpg")
    info = runner.invoke(main, ["info", "--json"])
    assert json.loads(info.stdout)["index"] == str(expected)


def test_xdg_data_home_and_spyglass_index_move_it(
    photo_folder: Path, home: dict[str, str | None], tmp_path: Path
) -> None:
    xdg = tmp_path / "xdg"
    runner = CliRunner(env={**home, "XDG_DATA_HOME": str(xdg)})
    assert runner.invoke(main, ["index", str(photo_folder), "-q"]).exit_code == 0
    assert (xdg / "spyglass" / "index" / "catalogue.sqlite").is_file()
    named = tmp_path / "named"
    runner = CliRunner(env={**home, "XDG_DATA_HOME": str(xdg), "SPYGLASS_INDEX": str(named)})
    assert runner.invoke(main, ["index", str(photo_folder), "-q"]).exit_code == 0
    assert (named / "catalogue.sqlite").is_file()


def test_searching_before_indexing_says_where_it_looked(home: dict[str, str | None]) -> None:
    result = CliRunner(env=home).invoke(main, ["search", "a dog"])
    expected = Path(str(home["HOME"])) / ".local" / "share" / "spyglass" / "index"
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: no index at {expected} (create one with:")


ANN = "/home/ann"
MAC = "/Users/ann"
WIN = "/c/Users/ann"


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {"HOME": ANN}, f"{ANN}/.local/share/spyglass/index"),
        ("linux", {"HOME": ANN, "XDG_DATA_HOME": "/data"}, "/data/spyglass/index"),
        # The XDG spec: a relative XDG_DATA_HOME is invalid and ignored.
        ("linux", {"HOME": ANN, "XDG_DATA_HOME": "rel"}, f"{ANN}/.local/share/spyglass/index"),
        ("darwin", {"HOME": MAC}, f"{MAC}/Library/Application Support/spyglass/index"),
        ("win32", {"LOCALAPPDATA": f"{WIN}/Local"}, f"{WIN}/Local/spyglass/index"),
        ("win32", {"USERPROFILE": WIN}, f"{WIN}/AppData/Local/spyglass/index"),
    ],
)
def test_the_platform_data_folder(platform: str, environ: dict[str, str], expected: str) -> None:
    assert default_index_folder(environ, platform) == Path(expected)
