"""Ctrl-C on `spyglass serve` while its background work (the vocabulary, the map) is
inside native code: a clean exit (130, "stopped"), never an abort by the C++ runtime."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from spyglass.settings import RuntimeSettings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cache_without_server_files(runtime: RuntimeSettings) -> Path:
    """A new cache folder that shares the prepared models (linked) and nothing else."""
    folder = Path(tempfile.mkdtemp(prefix="spyglass-cache-"))
    (folder / "models").symlink_to(Path(runtime.cache_dir) / "models")
    return folder


def test_ctrl_c_while_the_map_and_words_are_prepared(
    sample_photos_index: Path, runtime: RuntimeSettings
) -> None:
    for _ in range(3):
        port = free_port()
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "spyglass", "serve"),
                *("--index", str(sample_photos_index), "--port", str(port)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # No server cache: the vocabulary and the map are computed, not read.
            env={**os.environ, "SPYGLASS_CACHE_DIR": str(cache_without_server_files(runtime))},
        )
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "spyglass serve did not answer"
                time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, (process.returncode, stderr)
        assert "terminate called" not in stderr and "Traceback" not in stderr, stderr
