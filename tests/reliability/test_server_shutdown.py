"""Ctrl-C on `spyglass serve` while its background work (the vocabulary, the map) is
inside native code: a clean exit (130, "stopped"), never an abort by the C++ runtime."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from spyglass.settings import RuntimeSettings


def cache_without_server_files(runtime: RuntimeSettings) -> Path:
    """A new cache folder that shares the prepared models (linked) and nothing else."""
    folder = Path(tempfile.mkdtemp(prefix="spyglass-cache-"))
    (folder / "models").symlink_to(Path(runtime.cache_dir) / "models")
    return folder


def test_ctrl_c_while_the_map_and_words_are_prepared(
    sample_photos_index: Path, runtime: RuntimeSettings, serve
) -> None:
    for _ in range(3):
        # No server cache: the vocabulary and the map are computed, not read.
        cache = cache_without_server_files(runtime)
        served = serve(sample_photos_index, env={**os.environ, "SPYGLASS_CACHE_DIR": str(cache)})
        served.process.send_signal(signal.SIGINT)
        served.process.wait(timeout=120)
        stderr = served.stderr.read_text()
        assert served.process.returncode == 130, (served.process.returncode, stderr)
        assert "terminate called" not in stderr and "Traceback" not in stderr, stderr
