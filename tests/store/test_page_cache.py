"""An index's files read ahead into the page cache (spyglass.store.page_cache): which
files, in what order, within what budget, and that the pages are there afterwards
(checked with mincore(2) on files first dropped from the cache)."""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import time
from pathlib import Path

import numpy as np

from spyglass.store.page_cache import CHUNK_BYTES, search_order, warm_page_cache

from .test_ivf_store import written


def resident_share(path: Path) -> float:
    """Share of ``path``'s pages in the page cache, by mincore(2) over a private
    mapping (its pages, never written, are the page cache's)."""
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    with path.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_COPY)
        try:
            anchor = ctypes.c_char.from_buffer(mapped)
            vector = (ctypes.c_ubyte * pages)()
            failed = libc.mincore(ctypes.addressof(anchor), size, vector)
            del anchor
        finally:
            mapped.close()
    if failed:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(v & 1 for v in vector) / pages


def dropped(path: Path) -> Path:
    """``path`` written back and dropped from the page cache (as after a reboot)."""
    with path.open("rb") as file:
        os.fsync(file.fileno())
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return path


def test_files_come_back_into_the_page_cache(tmp_path: Path):
    rows = tmp_path / "joint.f16"
    rows.write_bytes(np.random.default_rng(0).bytes(3 * CHUNK_BYTES + 12345))
    dropped(rows)
    before = resident_share(rows)
    report = warm_page_cache([rows], budget=None)
    assert report.warmed == [rows] and report.bytes == rows.stat().st_size
    deadline = time.monotonic() + 10
    while resident_share(rows) < 0.99 and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel reads ahead in the background
    assert before < 0.5  # dropped first (on a disk; tmpfs keeps every page)
    assert resident_share(rows) >= 0.99


def test_an_index_warms_its_lists_then_its_rows_within_half_the_memory(tmp_path: Path):
    store, _ = written(tmp_path, 3000)
    files = store.search_files()
    assert [p.name for p in search_order(files)] == ["joint.ivf", "joint.f16", "joint.ids"]
    sizes = {p.name: p.stat().st_size for p in files}
    # A budget for the lists alone: the rows and owner ids are left out.
    report = warm_page_cache(files, budget=sizes["joint.ivf"] + 1)
    assert [p.name for p in report.warmed] == ["joint.ivf"]
    assert [p.name for p in report.left] == ["joint.f16", "joint.ids"]
    # A file that vanished is left out, not an error.
    gone = tmp_path / "image.f16"
    report = warm_page_cache([*files, gone], budget=None)
    assert report.left == [gone] and report.bytes == sum(sizes.values())


def test_stopping_ends_the_read_ahead_between_chunks(tmp_path: Path):
    big = tmp_path / "image.f16"
    with big.open("wb") as file:
        file.truncate(4 * CHUNK_BYTES)
    stopping = threading.Event()
    stopping.set()
    report = warm_page_cache([big], budget=None, stopping=stopping)
    assert report.stopped and report.warmed == [] and report.bytes == 0
