#!/usr/bin/env python
"""What a near-duplicate pass costs as the index grows: the time of
:func:`spyglass.casework.duplicates.neighbour_edges` per image, on the store the index
would use (exact below 100,000 rows, approximate IVF from there on), over synthetic
unit vectors of the bundled model's image space (1,280 dimensions) in clusters, so
that each image has near neighbours as real collections do.

    python scripts/bench_duplicates_scale.py --rows 20000,40000 --approximate 200000

Each size times a sample of images (--sample) and extrapolates to the whole pass.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from spyglass.casework.duplicates import DuplicateRule, neighbour_edges
from spyglass.settings import VectorSearchSettings
from spyglass.store.factory import open_vector_store

DIMS = 1280


def vectors(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, rows // 50), DIMS)).astype(np.float32)
    picks = rng.integers(0, len(centres), rows)
    matrix = centres[picks] + 0.6 * rng.standard_normal((rows, DIMS)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def measure(rows: int, kind: str, sample: int, seed: int) -> tuple[float, str]:
    settings = VectorSearchSettings(kind=kind)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        writer = open_vector_store(folder, "image", DIMS, 0, writer=True, settings=settings)
        for start in range(0, rows, 50_000):
            chunk = vectors(min(50_000, rows - start), seed + start)
            writer.add(np.arange(start, start + len(chunk), dtype=np.int64), chunk)
            writer.flush()
        maintain = getattr(writer, "maintain", None)
        if maintain is not None:
            maintain()
            writer.wait_for_index()  # type: ignore[attr-defined]
        store = open_vector_store(folder, "image", DIMS, rows, settings=settings)
        rng = np.random.default_rng(seed)
        ids = np.sort(rng.choice(rows, size=min(sample, rows), replace=False)).tolist()
        rule = DuplicateRule(phash_distance=None)
        neighbour_edges(store, ids[:256], rule)  # warm: loads the rows / the index
        started = time.perf_counter()
        neighbour_edges(store, ids, rule)
        per_image = (time.perf_counter() - started) / len(ids)
        describe = getattr(store, "describe", None)
        summary = describe().summary if describe else type(store).__name__
    return per_image, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="20000,40000", help="Sizes searched exactly.")
    parser.add_argument("--approximate", default="200000", help="Sizes searched with IVF.")
    parser.add_argument("--sample", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    print("| rows | store | ms per image | whole pass (extrapolated) |")
    print("|---|---|---|---|")
    sizes = [(int(r), "exact") for r in arguments.rows.split(",") if r]
    sizes += [(int(r), "approximate") for r in arguments.approximate.split(",") if r]
    for rows, kind in sizes:
        per_image, summary = measure(rows, kind, arguments.sample, arguments.seed)
        print(
            f"| {rows:,} | {summary} | {per_image * 1000:.2f} | {per_image * rows / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
