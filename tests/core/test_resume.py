"""kill -9 in the middle of indexing loses nothing and duplicates nothing."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from spyglass.engine import Spyglass
from spyglass.store.index import Index


def committed_files(index_dir: Path) -> int:
    path = index_dir / "catalogue.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # schema not created yet


def test_kill_during_indexing_then_rerun_completes_without_redoing_work(
    many_images: Path, tmp_path: Path, bundled
):
    index_dir = tmp_path / "index"
    command = [
        sys.executable,
        "-m",
        "spyglass",
        "index",
        str(many_images),
        "--index",
        str(index_dir),
        "--commit-every",
        "16",
        "--batch-size",
        "16",
        "-q",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while committed_files(index_dir) < 64:
        assert process.poll() is None, (
            f"indexing ended before it could be killed: {process.stderr.read()!r}"
        )
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = committed_files(index_dir)
    assert 64 <= before < 300, "killed mid-run"

    with Spyglass(bundled, Index.open_for_writing(index_dir, bundled.info)) as engine:
        report = engine.add([str(many_images)])
        status = engine.status()
        catalogue = engine.index.catalogue
        hashes_in_index = [r[0] for r in catalogue.execute("SELECT content_hash FROM images")]
        paths_in_index = [r[0] for r in catalogue.execute("SELECT path FROM files")]
        rows = {space: len(store) for space, store in engine.index.stores.items()}
        owners = engine.index.stores["joint"].owners()

    contents = {
        hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest() for p in many_images.iterdir()
    }
    assert report.unchanged == before, "committed work is not redone"
    assert report.embedded + report.linked == 300 - before
    assert status.images == 300 and len(set(paths_in_index)) == 300
    assert (
        status.unique_images == len(contents) == len(hashes_in_index) == len(set(hashes_in_index))
    )
    assert set(hashes_in_index) == contents
    assert all(count == len(contents) for count in rows.values()), rows
    np.testing.assert_array_equal(np.sort(owners), np.arange(len(contents)))
