"""The real `spyglass serve` process for the reliability tests: started on a free
loopback port, waited for, and stopped at the end of the test whatever happened."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Served:
    process: subprocess.Popen[str]
    url: str
    #: Where the process's stderr goes (a file, so that a chatty server never blocks
    #: on a full pipe nobody reads).
    stderr: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(index, *options, env=...)`` -> :class:`Served`, once it answers. By
    default its cache is a folder of the test's own."""
    started: list[subprocess.Popen[str]] = []

    def start(index: Path, *options: str, env: dict[str, str] | None = None) -> Served:
        port = free_port()
        stderr = tmp_path / f"serve-{port}.err"
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "spyglass", "serve", "--index", str(index)),
                *("--port", str(port), *options),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr.open("w"),
            text=True,
            env=env or {**os.environ, "SPYGLASS_CACHE_DIR": str(tmp_path / "serve-cache")},
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, stderr.read_text()
            try:
                httpx.get(url + "/api/status", timeout=5)
                return Served(process, url, stderr)
            except httpx.TransportError:
                assert time.monotonic() < deadline, "spyglass serve did not answer in 90 s"
                time.sleep(0.1)

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
