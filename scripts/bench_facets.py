"""What the filter panel's unfiltered counts cost with the catalogue's stored counts,
against counting by SQL, and what keeping them adds to a commit.

    PYTHONPATH=src python scripts/bench_facets.py [--images 1000000] [--rounds 10]

Builds an index whose catalogue holds ``--images`` synthetic images (rows written
directly, no vectors: facets read the catalogue only): three roots of 20 top folders
each, two levels of sub-folders, a tenth of the images with a second path (a copy),
half with an EXIF date, a third with a camera (10 models), a fifth with GPS; then
counts the facets in full once and stores them. Measures:

- unfiltered facets by SQL (what every first call paid before: ``recount_facets``)
  against the stored counts (``count_facets``, what it pays now);
- a commit of 256 new images through ``Index.commit`` with the counts' upkeep and
  without it (the counts marked not kept, so the upkeep is skipped), interleaved
  rounds, medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from spyglass.encoders.base import EncoderInfo
from spyglass.image_meta import HeaderMeta
from spyglass.query.filters import count_facets, recount_facets
from spyglass.store.catalogue import FACET_COUNTS_KEPT, FileState, NewImage
from spyglass.store.facet_counts import store_full_count
from spyglass.store.index import Index

INFO = EncoderInfo("bench", "1", {"joint": 4})
ROOTS = ("/photos/archive", "/photos/phone", "/mnt/scans")
YEAR = 365.2425 * 86400
COMMIT = 256
CHUNK = 100_000


def image(n: int, rng: np.random.Generator) -> NewImage:
    camera = n % 3 == 0
    meta = HeaderMeta(
        taken_at=(30 + n % 25) * YEAR + n % 1000 if n % 2 == 0 else None,
        make=f"Make{n % 5}" if camera else None,
        model=f"Model{n % 10}" if camera else None,
        latitude=48.0 if n % 5 == 0 else None,
        longitude=2.0 if n % 5 == 0 else None,
    )
    return NewImage(f"hash-{n}", 640, 480, "JPEG" if n % 4 else "PNG", meta)


def path(n: int, copy: bool = False) -> str:
    root = ROOTS[n % len(ROOTS)]
    return f"{root}/top{n % 20}/sub{n % 7}/{'copies/' if copy else ''}img{n}.jpg"


def build(index: Index, images: int) -> None:
    """``images`` rows written straight into the catalogue (the counts marked not kept,
    then counted in full once)."""
    catalogue = index.catalogue
    rng = np.random.default_rng(0)
    with catalogue.transaction():
        catalogue.set_meta(FACET_COUNTS_KEPT, "0")
        catalogue.add_roots(ROOTS)
    for start in range(0, images, CHUNK):
        stop = min(start + CHUNK, images)
        with catalogue.transaction():
            catalogue.insert_images(start, [image(n, rng) for n in range(start, stop)])
            files = [
                FileState(path(n), n, 1000, int((20 + n % 30) * YEAR * 1e9))
                for n in range(start, stop)
            ]
            files += [
                FileState(path(n, copy=True), n, 1000, int(25 * YEAR * 1e9))
                for n in range(start, stop)
                if n % 10 == 0
            ]
            catalogue.upsert_files(files)


def commit_batch(index: Index, first: int, rng: np.random.Generator) -> float:
    images = [image(first + n, rng) for n in range(COMMIT)]
    files = [(path(first + n), 1000, int(40 * YEAR * 1e9), n) for n in range(COMMIT)]
    vectors = {"joint": np.ones((COMMIT, 4), np.float32)}
    started = time.perf_counter()
    index.commit(images, vectors, files)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as scratch:
        index = Index.open_for_writing(Path(scratch) / "index", INFO)
        started = time.perf_counter()
        build(index, args.images)
        print(f"built {args.images:,} images in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        store_full_count(index.catalogue)
        print(f"full count stored once: {time.perf_counter() - started:.2f} s")

        started = time.perf_counter()
        by_sql = recount_facets(index.catalogue)
        sql_s = time.perf_counter() - started
        stored_times = []
        for _ in range(20):
            started = time.perf_counter()
            stored = count_facets(index.catalogue)
            stored_times.append(time.perf_counter() - started)
        assert stored == by_sql, "stored counts differ from the SQL's"
        stored_s = statistics.median(stored_times)
        print(
            f"unfiltered facets, {by_sql.total:,} images, {len(by_sql.folders)} folders: "
            f"SQL {sql_s:.2f} s, stored {stored_s * 1000:.2f} ms (median of 20), "
            f"{sql_s / stored_s:,.0f}x"
        )

        kept, skipped = [], []
        next_id = index.catalogue.next_image_id()
        commit_batch(index, next_id, rng)  # warm: the store's first rows
        next_id += COMMIT
        for _ in range(args.rounds):
            for upkeep in (True, False):
                with index.catalogue.transaction():
                    index.catalogue.set_meta(FACET_COUNTS_KEPT, "1" if upkeep else "0")
                (kept if upkeep else skipped).append(commit_batch(index, next_id, rng))
                next_id += COMMIT
        with_ms = statistics.median(kept) * 1000
        without_ms = statistics.median(skipped) * 1000
        print(
            f"commit of {COMMIT} new images, medians of {args.rounds} interleaved rounds: "
            f"{with_ms:.1f} ms with the counts' upkeep, {without_ms:.1f} ms without "
            f"(+{with_ms - without_ms:.1f} ms, {with_ms / without_ms:.2f}x)"
        )
        # The rounds without upkeep left the stored counts behind; marked kept all
        # the same, so that closing does not count in full an index about to go.
        with index.catalogue.transaction():
            index.catalogue.set_meta(FACET_COUNTS_KEPT, "1")
        index.close()


if __name__ == "__main__":
    main()
