"""Typed settings, built once at an entry point (CLI, server, test) and passed down.

Nothing in the engine reads the environment: :meth:`RuntimeSettings.from_environment` is
called by the entry points only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Device = Literal["auto", "cpu", "cuda"]

#: Where ``spyglass models pull`` downloads from unless ``SPYGLASS_HUB_URL`` (or
#: Hugging Face's own ``HF_ENDPOINT``) names a mirror.
DEFAULT_HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class RuntimeSettings:
    """Where prepared model files live and what hardware runs the models."""

    cache_dir: Path
    device: Device = "auto"
    #: Threads per inference session; ``None`` lets the runtime decide.
    threads: int | None = None
    #: Where ``spyglass models pull`` fetches checkpoints: an http(s) base read as the
    #: Hugging Face hub (``{url}/{repo}/resolve/{revision}/{file}``), or a ``file://`` URL
    #: or directory holding ``{repo}/{file}`` (a local mirror). Nothing else downloads.
    hub_url: str = DEFAULT_HUB_URL
    #: Called with one line per step while a model is prepared for its first use (the
    #: bundled model's ONNX export takes tens of seconds): the engine never prints, so an
    #: entry point that wants people to see why nothing happens passes a printer here.
    report_model_preparation: Callable[[str], None] | None = field(
        default=None, compare=False, repr=False
    )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> RuntimeSettings:
        cache = environ.get("SPYGLASS_CACHE_DIR") or os.path.join(
            environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spyglass"
        )
        device = environ.get("SPYGLASS_DEVICE", "auto")
        if device not in ("auto", "cpu", "cuda"):
            device = "auto"
        threads = environ.get("SPYGLASS_THREADS")
        hub_url = environ.get("SPYGLASS_HUB_URL") or environ.get("HF_ENDPOINT") or DEFAULT_HUB_URL
        return cls(
            cache_dir=Path(cache),
            device=device,  # type: ignore[arg-type]
            threads=int(threads) if threads and threads.isdigit() else None,
            hub_url=hub_url,
        )


def default_index_folder(
    environ: Mapping[str, str] = os.environ, platform: str = sys.platform
) -> Path:
    """Where the index lives when the command line names none: the platform's folder for
    per-user application data, so that `spyglass index ~/Pictures` and then
    `spyglass search "a dog"` meet without a flag (as rclip does).

    Linux and other Unixes: ``$XDG_DATA_HOME/spyglass/index`` (``~/.local/share`` when
    unset or not absolute, as the XDG spec says); macOS: ``~/Library/Application
    Support/spyglass/index``; Windows: ``%LOCALAPPDATA%\\spyglass\\index``.
    """
    home = Path(environ.get("HOME") or environ.get("USERPROFILE") or Path.home())
    if platform == "darwin":
        base = home / "Library" / "Application Support"
    elif platform.startswith(("win32", "cygwin")):
        local = environ.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
    else:
        xdg = environ.get("XDG_DATA_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else home / ".local" / "share"
    return base / "spyglass" / "index"


@dataclass(frozen=True)
class IngestSettings:
    """How indexing reads, decodes and commits."""

    #: Images per encoder call.
    batch_size: int = 32
    #: Images per durable commit; a crash loses at most this much work.
    commit_every: int = 256
    #: Threads that read, hash and decode files while the encoder runs (with
    #: ``decode_in="processes"``: worker processes that decode, and as many threads that
    #: read).
    decode_workers: int = 2
    #: Where files are decoded and preprocessed: ``threads`` of this process, or worker
    #: ``processes`` (only for encoders whose preprocessing a process can import; others
    #: use threads). On 2 cores processes cost 17-25% more CPU per image (the pixels
    #: travel back through a pipe) and indexed 0.81x as fast (docs/ingest.md). Workers are
    #: started with "spawn": a program that asks for them must guard its main module
    #: with ``if __name__ == "__main__":``.
    decode_in: Literal["threads", "processes"] = "threads"
    #: Full batches decoded ahead of the encoder: while it embeds one batch, this many
    #: more are being decoded (0: the next batch starts once this one is embedded; 1
    #: indexed 1.11-1.20x faster than 0 on 2 cores).
    decode_ahead_batches: int = 1
    #: Images declaring more pixels than this are refused before decoding (bomb guard).
    max_pixels: int = 150_000_000
    #: Files larger than this are refused without being read.
    max_file_bytes: int = 512 * 1024 * 1024
    #: Also embed ``crop_grid`` x ``crop_grid`` half-overlapping crops of every image so
    #: that small objects can be found (SeeSaw's multiscale, SORCE's multi-embedding).
    #: 0 = off; each image then costs ``1 + crop_grid**2`` encoder passes. ``None``:
    #: keep what the index already uses.
    crop_grid: int | None = None


#: How a space's vectors are searched: ``exact`` scores every row; ``approximate`` probes
#: a FAISS IVF index and re-scores its candidates exactly; ``auto`` picks by size.
VectorIndexKind = Literal["auto", "exact", "approximate"]


@dataclass(frozen=True)
class VectorSearchSettings:
    """Which index searches the vectors, and how hard the approximate one looks.

    The float16 rows on disk stay the source of truth: the approximate index is derived
    from them, saved next to them, and its candidates are always re-scored exactly.
    """

    kind: VectorIndexKind = "auto"
    #: With ``auto``, spaces with fewer rows than this are searched exactly: below it an
    #: exact scan costs a few milliseconds and training an index is not worth it.
    approximate_from_rows: int = 100_000
    #: Clusters probed per query: more is slower and closer to exact. ``None``: the
    #: fewest whose Recall@10, measured when the index was built, reached
    #: ``target_recall``.
    nprobe: int | None = None
    #: Recall@10 against exact that picks nprobe when it is not given. Measured with the
    #: index's own rows as queries; text queries scatter more, hence the margin over the
    #: 0.95 promised in docs/performance.md.
    target_recall: float = 0.97
    #: Candidates re-scored exactly from the float16 rows per query (at least 4 x k; four
    #: times as many with 4-bit PQ codes, whose order is rougher). With 8-bit codes at
    #: 1M rows, 25, 50 and 100 gave the same Recall@10; each 50 more cost about 0.2 ms.
    rescore: int = 50
    #: Bytes of memory a space's search structure may take (``None``: no limit). It
    #: picks the index: with ``auto``, a space whose exact store's float32 copy
    #: (rows x dims x 4 bytes) would not fit is searched approximately even below
    #: ``approximate_from_rows``; the approximate index gets 8-bit scalar codes
    #: (``dims`` + 8 bytes a row) when they fit, else the largest 4-bit product codes
    #: that do (``dims / 4`` down to ``dims / 32`` bytes a row, + 8), whose candidates
    #: are rougher and lean more on the exact re-scoring. A budget that not even those
    #: fit fails the build with the size needed; the space is searched exactly then.
    memory_budget: int | None = None
    #: Codes to use whatever the budget: ``"SQ8"`` or ``"PQ{m}x4fs"`` (FAISS names);
    #: ``None`` lets ``memory_budget`` choose.
    codes: str | None = None
    #: Retrain the index (new clusters) once the rows have grown by this factor since it
    #: was trained; until then new rows are added to the trained index.
    retrain_growth: float = 2.0
    #: The writer saves the index again once rows not yet in the saved file reach this
    #: fraction of it, so that opening adds at most that many rows.
    save_growth: float = 0.1
    #: Train and save on a thread while searches use the previous index (or exact
    #: search); ``False`` does it inside the flush that calls for it (tests).
    build_in_background: bool = True
    #: Whether the approximate index's candidates are looked for on a GPU: ``"auto"``
    #: when FAISS was built with GPU support (``faiss-gpu-cu12`` in place of
    #: ``faiss-cpu``) and sees one, ``"off"`` never (``--device cpu``). See
    #: :mod:`spyglass.store.gpu`.
    gpu: Literal["auto", "off"] = "auto"

    def wants_approximate(self, rows: int, dims: int) -> bool:
        """Whether a space of ``rows`` x ``dims`` is to be searched approximately."""
        if self.kind != "auto" or rows == 0:
            return self.kind == "approximate" and rows > 0
        exact_bytes = rows * dims * 4
        over_budget = self.memory_budget is not None and exact_bytes > self.memory_budget
        return rows >= self.approximate_from_rows or over_budget


def format_bytes(count: float) -> str:
    """``1.5 GiB``, ``520 MiB``, ``2.2 KiB``, ``900 B``: sizes in messages."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            value = count / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{count:.0f} B"


#: Units ``parse_bytes`` takes; bare K, M, G, T are binary, as ``ls -h`` shows sizes.
_UNITS = {
    "": 2**20,
    "b": 1,
    "k": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": 2**20,
    "mib": 2**20,
    "mb": 10**6,
    "g": 2**30,
    "gib": 2**30,
    "gb": 10**9,
    "t": 2**40,
    "tib": 2**40,
    "tb": 10**12,
}


def parse_bytes(text: str) -> int:
    """``"4GiB"`` -> 4294967296: a size with a unit (B, KiB, MiB, GiB, TiB; KB, MB,
    GB, TB in powers of ten; K, M, G, T binary), or a plain number of MiB. Raises
    ``ValueError`` for anything else, or a size that is not positive."""
    cleaned = text.strip().lower().replace(" ", "").replace("_", "")
    number = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = cleaned[len(number) :]
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a size such as 4GiB or 512MiB") from None
    if unit not in _UNITS:
        raise ValueError(f"{text!r} has an unknown unit: use B, KiB, MiB, GiB or TiB")
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return size
