"""The server's heap: its threads share two glibc arenas instead of one each."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Twelve threads alive at once, each allocating: glibc gives each its own arena unless
# the limit holds. malloc_stats() writes one "Arena N:" block per arena on stderr.
PROGRAM = """
import ctypes, sys, threading
from spyglass.server.memory import limit_malloc_arenas
if sys.argv[1] == "limited":
    limit_malloc_arenas(2)
together = threading.Barrier(12)
def allocate():
    blocks = [bytearray(50_000) for _ in range(20)]
    together.wait()
threads = [threading.Thread(target=allocate) for _ in range(12)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def arenas(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_threads_share_two_arenas_once_limited() -> None:
    assert arenas("unlimited") > 2  # the effect the limit exists to stop
    assert arenas("limited") <= 2


def test_serve_limits_the_arenas_before_it_starts_threads() -> None:
    from pathlib import Path

    import spyglass.cli.serve as serve

    source = Path(serve.__file__).read_text()
    assert source.index("limit_malloc_arenas()") < source.index("Spyglass.open(")
