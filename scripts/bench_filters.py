"""What a metadata filter costs inside each embedded store: search time for a selection
keeping 0.1% to 50% of the rows, against the same store unfiltered in the same run.

    PYTHONPATH=src python scripts/bench_filters.py [--rows 100000] [--dims 512]

Random unit vectors (float16 on disk, as indexes keep them), one query at a time, k=10.
The exact store hands every selection to FAISS as a bitmap selector; the IVF store
scores a small selection's rows itself (at most EXACT_SELECTION_ROWS) and searches its
inverted lists with a bitmap selector for a larger one. Also prints the share of the
exact filtered top 10 each returns (a narrow filter still gets k).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from spyglass.settings import VectorSearchSettings
from spyglass.store.ivf import EXACT_SELECTION_ROWS, IvfVectorStore
from spyglass.store.local import LocalVectorStore

FRACTIONS = (None, 0.001, 0.005, 0.01, 0.02, 0.1, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.rows, args.dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.rows, args.queries, replace=False)] + 0.1 * rng.normal(
        size=(args.queries, args.dims)
    ).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    owners = np.arange(args.rows, dtype=np.int64)
    exact16 = vectors.astype(np.float16).astype(np.float32)
    print(
        f"{args.rows:,} rows x {args.dims} dims, {args.queries} queries, k=10; "
        f"IVF scores selections of up to {EXACT_SELECTION_ROWS:,} rows directly"
    )
    with tempfile.TemporaryDirectory() as folder:
        local = LocalVectorStore(Path(folder) / "exact", "joint", args.dims, 0, writer=True)
        ivf = IvfVectorStore(
            Path(folder) / "ivf",
            "joint",
            args.dims,
            0,
            writer=True,
            settings=VectorSearchSettings(kind="approximate", build_in_background=False),
        )
        for store in (local, ivf):
            store.add(owners, vectors)
            store.flush()
        ivf.wait_for_index()
        print(f"ivf: {ivf.describe().summary}")
        for name, store in (("exact", local), ("ivf", ivf)):
            baseline = None
            for fraction in FRACTIONS:
                among = (
                    None
                    if fraction is None
                    else np.sort(rng.choice(args.rows, int(args.rows * fraction), replace=False))
                )
                store.search(queries[:2], 10, among=among)  # warm: FAISS copy, index
                times, hits = [], []
                for query in queries:
                    start = time.perf_counter()
                    found = store.search(query[None], 10, among=among)
                    times.append(time.perf_counter() - start)
                    kept = owners if among is None else among
                    scores = exact16[kept] @ query
                    truth = set(kept[np.argsort(-scores)[:10]].tolist())
                    hits.append(len(truth & set(found.owners[0].tolist())) / 10)
                median = statistics.median(times) * 1000
                baseline = baseline or median
                label = "none" if fraction is None else f"{fraction:.1%}"
                print(
                    f"{name:5s} selection {label:>6s}: {median:7.2f} ms/query "
                    f"({median / baseline:4.2f}x unfiltered), recall@10 {np.mean(hits):.3f}"
                )


if __name__ == "__main__":
    main()
