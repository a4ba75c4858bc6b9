"""What a metadata filter costs in the Milvus store: the filters as one expression on
the rows' fields (``where=``) against the ids they keep as an ``owner in [...]`` list
(``among=``, what every search sent before the fields), and the same store unfiltered,
in the same run.

    PYTHONPATH=src python scripts/bench_milvus_filters.py [--rows 100000] [--dims 512]

Milvus Lite (a .db in a temporary folder), FLAT index (exact: both ways must return the
same owners), random unit vectors, one query at a time, k=10. Row r's image lies in
nested folders ``/all/top50/top10/top1/top0.1`` cut after the smallest share of a
random order that holds it, so ``--under /all/top10`` keeps 10% of the rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spyglass.query.filters import Filters
from spyglass.store.base import FilterFields
from spyglass.store.milvus import MilvusVectorStore, parse_milvus_url

#: (folder, share of the rows it holds), widest first.
LEVELS = (("top50", 0.5), ("top10", 0.1), ("top1", 0.01), ("top0.1", 0.001))


def folder_of(rank: int, rows: int) -> str:
    parts = ["/all"]
    for name, share in LEVELS:
        if rank >= share * rows:
            break
        parts.append(name)
    return "/".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--queries", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.rows, args.dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.normal(size=(args.queries, args.dims)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    owners = np.arange(1, args.rows + 1, dtype=np.int64)
    rank = rng.permutation(args.rows)
    folders = [folder_of(int(r), args.rows) for r in rank]
    fields = {
        int(o): FilterFields((f"{f}/{o}.jpg",), 1.6e9, "JPEG", 640, 480, " ", False)
        for o, f in zip(owners, folders, strict=True)
    }
    with tempfile.TemporaryDirectory() as folder:
        location = parse_milvus_url(f"milvus://{folder}/bench.db", Path(folder))
        store = MilvusVectorStore(location, "joint", args.dims, 0, writer=True, owner="bench")
        started = time.perf_counter()
        for start in range(0, args.rows, 20_000):
            chunk = owners[start : start + 20_000]
            store.add(chunk, vectors[start : start + 20_000])
            store.flush_with_fields({int(o): fields[int(o)] for o in chunk})
        print(
            f"{args.rows:,} rows x {args.dims} dims into Milvus Lite (FLAT) in "
            f"{time.perf_counter() - started:.0f} s; {args.queries} single queries, k=10, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'kept':>8} {'ids':>8} {'expression p50 ms':>18} {'id list p50 ms':>15} {'same':>5}"
        )
        plain = [timed(store.search, q[None], 10) for q in queries]
        print(f"{'all':>8} {args.rows:>8,} {statistics.median(plain):18.0f} {'-':>15} {'-':>5}")
        path = "/all"
        for name, share in LEVELS:
            path += f"/{name}"
            filters = Filters(under=(path,))
            among = np.sort(owners[[f.startswith(path) for f in folders]])
            same = True
            by_expression, by_list = [], []
            for q in queries:
                a = store.search(q[None], 10, where=filters)
                b = store.search(q[None], 10, among=among)
                same &= [o for o, _ in a.row(0)] == [o for o, _ in b.row(0)]
                by_expression.append(timed(store.search, q[None], 10, where=filters))
                by_list.append(timed(store.search, q[None], 10, among=among))
            print(
                f"{share:>8.1%} {len(among):>8,} {statistics.median(by_expression):18.0f} "
                f"{statistics.median(by_list):15.0f} {same!s:>5}"
            )
        store.close()


def timed(call: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Milliseconds one call took."""
    started = time.perf_counter()
    call(*args, **kwargs)
    return (time.perf_counter() - started) * 1000


if __name__ == "__main__":
    main()
