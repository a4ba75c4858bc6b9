"""`spyglass bench crops`: what index-time crops (``spyglass index --crops G``) cost in
time and space, and whether they find small objects, against the same index without.

No labelled set here shows small objects (Caltech-101, PACS and the fashion photos are
centred objects filling the frame), so the benchmark makes one from real images:
``--classes`` Caltech-101 classes, ``--per-class`` photos each, every photo shrunk to a
third of the side of a real clutter photo (Caltech's BACKGROUND_Google, one background per
composite) and pasted at a random place; it covers 1/9 of the picture or less. The
composites go to a temporary folder, never into the project.

Each index (one per grid in ``--grids``; 0 = no crops) is built from the same composites
and asked three kinds of question, mean average precision over the composites:

* ``text``: "a photo of a {class}" (the joint space);
* ``image``: a held-out whole photo of the class (the image space);
* ``region``: a composite cropped to the pasted object's box (``ImageTerm.region``,
  what ``spyglass search --image X --region l,t,r,b`` does), the other composites of its
  class relevant; and, as its baseline, ``whole``: the same composite without the box.
"""

from __future__ import annotations

import csv
import os
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from spyglass.cli.options import runtime_settings
from spyglass.encoders import Encoder, load_encoder
from spyglass.engine import Spyglass
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.settings import IngestSettings
from spyglass.store.index import Index

#: Side of every composite, in pixels; the pasted object fits a box a third as wide.
CANVAS = 384
OBJECT = CANVAS // 3


@dataclass(frozen=True)
class Composite:
    path: Path
    label: str
    #: The pasted object's box: (left, top, right, bottom) fractions of the composite.
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class SmallObjects:
    composites: list[Composite]
    #: label -> a photo of that class not pasted anywhere (the image query).
    held_out: dict[str, Path]


def read_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def make_composites(caltech: Path, target: Path, classes: int, per_class: int) -> SmallObjects:
    """Paste ``per_class`` photos of ``classes`` random classes into real clutter photos."""
    rows = read_rows(caltech)
    backgrounds = sorted(r["path"] for r in rows if r["is_background"] == "1")
    by_class: dict[str, list[str]] = {}
    for row in rows:
        if row["is_background"] == "0" and row["label"] != "Faces_easy":
            by_class.setdefault(row["label"], []).append(row["path"])
    rng = np.random.default_rng(0)
    eligible = sorted(label for label, paths in by_class.items() if len(paths) > per_class)
    chosen = sorted(rng.choice(eligible, size=classes, replace=False).tolist())
    if classes * per_class > len(backgrounds):
        raise click.UsageError(
            f"{classes} x {per_class} composites need that many of the "
            f"{len(backgrounds)} background photos"
        )
    order = rng.permutation(len(backgrounds))
    composites, held_out = [], {}
    target.mkdir(parents=True, exist_ok=True)
    for c, label in enumerate(chosen):
        photos = sorted(by_class[label])
        picks = rng.choice(len(photos), size=per_class + 1, replace=False)
        held_out[label] = caltech / photos[int(picks[-1])]
        for n, pick in enumerate(picks[:-1].tolist()):
            background = caltech / backgrounds[int(order[c * per_class + n])]
            canvas = Image.open(background).convert("RGB").resize((CANVAS, CANVAS))
            thing = Image.open(caltech / photos[pick]).convert("RGB")
            thing.thumbnail((OBJECT, OBJECT))
            left = int(rng.integers(0, CANVAS - thing.width + 1))
            top = int(rng.integers(0, CANVAS - thing.height + 1))
            canvas.paste(thing, (left, top))
            path = target / f"{label}-{n:02d}.jpg"
            canvas.save(path, quality=92)
            box = (
                left / CANVAS,
                top / CANVAS,
                (left + thing.width) / CANVAS,
                (top + thing.height) / CANVAS,
            )
            composites.append(Composite(path, label, box))
    return SmallObjects(composites, held_out)


def average_precision(ranked_labels: Iterable[str], label: str, relevant: int) -> float:
    hits, total = 0, 0.0
    for rank, found in enumerate(ranked_labels, 1):
        if found == label:
            hits += 1
            total += hits / rank
    return total / relevant if relevant else 0.0


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def evaluate(engine: Spyglass, data: SmallObjects) -> dict[str, float]:
    """mAP of each kind of question over the composites in ``engine``'s index."""
    label_of = {str(c.path): c.label for c in data.composites}
    count = {label: sum(c.label == label for c in data.composites) for label in data.held_out}
    everything = len(data.composites)

    def ranked(query: Query, leave_out: str | None = None) -> list[str]:
        hits = engine.search(query)
        return [label_of[h.path] for h in hits if h.path != leave_out]

    scores: dict[str, list[float]] = {"text": [], "image": [], "whole": [], "region": []}
    for label, photo in data.held_out.items():
        words = f"a photo of a {label.replace('_', ' ').lower()}"
        text_query = Query((TextTerm(words),), k=everything)
        scores["text"].append(average_precision(ranked(text_query), label, count[label]))
        image_query = Query((ImageTerm(path=str(photo)),), k=everything)
        scores["image"].append(average_precision(ranked(image_query), label, count[label]))
    for composite in data.composites:
        others = count[composite.label] - 1
        for kind, region in (("whole", None), ("region", composite.box)):
            term = ImageTerm(path=str(composite.path), region=region)
            labels = ranked(Query((term,), k=everything), leave_out=str(composite.path))
            scores[kind].append(average_precision(labels, composite.label, others))
    return {kind: float(statistics.mean(values)) for kind, values in scores.items()}


