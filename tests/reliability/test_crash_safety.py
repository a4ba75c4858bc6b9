"""SIGKILL at random moments while indexing (a second folder added on some runs): the
index the next run finishes equals a clean build: the same files, the same vectors, no
duplicate contents, no rows without an image. Three kills here; SPYGLASS_LONG=1 makes
it 25 (docs/reliability.md)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from spyglass.store.index import Index

from .concurrency import assert_no_duplicate_or_orphan

KILLS = 25 if os.environ.get("SPYGLASS_LONG") else 3


def index_command(folders: list[Path], index_dir: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "spyglass", "index", *map(str, folders)),
        *("--index", str(index_dir), "-q", "--commit-every", "16"),
    ]


def snapshot(index_dir: Path) -> dict[str, np.ndarray]:
    """path -> joint vector, after checking the catalogue holds no duplicate or orphan."""
    with Index.open(index_dir) as index:
        catalogue = index.catalogue
        assert_no_duplicate_or_orphan(catalogue)
        (embedded,) = catalogue.execute("SELECT COUNT(*) FROM images")[0]
        for store in index.stores.values():
            assert len(store) == embedded, "every committed row has its image, and back"
        files = catalogue.files_under("/")
        owners = np.array([state.image_id for state in files.values()], np.int64)
        vectors = index.stores[index.info.text_space].fetch(owners)
    return dict(zip(files, vectors, strict=True))


def test_random_sigkills_leave_an_index_equal_to_a_clean_build(
    photo_variants, tmp_path: Path
) -> None:
    first = photo_variants(tmp_path / "first", 160, seed=1, side=112)
    second = photo_variants(tmp_path / "second", 80, seed=2, side=112)
    index_dir = tmp_path / "index"
    rng = random.Random(0)
    for kill in range(KILLS):
        folders = [first, second] if kill % 2 else [first]
        process = subprocess.Popen(
            index_command(folders, index_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(1.0, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finished = subprocess.run(
        index_command([first, second], index_dir), capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr
    clean = subprocess.run(
        index_command([first, second], tmp_path / "clean"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert clean.returncode == 0, clean.stderr
    after, reference = snapshot(index_dir), snapshot(tmp_path / "clean")
    assert sorted(after) == sorted(reference) and len(after) == 240
    for path, vector in reference.items():
        np.testing.assert_allclose(after[path], vector, atol=2e-3)
