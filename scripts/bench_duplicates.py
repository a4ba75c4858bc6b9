#!/usr/bin/env python
"""Measure near-duplicate grouping: precision and recall at several thresholds.

Builds a test set from real images (SPYGLASS_TEST_DATA): sources drawn from Caltech-101
and PACS, each with edited copies (JPEG re-encodes at quality 30 and 60, resizes to
0.5x and 0.25x, crops to 90% and 80%, two colour shifts), plus distinct images of the
sources' classes as negatives. Indexes them with the bundled model, groups them with
:func:`spyglass.casework.duplicates.find_duplicate_groups` at each threshold, and
scores the grouping by pairs: a pair of images is *true* when both come from the same
source; precision is the share of the pairs put in one group that are true, recall the
share of true pairs put in one group. A perceptual hash (pHash, ``imagehash``) is
scored the same way, alone and joined with the embedding's groups.

    SPYGLASS_TEST_DATA=../shared/data python scripts/bench_duplicates.py --sources 100

prints a Markdown table (docs/casework.md holds the last one).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image, ImageEnhance

from spyglass.casework.duplicates import (
    DuplicateRule,
    Edge,
    UnionFind,
    find_duplicate_groups,
    hash_index,
)
from spyglass.casework.perceptual import PerceptualHashes
from spyglass.engine import Spyglass
from spyglass.settings import RuntimeSettings

Transform = Callable[[Image.Image], Image.Image]


def _crop(share: float, rng: random.Random) -> Transform:
    def crop(image: Image.Image) -> Image.Image:
        width, height = image.size
        w, h = int(width * share), int(height * share)
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        return image.crop((left, top, left + w, top + h))

    return crop


def _resize(scale: float) -> Transform:
    def resize(image: Image.Image) -> Image.Image:
        width, height = image.size
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        return image.resize(size, Image.Resampling.LANCZOS)

    return resize


def _colour(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(ImageEnhance.Color(image).enhance(1.5)).enhance(1.15)


def _warm(image: Image.Image) -> Image.Image:
    red, green, blue = image.split()
    red = red.point(lambda v: min(255, int(v * 1.12 + 10)))
    blue = blue.point(lambda v: int(v * 0.85))
    return Image.merge("RGB", (red, green, blue))


def transforms(rng: random.Random) -> dict[str, tuple[Transform, int]]:
    """name -> (edit, JPEG quality of the saved copy)."""
    same: Transform = lambda image: image  # noqa: E731 - a re-encode changes only the bytes
    return {
        "jpeg-q30": (same, 30),
        "jpeg-q60": (same, 60),
        "resize-0.5": (_resize(0.5), 90),
        "resize-0.25": (_resize(0.25), 90),
        "crop-90": (_crop(0.9, rng), 90),
        "crop-80": (_crop(0.8, rng), 90),
        "colour": (_colour, 90),
        "warm": (_warm, 90),
    }


def read_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def pick(data: Path, sources: int, negatives: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Sources and same-class negatives, half from Caltech-101 (objects) and half from
    PACS (photos, cartoons, sketches)."""
    rng = random.Random(seed)
    caltech = [
        r
        for r in read_rows(data / "caltech101")
        if r["is_background"] == "0" and r["label"] not in ("Faces_easy",)
    ]
    pacs = read_rows(data / "pacs")
    chosen: list[Path] = []
    others: list[Path] = []
    for folder, rows in ((data / "caltech101", caltech), (data / "pacs", pacs)):
        rows = sorted(rows, key=lambda r: r["path"])
        rng.shuffle(rows)
        mine = rows[: sources // 2]
        classes = {r["label"] for r in mine}
        rest = [r for r in rows[sources // 2 :] if r["label"] in classes]
        chosen += [folder / r["path"] for r in mine]
        others += [folder / r["path"] for r in rest[: negatives // 2]]
    return chosen, others


def write_set(
    sources: list[Path], negatives: list[Path], folder: Path, seed: int
) -> dict[str, tuple[int, str]]:
    """Writes the images; returns file path -> (source number, edit name).
    Negatives get source numbers of their own (no true pair)."""
    rng = random.Random(seed)
    edits = transforms(rng)
    truth: dict[str, tuple[int, str]] = {}
    for number, source in enumerate(sources + negatives):
        with Image.open(source) as opened:
            image = opened.convert("RGB")
        original = folder / f"s{number:04d}-original.png"
        image.save(original)
        truth[str(original)] = (number, "original")
        if number >= len(sources):
            continue
        for name, (edit, quality) in edits.items():
            target = folder / f"s{number:04d}-{name}.jpg"
            edit(image).save(target, "JPEG", quality=quality)
            truth[str(target)] = (number, name)
    return truth


def pairs_of(groups: Iterable[Iterable[int]]) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    for group in groups:
        found.update(itertools.combinations(sorted(group), 2))
    return found


def score(
    predicted: set[tuple[int, int]],
    true: set[tuple[int, int]],
    edit_of: dict[int, str],
    originals: dict[int, int],
) -> dict[str, float]:
    hits = predicted & true
    result = {
        "precision": len(hits) / len(predicted) if predicted else 1.0,
        "recall": len(hits) / len(true) if true else 1.0,
        "false_pairs": float(len(predicted - true)),
    }
    # Per edit: the share of edited copies put in one group with their original.
    per_edit: dict[str, list[bool]] = {}
    for image, edit in edit_of.items():
        if edit == "original":
            continue
        original = originals[image]
        pair = (min(image, original), max(image, original))
        per_edit.setdefault(edit, []).append(pair in predicted)
    for edit, found in per_edit.items():
        result[edit] = sum(found) / len(found)
    return result


def phash_edges(hashes: PerceptualHashes, distance: int) -> list[Edge]:
    """Every pair within ``distance`` bits, all pairs compared (the reference a hash
    alone gives; quadratic, so not what the product does)."""
    ids = hashes.ids()
    edges: list[Edge] = []
    for a, b in itertools.combinations(ids, 2):
        gap = hashes.distance(a, b)
        if gap is not None and gap <= distance:
            edges.append((a, b, 1.0 - gap / 64))
    return edges


def components(edges: list[Edge]) -> list[list[int]]:
    joined = UnionFind()
    for a, b, _ in edges:
        joined.union(a, b)
    groups: dict[int, list[int]] = {}
    for item in joined.items():
        groups.setdefault(joined.find(item), []).append(item)
    return list(groups.values())


def check_against_imagehash(files: dict[int, str], hashes: PerceptualHashes) -> str:
    """How many of our hashes equal imagehash's (of the same decoded image)."""
    try:
        import imagehash
    except ImportError:
        return "imagehash not installed: not compared"
    same = 0
    for image_id, path in files.items():
        with Image.open(path) as image:
            image.draft("RGB", (128, 128))
            same += int(str(imagehash.phash(image)), 16) == hashes.get(image_id)
    return f"{same} of {len(files)} hashes equal imagehash.phash's"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=200)
    parser.add_argument("--negatives", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--thresholds", default="0.80,0.85,0.88,0.90,0.92,0.94,0.96,0.98", help="Cosines."
    )
    parser.add_argument("--phash", default="4,8,12,16", help="pHash Hamming distances.")
    parser.add_argument(
        "--confirmed", default="0.90,0.94", help="Cosines joined with a pHash confirmation."
    )
    parser.add_argument("--floors", default="0.5", help="Cosines a pHash-confirmed pair needs.")
    arguments = parser.parse_args()
    thresholds = [float(t) for t in arguments.thresholds.split(",")]
    confirmed = [float(t) for t in arguments.confirmed.split(",")]
    distances = [int(d) for d in arguments.phash.split(",")]
    floors = [float(f) for f in arguments.floors.split(",")]
    data = Path(os.environ.get("SPYGLASS_TEST_DATA", "../shared/data"))
    sources, negatives = pick(data, arguments.sources, arguments.negatives, arguments.seed)
    with tempfile.TemporaryDirectory() as scratch:
        images, index_dir = Path(scratch) / "images", Path(scratch) / "index"
        images.mkdir()
        truth = write_set(sources, negatives, images, arguments.seed)
        started = time.perf_counter()
        with Spyglass.open(
            index_dir, runtime=RuntimeSettings.from_environment(), writable=True
        ) as engine:
            engine.add([str(images)])
        indexed = time.perf_counter() - started
        with Spyglass.open(index_dir, runtime=RuntimeSettings.from_environment()) as engine:
            catalogue = engine.index.catalogue
            files = {
                image_id: path
                for path, image_id in catalogue.execute("SELECT path, image_id FROM files")
            }
            source_of = {i: truth[p][0] for i, p in files.items()}
            edit_of = {i: truth[p][1] for i, p in files.items()}
            original_of_source = {s: i for i, s in source_of.items() if edit_of[i] == "original"}
            originals = {i: original_of_source[source_of[i]] for i in files}
            by_source: dict[int, list[int]] = {}
            for image_id, source in source_of.items():
                by_source.setdefault(source, []).append(image_id)
            true = pairs_of(by_source.values())
            rows: list[tuple[str, dict[str, float], float]] = []
            started = time.perf_counter()
            hashes = hash_index(engine.index, save=False)
            hashing = time.perf_counter() - started
            agreement = check_against_imagehash(files, hashes)
            rules = [DuplicateRule(t, None) for t in thresholds]
            rules += [
                DuplicateRule(t, d, floor) for t in confirmed for d in distances for floor in floors
            ]
            for rule in rules:
                started = time.perf_counter()
                groups = find_duplicate_groups(engine.index, rule, hashes)
                took = time.perf_counter() - started
                predicted = pairs_of(g.members for g in groups)
                name = f"cosine ≥ {rule.threshold:.2f}"
                if rule.phash_distance is not None:
                    name += f" or (≥ {rule.candidate_floor:.2f} and pHash ≤ {rule.phash_distance})"
                rows.append((name, score(predicted, true, edit_of, originals), took))
            for distance in distances:
                started = time.perf_counter()
                predicted = pairs_of(components(phash_edges(hashes, distance)))
                took = time.perf_counter() - started
                rows.append(
                    (
                        f"pHash ≤ {distance} alone, all pairs",
                        score(predicted, true, edit_of, originals),
                        took,
                    )
                )
    edits = list(transforms(random.Random(0)))
    print(
        f"{len(files)} images: {len(sources)} sources x (original + {len(edits)} edits) + "
        f"{len(negatives)} same-class negatives; {len(true)} true pairs; indexed in "
        f"{indexed:.0f} s; pHash of every image {hashing:.1f} s ({agreement})\n"
    )
    print("| grouping | precision | recall | false pairs | " + " | ".join(edits) + " | s |")
    print("|---" * (5 + len(edits)) + "|")
    for name, values, took in rows:
        cells = [
            f"{values['precision']:.3f}",
            f"{values['recall']:.3f}",
            f"{values['false_pairs']:.0f}",
        ]
        cells += [f"{values.get(e, 0.0):.2f}" for e in edits]
        print(f"| {name} | " + " | ".join(cells) + f" | {took:.1f} |")


if __name__ == "__main__":
    main()