def index_with_grid(
    encoder: Encoder, folder: Path, index_dir: Path, grid: int
) -> tuple[Spyglass, float]:
    settings = IngestSettings(crop_grid=grid)
    engine = Spyglass(encoder, Index.open_for_writing(index_dir, encoder.info), settings)
    started = time.perf_counter()
    engine.add([str(folder)])
    return engine, time.perf_counter() - started


def markdown(results: dict[str, Any], command_line: str) -> str:
    rows = results["grids"]
    base = rows[0]
    lines = [
        "# Benchmark: index-time crops for small objects",
        "",
        "```bash",
        command_line,
        "```",
        "",
        f"{results['composites']} composites of real photos: {results['classes']} "
        f"Caltech-101 classes x {results['per_class']}, each photo shrunk into a "
        f"{OBJECT} px box (1/9 of the area or less) pasted at a random place on its own "
        f"real clutter photo (BACKGROUND_Google) of {CANVAS} x {CANVAS} px. Questions: "
        '`text` = "a photo of a {class}"; `image` = a held-out whole photo of the class; '
        "`region` = a composite cropped to its object's box (`--region`), the other "
        "composites of its class relevant; `whole` = the same composite without the box.",
        "",
        "| crops | embeddings / image | index time | images / s | index size | "
        "text mAP | image mAP | whole mAP | region mAP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        grid = "none" if row["grid"] == 0 else f"{row['grid']} x {row['grid']}"
        lines.append(
            f"| {grid} | {1 + row['grid'] ** 2} | {row['seconds']:.1f} s "
            f"({row['seconds'] / base['seconds']:.1f}x) | {row['images_per_s']:.1f} | "
            f"{row['bytes'] / 1e6:.2f} MB ({row['bytes'] / base['bytes']:.1f}x) | "
            f"{row['text']:.3f} | {row['image']:.3f} | {row['whole']:.3f} | "
            f"{row['region']:.3f} |"
        )
    lines += [
        "",
        f"Machine: {results['cpu_count']} CPUs, load average {results['load_before']:.1f} "
        f"before and {results['load_after']:.1f} after (shared). Index size is the whole "
        "index folder: float16 vectors of both spaces (whole images and crops) and the "
        "SQLite catalogue.",
        "",
    ]
    return "\n".join(lines)


@click.command("crops")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The shared data folder (holds caltech101/).",
)
@click.option("--grids", default="0,2,3", show_default=True, help="Crop grids to compare.")
@click.option("--classes", type=click.IntRange(2), default=15, show_default=True)
@click.option("--per-class", type=click.IntRange(2), default=10, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="docs/bench-crops.md",
    show_default=True,
    help="Markdown report to write.",
)
def command(data: str, grids: str, classes: int, per_class: int, out: str) -> None:
    """Index-time crops: cost in time and size, and mAP on small objects, vs no crops."""
    try:
        chosen = [int(g) for g in grids.split(",")]
    except ValueError as error:
        raise click.UsageError("--grids is a comma-separated list like 0,2,3") from error
    if 0 not in chosen:
        chosen = [0, *chosen]
    encoder = load_encoder("bundled", runtime_settings())
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "composites"
        small = make_composites(Path(data) / "caltech101", folder, classes, per_class)
        for grid in sorted(set(chosen)):
            index_dir = Path(scratch) / f"index-{grid}"
            engine, seconds = index_with_grid(encoder, folder, index_dir, grid)
            with engine:
                quality = evaluate(engine, small)
            row = {
                "grid": grid,
                "seconds": seconds,
                "images_per_s": len(small.composites) / seconds,
                "bytes": folder_bytes(index_dir),
                **quality,
            }
            rows.append(row)
            click.echo(
                f"crops {grid}: {seconds:6.1f} s, {row['bytes'] / 1e6:6.2f} MB, "
                + ", ".join(f"{k} mAP {quality[k]:.3f}" for k in quality)
            )
    results = {
        "composites": len(small.composites),
        "classes": classes,
        "per_class": per_class,
        "grids": rows,
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    command_line = (
        f"spyglass bench crops --data ../shared/data --grids {grids} "
        f"--classes {classes} --per-class {per_class}"
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(markdown(results, command_line))
    click.echo(f"wrote {out}", err=True)
