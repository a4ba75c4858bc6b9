"""Typed settings, built once at an entry point (CLI, server, test) and passed down.

Nothing in the engine reads the environment: :meth:`RuntimeSettings.from_environment` is
called by the entry points only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class RuntimeSettings:
    """Where prepared model files live and what hardware runs the models."""

    cache_dir: Path
    device: Device = "auto"
    #: Threads per inference session; ``None`` lets the runtime decide.
    threads: int | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> RuntimeSettings:
        cache = environ.get("SPYGLASS_CACHE_DIR") or os.path.join(
            environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spyglass"
        )
        device = environ.get("SPYGLASS_DEVICE", "auto")
        if device not in ("auto", "cpu", "cuda"):
            device = "auto"
        threads = environ.get("SPYGLASS_THREADS")
        return cls(
            cache_dir=Path(cache),
            device=device,  # type: ignore[arg-type]
            threads=int(threads) if threads and threads.isdigit() else None,
        )


@dataclass(frozen=True)
class IngestSettings:
    """How indexing reads, decodes and commits."""

    #: Images per encoder call.
    batch_size: int = 32
    #: Images per durable commit; a crash loses at most this much work.
    commit_every: int = 256
    #: Threads that read, hash and decode files while the encoder runs.
    decode_workers: int = 2
    #: Images declaring more pixels than this are refused before decoding (bomb guard).
    max_pixels: int = 150_000_000
    #: Files larger than this are refused without being read.
    max_file_bytes: int = 512 * 1024 * 1024
    #: Also embed ``crop_grid`` x ``crop_grid`` half-overlapping crops of every image so
    #: that small objects can be found (SeeSaw's multiscale, SORCE's multi-embedding).
    #: 0 = off; each image then costs ``1 + crop_grid**2`` encoder passes. ``None``:
    #: keep what the index already uses.
    crop_grid: int | None = None
