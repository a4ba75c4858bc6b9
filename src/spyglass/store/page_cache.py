"""An index's files brought into the page cache before the first searches need them.

Searches read two kinds of file: the approximate index's lists (``<space>.ivf``,
memory-mapped) and the float16 rows that candidates are re-scored from (``<space>.f16``,
read with ``pread``). After a reboot, or once other work has pushed them out, the first
searches wait on the disk for every page they touch. A server asks the kernel to read
them ahead when it starts (``posix_fadvise`` ``WILLNEED``, 8 MiB at a time: one call
for a whole file read only its first 8 MiB). At 1M images (``bench methods``' index,
4.7 GiB of lists and rows) that took 3.7 s, after which the first 40 ``svm-fusion``
queries ran at 46.0 ms (wall p50) against 87.9 ms with the files dropped from the
cache. Nothing is copied into the process; the pages stay the kernel's to drop.

Files are taken in the order searches need them most (indexes, then rows, then owner
ids), and only while they fit in half of the memory available: a 10M index's 33 GB of
rows would only push its own lists out again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: Bytes advised per call (the kernel's read-ahead for one call is about this much).
CHUNK_BYTES = 8 * 2**20
#: Which files come first: lower first.
_PRIORITY = {".ivf": 0, ".f16": 1, ".ids": 2}


@dataclass
class WarmReport:
    """What :func:`warm_page_cache` asked the kernel to read, and what it left out."""

    warmed: list[Path] = field(default_factory=list)
    bytes: int = 0
    #: Files left out, because they did not fit the budget or could not be read.
    left: list[Path] = field(default_factory=list)
    stopped: bool = False


def search_order(paths: Iterable[Path]) -> list[Path]:
    """``paths`` in the order searches need them most: indexes, rows, owner ids."""
    return sorted(paths, key=lambda p: (_PRIORITY.get(p.suffix, 3), str(p)))


def warm_page_cache(
    paths: Iterable[Path], budget: int | None, stopping: threading.Event | None = None
) -> WarmReport:
    """Ask the kernel to read ``paths`` into the page cache, in :func:`search_order`,
    as long as their sizes add up to at most ``budget`` bytes (None: no limit); stops
    between chunks once ``stopping`` is set. Where the OS has no ``posix_fadvise``, the
    files are read instead (through one small buffer). Never raises for a file that
    vanished or cannot be read: it is left out."""
    report = WarmReport()
    for path in search_order(paths):
        try:
            size = path.stat().st_size
        except OSError:
            report.left.append(path)
            continue
        if budget is not None and report.bytes + size > budget:
            report.left.append(path)
            continue
        try:
            finished = _warm_file(path, size, stopping)
        except OSError:
            report.left.append(path)
            continue
        if not finished:
            report.stopped = True
            return report
        report.warmed.append(path)
        report.bytes += size
    return report


def _warm_file(path: Path, size: int, stopping: threading.Event | None) -> bool:
    """False when stopped before the end."""
    buffer = None if hasattr(os, "posix_fadvise") else bytearray(CHUNK_BYTES)
    with open(path, "rb", buffering=0) as file:
        for start in range(0, size, CHUNK_BYTES):
            if stopping is not None and stopping.is_set():
                return False
            if buffer is None:
                os.posix_fadvise(file.fileno(), start, CHUNK_BYTES, os.POSIX_FADV_WILLNEED)
            elif not file.readinto(buffer):
                break
    return True
