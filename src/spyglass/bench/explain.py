"""`spyglass bench explain`: do explanations point at the object that matched, and what
does one cost?

No labelled set marks where objects are, so the benchmark makes one from real images:
a Caltech-101 photo of a class the bundled model knows (ImageNet names it) is scaled to
20-30% of the area of a real background photo (PACS photos of houses and people, and
the Debian wallpapers of ``photos/``, cut square) and pasted at a seeded random place.
Each composite is explained twice:

* ``text``: the query is the class name ("a photo of a dalmatian"), in the joint space;
* ``image``: the query is the pasted photo itself, in the image space.

A case is a hit when the heatmap's peak (its hottest cell's centre) falls inside the
pasted box. Chance is the box's area fraction (a uniformly random peak); beside it
``flat`` is the same code with masks that hide nothing (``fill=none``), whose peak is
always the first cell. The cost is wall-clock seconds per explanation (all its forward
passes, preprocessing included), measured over the same cases.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from spyglass.casework.explain import (
    Heatmap,
    OcclusionSettings,
    cosine_with,
    occlusion_heatmap,
)
from spyglass.cli.options import runtime_settings
from spyglass.encoders import Encoder, load_encoder
from spyglass.encoders.base import embed_images

#: Side of every composite, in pixels (the model crops 224 of 256: the whole square
#: but a thin border is seen).
CANVAS = 256
#: The pasted photo covers this fraction of the composite's area (uniform in between).
AREA = (0.20, 0.30)
#: Caltech-101 classes ImageNet names, with the words of their text query.
CLASSES = {
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
    "accordion": "accordion",
    "airplanes": "airplane",
    "binocular": "binoculars",
    "cannon": "cannon",
    "cellphone": "mobile phone",
    "crayfish": "crayfish",
    "cup": "cup",
    "dalmatian": "dalmatian",
    "dragonfly": "dragonfly",
    "electric_guitar": "electric guitar",
    "flamingo": "flamingo",
    "grand_piano": "grand piano",
    "laptop": "laptop",
    "llama": "llama",
    "panda": "panda",
    "pizza": "pizza",
    "revolver": "revolver",
    "rooster": "rooster",
    "saxophone": "saxophone",
    "schooner": "schooner",
    "scorpion": "scorpion",
    "soccer_ball": "soccer ball",
    "starfish": "starfish",
    "stop_sign": "stop sign",
    "strawberry": "strawberry",
    "umbrella": "umbrella",
    "watch": "watch",
}
PROMPT = "a photo of a {}"


@dataclass(frozen=True)
class PastedCase:
    """A composite with a known object box: (left, top, right, bottom) fractions."""

    image: Image.Image
    thing: Image.Image
    words: str
    box: tuple[float, float, float, float]

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return (right - left) * (bottom - top)

    def holds(self, point: tuple[float, float]) -> bool:
        left, top, right, bottom = self.box
        return left <= point[0] <= right and top <= point[1] <= bottom


def read_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def background_paths(data: Path) -> list[Path]:
    """Real photos without any of :data:`CLASSES` in them, sorted."""
    pacs = [
        data / "pacs" / row["path"]
        for row in read_rows(data / "pacs")
        if row["domain"] == "photo" and row["label"] in ("house", "person")
    ]
    photos = [data / "photos" / row["path"] for row in read_rows(data / "photos")]
    return sorted(pacs + photos)


def square(image: Image.Image, side: int) -> Image.Image:
    """The centre square of ``image``, resized to ``side``."""
    image = image.convert("RGB")
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    return image.crop((left, top, left + short, top + short)).resize(
        (side, side), Image.Resampling.BICUBIC
    )


def make_cases(data: Path, count: int, seed: int = 0) -> list[PastedCase]:
    """``count`` composites, classes taken in turn, photos and places drawn from
    ``seed``."""
    rows = read_rows(data / "caltech101")
    by_class: dict[str, list[str]] = {}
    for row in rows:
        if row["label"] in CLASSES:
            by_class.setdefault(row["label"], []).append(row["path"])
    labels = sorted(by_class)
    backgrounds = background_paths(data)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(backgrounds))
    cases = []
    for n in range(count):
        label = labels[n % len(labels)]
        photos = sorted(by_class[label])
        with Image.open(data / "caltech101" / photos[int(rng.integers(len(photos)))]) as opened:
            thing = opened.convert("RGB")
        with Image.open(backgrounds[int(order[n % len(order)])]) as opened:
            canvas = square(opened, CANVAS)
        area = float(rng.uniform(*AREA)) * CANVAS * CANVAS
        aspect = thing.width / thing.height
        width = min(CANVAS, round((area * aspect) ** 0.5))
        height = min(CANVAS, round(width / aspect))
        pasted = thing.resize((width, height), Image.Resampling.BICUBIC)
        left = int(rng.integers(0, CANVAS - width + 1))
        top = int(rng.integers(0, CANVAS - height + 1))
        canvas.paste(pasted, (left, top))
        box = (left / CANVAS, top / CANVAS, (left + width) / CANVAS, (top + height) / CANVAS)
        cases.append(PastedCase(canvas, thing, CLASSES[label], box))
    return cases


def explain_case(
    encoder: Encoder, case: PastedCase, kind: str, settings: OcclusionSettings
) -> Heatmap:
    """The heatmap over ``case.image`` for its ``text`` or ``image`` query."""
    if kind == "text":
        vector = encoder.embed_texts([PROMPT.format(case.words)])[0]
        space = encoder.info.text_space
    else:
        space = encoder.info.image_space
        vector = embed_images(encoder, [case.thing])[space][0]
    return occlusion_heatmap(encoder, case.image, cosine_with(space, vector), settings)


def localisation(
    encoder: Encoder, cases: list[PastedCase], kind: str, settings: OcclusionSettings
) -> dict[str, float]:
    """Hit rate of the peak in the box, seconds per explanation, and the baseline:
    seconds to embed the same image once (what an image query costs), timed right
    after each explanation so that both see the same load on a shared machine."""
    hits, seconds, baseline = 0, 0.0, 0.0
    for case in cases:
        started = time.perf_counter()
        heatmap = explain_case(encoder, case, kind, settings)
        seconds += time.perf_counter() - started
        started = time.perf_counter()
        embed_images(encoder, [case.image])
        baseline += time.perf_counter() - started
        hits += case.holds(heatmap.peak())
    return {
        "rate": hits / len(cases),
        "seconds": seconds / len(cases),
        "ratio": seconds / max(baseline, 1e-9),
    }


def markdown(results: dict[str, Any], command_line: str) -> str:
    lines = [
        f"Measured with `{command_line}` ({results['cases']} pasted-object cases, "
        f"bundled model, {results['cpu_count']} cores, load {results['load_before']:.1f} "
        f"before and {results['load_after']:.1f} after).",
        "",
        "| grid | windows | forward passes | query | peak in box | chance (box area) "
        "| no-op masks | s per explanation | x one image embedding |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['grid']}x{row['grid']} | {row['windows']} | {row['passes']} "
            f"| {row['kind']} | {row['rate']:.0%} | {results['chance']:.0%} "
            f"| {row['flat']:.0%} | {row['seconds']:.2f} | {row['ratio']:.0f} |"
        )
    return "\n".join(lines) + "\n"


@click.command("explain")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The shared data folder (holds caltech101/, pacs/, photos/).",
)
@click.option("--cases", type=click.IntRange(1), default=100, show_default=True)
@click.option("--grids", default="6", show_default=True, help="Grids (cells per side) to compare.")
@click.option("--windows", default="2,3", show_default=True, help="Window sides, in cells.")
@click.option(
    "--fill",
    type=click.Choice(["blur", "mean"]),
    default="blur",
    show_default=True,
    help="What hidden windows show.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the table (Markdown) here.",
)
def command(
    data: str, cases: int, grids: str, windows: str, fill: str, seed: int, out: str | None
) -> None:
    """Explanations: how often the heatmap's peak falls on a pasted object, and the
    seconds per explanation."""
    try:
        grid_sizes = [int(g) for g in grids.split(",")]
        window_sides = tuple(int(w) for w in windows.split(","))
        base = OcclusionSettings(windows=window_sides, fill=fill)
        every = [replace(base, grid=g) for g in grid_sizes]
    except ValueError as error:
        raise click.UsageError(f"--grids and --windows: {error}") from error
    encoder = load_encoder("bundled", runtime_settings())
    pasted = make_cases(Path(data), cases, seed)
    chance = float(np.mean([case.area for case in pasted]))
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for settings in every:
        for kind in ("text", "image"):
            measured = localisation(encoder, pasted, kind, settings)
            # The ablation on every grid: its flat map peaks at the first cell, whose
            # centre moves with the grid.
            flat = localisation(encoder, pasted, kind, replace(settings, fill="none"))["rate"]
            row = {
                "grid": settings.grid,
                "windows": ",".join(str(w) for w in settings.windows),
                "passes": settings.copies + 1,
                "kind": kind,
                "rate": measured["rate"],
                "seconds": measured["seconds"],
                "ratio": measured["ratio"],
                "flat": flat,
            }
            rows.append(row)
            click.echo(
                f"grid {settings.grid} ({row['passes']} passes), {kind}: peak in box "
                f"{row['rate']:.0%} (chance {chance:.0%}, no-op masks {row['flat']:.0%}), "
                f"{row['seconds']:.2f} s per explanation ({row['ratio']:.0f}x one embedding)"
            )
    results = {
        "cases": cases,
        "chance": chance,
        "rows": rows,
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    command_line = (
        f"spyglass bench explain --data ../shared/data --cases {cases} --grids {grids} "
        f"--windows {windows} --fill {fill} --seed {seed}"
    )
    table = markdown(results, command_line)
    click.echo(table)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(table)
        click.echo(f"wrote {out}", err=True)
