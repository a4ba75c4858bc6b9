"""Fixtures for the command-line tests: a small folder of real photos and its index,
made through the CLI itself with the real bundled model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.cli import main
from spyglass.settings import RuntimeSettings

#: One Caltech-101 photo from each of these classes.
CLASSES = ("accordion", "airplanes", "anchor", "barrel", "bonsai", "brain", "cup", "dolphin")


@pytest.fixture(scope="session")
def photo_folder(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight real photos of eight classes, copied so that tests may look at the folder
    as their own."""
    source = data_root / "caltech101" / "images"
    folder = tmp_path_factory.mktemp("cli-photos") / "photos"
    folder.mkdir()
    for name in CLASSES:
        first = sorted((source / name).iterdir())[0]
        shutil.copy2(first, folder / f"{name}.jpg")
    return folder


@pytest.fixture(scope="session")
def photo_index(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``photo_folder`` indexed by `spyglass index`."""
    index_dir = tmp_path_factory.mktemp("cli-index") / "index"
    result = CliRunner().invoke(main, ["index", str(photo_folder), "--index", str(index_dir)])
    assert result.exit_code == 0, result.output
    return index_dir


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The prepared-model cache of this run: tests that move HOME keep using it (a new
    cache would export the bundled model again, for tens of seconds)."""
    return RuntimeSettings.from_environment().cache_dir
