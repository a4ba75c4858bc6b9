"""A full disk, for real: the index lives on a small tmpfs that fills up while indexing.
One line and exit 3, no traceback; after space is freed the next run finishes the job
and the index equals a clean build. Mounting needs root: elsewhere these skip (one line
in the summary)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from spyglass.store.index import Index


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill ``disk`` with one file until about ``leave_bytes`` are free."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
    return filler


def spyglass(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spyglass", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SPYGLASS_DEBUG": ""},
    )


def one_line_disk_full(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is full" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def contents(index_dir: Path) -> dict[str, np.ndarray]:
    """path -> joint vector of every indexed file."""
    with Index.open(index_dir) as index:
        files = index.catalogue.files_under("/")
        owners = np.array([state.image_id for state in files.values()], np.int64)
        vectors = index.stores[index.info.text_space].fetch(owners)
    return dict(zip(files, vectors, strict=True))


def test_disk_full_while_indexing_loses_nothing_and_the_next_run_finishes(
    photo_variants, tmp_path: Path, small_disk: Path
) -> None:
    images = photo_variants(tmp_path / "images", 400, seed=1, side=96)
    index_dir = small_disk / "index"
    # Room for the empty index and a few commits of vectors, not for all 400 images.
    filler = fill(small_disk, 600_000)
    full = spyglass("index", str(images), "--index", str(index_dir), "-q", "--commit-every", "16")
    one_line_disk_full(full)
    partial = spyglass("info", "--index", str(index_dir), "--json")
    assert partial.returncode == 0, partial.stderr
    assert 0 < json.loads(partial.stdout)["images"] < 400

    filler.unlink()
    resumed = spyglass("index", str(images), "--index", str(index_dir), "-q")
    assert resumed.returncode == 0, resumed.stderr
    clean = spyglass("index", str(images), "--index", str(tmp_path / "clean"), "-q")
    assert clean.returncode == 0, clean.stderr
    after, reference = contents(index_dir), contents(tmp_path / "clean")
    assert sorted(after) == sorted(reference) and len(after) == 400
    for path, vector in reference.items():
        np.testing.assert_allclose(after[path], vector, atol=2e-3)


def test_disk_full_when_the_index_is_created_leaves_one_that_works_later(
    sample_photos: Path, small_disk: Path
) -> None:
    index_dir = small_disk / "index"
    filler = fill(small_disk, 2_000)
    full = spyglass("index", str(sample_photos), "--index", str(index_dir), "-q")
    one_line_disk_full(full)
    filler.unlink()
    indexed = spyglass("index", str(sample_photos), "--index", str(index_dir), "-q")
    assert indexed.returncode == 0, indexed.stderr
    found = spyglass("search", "a cat", "--index", str(index_dir), "--json", "-k", "1")
    assert found.returncode == 0 and json.loads(found.stdout)[0]["path"].endswith("cat.png")
