"""Process-wide settings of a server: its heap and its BLAS threads.

**BLAS threads.** Requests already run in parallel, one per pool thread; OpenBLAS's
own threads on top of that wait for each other's cores. On the 2-core machine under
load, k-reciprocal re-ranking of 300 results took 198 ms with OpenBLAS's default two
threads against 35 ms with one (the same script run twice, a minute apart), so a
server uses ``search_threads`` for BLAS as for FAISS.

**Heap.**
glibc gives each thread that allocates while another holds the heap a new arena (up to
8 per core), and an arena keeps what its thread freed. A server answers from dozens of
pool threads, so every thread's peak stays resident: under 32 clients on 2 cores the
server grew from 280 MB to 728 MB in 50 s of load, against 459 MB with two arenas in the
same conditions (`spyglass bench load`, docs/reliability.md). The heap calls are
no-ops where glibc is not the C library.
"""

from __future__ import annotations

import contextlib
import ctypes

#: mallopt's M_ARENA_MAX (malloc.h).
_M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Let the process's threads share at most ``arenas`` heaps. Call it before the
    threads start (arenas already made stay)."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.mallopt(_M_ARENA_MAX, arenas)


def release_freed_memory() -> None:
    """Ask glibc to return freed heap to the system: without it, the arenas of the
    server's threads can keep the peak of every big decode (issue 10 saw 3.3 GB still
    held five minutes after eight concurrent 64-megapixel uploads)."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)


def limit_blas_threads(threads: int) -> None:
    """Let NumPy's BLAS (and any other the process loaded) use ``threads`` threads.
    OpenBLAS's count is global to the process, so one call covers the pool threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with the server extra
        return
    threadpool_limits(limits=threads, user_api="blas")
