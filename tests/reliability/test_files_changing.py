"""Files that change under the indexer: a file that turns corrupt leaves the results, and
special files (named pipes) are skipped by type instead of blocking the reader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.errors import ImageRejected
from spyglass.images import read_image_file
from spyglass.query.terms import Query, TextTerm
from spyglass.store.index import Index

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")


def searchable_paths(engine: Spyglass) -> set[str]:
    return {p for r in engine.search(Query((TextTerm("a photo"),), k=100)) for p in r.paths}


def test_a_file_that_turns_corrupt_leaves_the_results(
    sample_photos: Path, bundled: Encoder, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(sample_photos, folder)
    index_dir = tmp_path / "index"
    horse = folder / "horse.png"
    original = horse.read_bytes()
    with Spyglass(bundled, Index.open_for_writing(index_dir, bundled.info)) as engine:
        engine.add([str(folder)])
        assert str(horse) in searchable_paths(engine)

    horse.write_bytes(original[: len(original) // 4])  # truncated in place
    with Spyglass(bundled, Index.open_for_writing(index_dir, bundled.info)) as engine:
        report = engine.add([str(folder)])
        assert [Path(s.path).name for s in report.skipped] == ["horse.png"]
        assert str(horse) not in searchable_paths(engine)
        assert engine.status().images == 13
        again = engine.add([str(folder)])  # still corrupt: still out, not retried
        assert again.embedded == 0 and str(horse) not in searchable_paths(engine)

    horse.write_bytes(original)  # repaired: back, without a second embedding
    with Spyglass(bundled, Index.open_for_writing(index_dir, bundled.info)) as engine:
        repaired = engine.add([str(folder)])
        assert repaired.embedded == 0 and str(horse) in searchable_paths(engine)
        assert engine.status().skipped == 0


@needs_fifo
def test_reading_a_named_pipe_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_image_file(fifo, 10_000_000)
        except BaseException as error:
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)  # a blocked read must not hang pytest
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], ImageRejected) and outcome[0].reason == "special-file"


@needs_fifo
def test_indexing_skips_a_file_replaced_by_a_named_pipe(
    sample_photos: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(sample_photos, folder)
    index_dir = tmp_path / "index"
    command = [sys.executable, "-m", "spyglass", "index", str(folder), "--index", str(index_dir)]
    first = subprocess.run([*command, "-q"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    (folder / "coffee.png").unlink()
    os.mkfifo(folder / "coffee.png")
    second = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    info = subprocess.run(
        [sys.executable, "-m", "spyglass", "info", "--index", str(index_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    skipped = {Path(s["path"]).name: s["reason"] for s in json.loads(info.stdout)["skipped_files"]}
    assert skipped == {"coffee.png": "special-file"}
