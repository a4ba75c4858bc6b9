"""Ctrl-C while indexing: one line, exit 130, no traceback, nothing committed lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spyglass.ingest.pipeline import _ordered_lookahead


def test_stopping_the_read_ahead_early_cancels_it_quietly() -> None:
    """Closing the generator mid-way (what an exception in the consumer does) must end it:
    catching GeneratorExit made Python print "generator ignored GeneratorExit"."""
    with ThreadPoolExecutor(2) as pool:
        reads = _ordered_lookahead(pool, lambda n: n * 2, range(100), lookahead=8)
        assert next(reads) == (0, 0)
        reads.close()  # raised RuntimeError before the fix
    with ThreadPoolExecutor(2) as pool:
        failing = _ordered_lookahead(pool, lambda n: 1 // (n - 1), range(3), lookahead=2)
        outcomes = [outcome for _, outcome in failing]
    assert isinstance(outcomes[1], ZeroDivisionError) and outcomes[0] == -1


def test_ctrl_c_while_indexing_prints_one_line_and_keeps_the_commits(
    photo_variants, tmp_path: Path
) -> None:
    images = photo_variants(tmp_path / "images", 600, side=160)
    index_dir = tmp_path / "index"
    command = [sys.executable, "-m", "spyglass", "index", str(images), "--index", str(index_dir)]
    process = subprocess.Popen(
        [*command, "--commit-every", "32", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    owners = index_dir / "vectors" / "joint.ids"  # 8 bytes per committed image
    while time.monotonic() < deadline and process.poll() is None:
        if owners.exists() and owners.stat().st_size >= 64 * 8:
            break  # at least two commits are in
        time.sleep(0.05)
    assert process.poll() is None, "indexing ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.strip().splitlines() == ["interrupted; work committed so far is kept"]

    # The next run goes on from the last commit and finishes the job.
    finished = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, timeout=300, check=False
    )
    assert finished.returncode == 0, finished.stderr
    rerun = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, timeout=300, check=False
    )
    assert '"added": 0' in rerun.stdout and '"embedded": 0' in rerun.stdout
