"""The server process: its threads share two glibc arenas instead of one each, and
NumPy's BLAS runs one thread per request."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

# Twelve threads alive at once, each allocating: glibc gives each its own arena unless
# the limit holds. malloc_stats() writes one "Arena N:" block per arena on stderr.
PROGRAM = """
import ctypes, sys, threading
from spyglass.server.process import limit_malloc_arenas
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


BLAS_THREADS = """
import sys
from threadpoolctl import threadpool_info
from spyglass.server.process import limit_blas_threads
import numpy
if sys.argv[1] == "limited":
    limit_blas_threads(1)
print(max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"))
"""


def blas_threads(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", BLAS_THREADS, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")},
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS uses one thread anyway")
def test_blas_runs_one_thread_once_limited() -> None:
    assert blas_threads("unlimited") > 1
    assert blas_threads("limited") == 1


def test_serve_sets_both_before_it_opens_the_index() -> None:
    import spyglass.cli.serve as serve

    source = Path(serve.__file__).read_text()
    opened = source.index("Spyglass.open(")
    assert source.index("limit_malloc_arenas()") < opened
    assert source.index("limit_blas_threads(threads)") < opened
