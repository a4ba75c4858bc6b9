"""A server started with preparation reads its index's files ahead into the page cache
(spyglass.store.page_cache), on a thread of its own, and stops that at shutdown."""

from __future__ import annotations

import time
from pathlib import Path

from spyglass.engine import Spyglass

from .conftest import make_app


def test_a_server_reads_its_index_files_ahead_at_start(server_engine: Spyglass, tmp_path: Path):
    state = make_app(server_engine, cache_dir=tmp_path, prepare_at_start=True).state.spyglass
    try:
        deadline = time.monotonic() + 30
        while state.page_cache is None and time.monotonic() < deadline:
            time.sleep(0.05)
        report = state.page_cache
        assert report is not None and not report.stopped
        vectors = server_engine.index.folder / "vectors"
        expected = {p.name for p in vectors.iterdir() if p.suffix in (".f16", ".ids")}
        assert {p.name for p in report.warmed} == expected
        assert report.bytes == sum((vectors / name).stat().st_size for name in expected)
    finally:
        state.close()


def test_without_preparation_nothing_is_read_ahead(server_engine: Spyglass, tmp_path: Path):
    state = make_app(server_engine, cache_dir=tmp_path, prepare_at_start=False).state.spyglass
    time.sleep(0.2)
    assert state.page_cache is None
    state.close()
