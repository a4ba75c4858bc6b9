#!/usr/bin/env python
"""Measure indexing with Ray workers against the single-machine pipeline, same run.

Indexes the same real images (PACS photos from SPYGLASS_TEST_DATA) into fresh indexes,
with the bundled model: once with the local pipeline (``spyglass index``), then with 1,
2, ... workers of one local Ray cluster (``spyglass index --ray local[N]``), and with
the local pipeline on one inference thread (what each CPU worker runs); the modes
take turns, ``--repeats`` times. For each it reports the images embedded per second
over the whole run (scan, reading, worker start-up, commits) and once the workers were
up (what a long run approaches), per worker too, and each as a ratio of the local
pipeline's rate in the same round. Then it times what the driver alone spends per image
(reading and hashing, handing the bytes to Ray, committing), which bounds what one
driver can take in however many workers embed, and what a worker spends per image on
each of its steps (decoding, the model), one thread each.

    SPYGLASS_TEST_DATA=../shared/data python scripts/bench_ray_ingest.py --images 300

prints a Markdown table (docs/scale-out.md holds the last one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from spyglass.encoders import Encoder, EncoderInfo, load_encoder, normalize_rows
from spyglass.engine import Spyglass
from spyglass.ingest.decoder import decode_for
from spyglass.ingest.ray_cluster import RayCluster, RaySettings
from spyglass.ingest.ray_runner import RayIngest
from spyglass.ingest.reader import FoundFile, read_and_hash
from spyglass.ingest.writer import GroupWriter
from spyglass.settings import IngestSettings, RuntimeSettings
from spyglass.store.catalogue import NewImage
from spyglass.store.index import Index


def copy_images(data: Path, count: int, folder: Path) -> Path:
    photos = sorted((data / "pacs" / "images" / "photo").rglob("*.jpg"))[:count]
    if len(photos) < count:
        raise SystemExit(f"only {len(photos)} PACS photos under {data}")
    folder.mkdir()
    for n, path in enumerate(photos):
        shutil.copy2(path, folder / f"{n:05d}-{path.parent.name}.jpg")
    return folder


def driver_costs(images: Path, info: EncoderInfo, work: Path, ray: Any) -> dict[str, float]:
    """Seconds per image of what the driver does for each new file, one thread: read and
    hash it, put it into Ray's object store (in batches of 32), commit its vectors (in
    groups of 256; rows of the encoder's sizes). Their sum bounds how many images per
    second one driver can take in, however many workers embed."""
    files = [
        FoundFile(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(images.iterdir())
    ]
    started = time.perf_counter()
    reads = [read_and_hash(f, 1 << 29) for f in files]
    read = (time.perf_counter() - started) / len(reads)
    started = time.perf_counter()
    references = [ray.put(reads[n : n + 32]) for n in range(0, len(reads), 32)]
    put = (time.perf_counter() - started) / len(reads)
    del references
    rng = np.random.default_rng(0)
    with Index.open_for_writing(work / "commit-only", info) as index:
        started = time.perf_counter()
        for start in range(0, len(reads), 256):
            group = reads[start : start + 256]
            writer = GroupWriter(index)
            writer.add_embedded(
                [NewImage(r.content_hash, 227, 227, "JPEG") for r in group],
                [(r.file.path, r.file.size, r.file.mtime_ns) for r in group],
                {
                    space: normalize_rows(rng.standard_normal((len(group), dims)))
                    for space, dims in info.spaces.items()
                },
            )
            writer.commit()
        commit = (time.perf_counter() - started) / len(reads)
    megabytes = sum(len(r.data) for r in reads) / 1e6
    return {"read": read, "put": put, "commit": commit, "megabytes": megabytes}


def worker_costs(images: Path, encoder: Encoder, settings: IngestSettings) -> dict[str, float]:
    """Seconds per image of a CPU worker's two steps, one thread each: decoding and
    preprocessing a file, and the model (batches of ``settings.batch_size``)."""
    reads = [
        read_and_hash(FoundFile(str(p), 0, 0), settings.max_file_bytes)
        for p in sorted(images.iterdir())
    ]
    started = time.perf_counter()
    decoded = [decode_for(encoder, read, settings, []) for read in reads]
    decode = (time.perf_counter() - started) / len(reads)
    pixels = np.stack([d.pixels for d in decoded])
    started = time.perf_counter()
    for start in range(0, len(pixels), settings.batch_size):
        encoder.embed_pixels(pixels[start : start + settings.batch_size])
    model = (time.perf_counter() - started) / len(reads)
    return {"decode": decode, "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = Path(os.environ.get("SPYGLASS_TEST_DATA", "../shared/data"))
    runtime = RuntimeSettings.from_environment()
    encoder = load_encoder("bundled", runtime)
    # What each CPU worker runs: one inference thread (the baseline for its overhead).
    one_thread = load_encoder("bundled", replace(runtime, threads=1))
    settings = IngestSettings()
    rates: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as temporary:
        work = Path(temporary)
        images = copy_images(data, args.images, work / "images")
        settings_for = RaySettings(address=None, local_workers=max(args.workers))
        with RayCluster(settings_for, runtime) as cluster:
            for round_ in range(args.repeats):
                modes = ["local", "local, 1 thread", *(f"ray local[{n}]" for n in args.workers)]
                for mode in modes:
                    folder = work / f"index-{round_}-{len(rates.get(mode, []))}-{modes.index(mode)}"
                    index = Index.open_for_writing(folder, encoder.info)
                    chosen = one_thread if mode == "local, 1 thread" else encoder
                    with Spyglass(chosen, index, settings) as engine:
                        if mode.startswith("local"):
                            report = engine.add([str(images)])
                            startup = 0.0
                        else:
                            workers = int(mode.split("[")[1].rstrip("]"))
                            # One cluster, fewer workers: a plan for `workers` of them.
                            cluster.settings = RaySettings(address=None, local_workers=workers)
                            runner = RayIngest(index, encoder, cluster, settings)
                            report = runner.run([str(images)])
                            startup = runner.startup_seconds
                    steady = report.embedded / max(1e-9, report.seconds - startup)
                    rates.setdefault(mode, []).append((report.embed_rate, steady, startup))
                    print(
                        f"round {round_ + 1} {mode}: {report.embedded} images in "
                        f"{report.seconds:.1f} s ({startup:.1f} s starting workers): "
                        f"{report.embed_rate:.1f} images/s, {steady:.1f} once started",
                        flush=True,
                    )
                    shutil.rmtree(folder)
            costs = driver_costs(images, encoder.info, work, cluster.ray)
            steps = worker_costs(images, one_thread, settings)
    local_whole = statistics.median(r[0] for r in rates["local"])
    local_steady = statistics.median(r[1] for r in rates["local"])
    print()
    print(
        "| mode | images/s, whole run | once workers are up | per worker, once up "
        "| ratio to local (up) | worker start-up |"
    )
    print("|---|---|---|---|---|---|")
    for mode, runs in rates.items():
        whole = statistics.median(r[0] for r in runs)
        steady = statistics.median(r[1] for r in runs)
        startup = statistics.median(r[2] for r in runs)
        workers = int(mode.split("[")[1].rstrip("]")) if "[" in mode else 1
        print(
            f"| {mode} | {whole:.1f} ({whole / local_whole:.2f}x) | {steady:.1f} "
            f"| {steady / workers:.1f} | {steady / local_steady:.2f} | {startup:.1f} s |"
        )

    total = costs["read"] + costs["put"] + costs["commit"]
    per_file = costs["megabytes"] / args.images
    print()
    print(
        f"driver, one thread, per image ({per_file * 1000:.0f} KB files): read and hash "
        f"{costs['read'] * 1e3:.2f} ms ({per_file / costs['read']:.0f} MB/s), put into "
        f"Ray {costs['put'] * 1e3:.2f} ms, commit {costs['commit'] * 1e3:.2f} ms: at most "
        f"{1 / total:,.0f} images/s for one driver"
    )
    print(
        f"worker, one thread, per image: decode and preprocess {steps['decode'] * 1e3:.1f} ms "
        f"({1 / steps['decode']:.0f} images/s), model {steps['model'] * 1e3:.1f} ms "
        f"({1 / steps['model']:.0f} images/s)"
    )


if __name__ == "__main__":
    main()
