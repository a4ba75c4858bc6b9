"""Fixtures for core tests: small folders of real images that tests may change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def small_folder(data_root: Path, tmp_path: Path) -> Path:
    """12 real Caltech-101 photos of 12 different classes, copied so tests can change them."""
    source = data_root / "caltech101" / "images"
    folder = tmp_path / "photos"
    folder.mkdir()
    classes = [
        "accordion",
        "airplanes",
        "anchor",
        "ant",
        "barrel",
        "bass",
        "beaver",
        "binocular",
        "bonsai",
        "brain",
        "brontosaurus",
        "buddha",
    ]
    for name in classes:
        first = sorted((source / name).iterdir())[0]
        shutil.copy2(first, folder / f"{name}.jpg")
    return folder


@pytest.fixture
def many_images(data_root: Path, tmp_path: Path) -> Path:
    """300 real photos in one folder (enough for indexing to take a few seconds)."""
    source = data_root / "pacs" / "images" / "photo"
    folder = tmp_path / "many"
    folder.mkdir()
    files = sorted(p for p in source.rglob("*.jpg"))[:300]
    for n, path in enumerate(files):
        shutil.copy2(path, folder / f"{n:04d}-{path.parent.name}.jpg")
    return folder
