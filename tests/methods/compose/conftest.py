"""Fixtures for the composed-query tests: small real indexes of PACS and Fashion images
built once per session with the real bundled model.

The subsets are read in place through a farm of symbolic links (nothing is copied):

- PACS: 4 classes x 3 domains x 20 images = 240 images;
- Fashion: men's shirts, T-shirts and casual shoes in blue, red and black,
  20 of each = 180 images.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.store.index import Index

PACS_CLASSES = ("dog", "elephant", "guitar", "house")
PACS_DOMAINS = ("photo", "sketch", "cartoon")
PACS_PER_CELL = 20
FASHION_TYPES = ("Shirts", "Tshirts", "Casual Shoes")
FASHION_COLOURS = ("Blue", "Red", "Black")
FASHION_PER_CELL = 20


@dataclass(frozen=True)
class Subset:
    """A small indexed collection: its engine, the folder of links, and each image's
    labels by the image id the index gave it."""

    engine: Spyglass
    folder: Path
    labels: dict[int, dict[str, str]]
    paths: dict[int, Path]

    def ids_where(self, **wanted: str) -> list[int]:
        return sorted(
            i for i, row in self.labels.items() if all(row[k] == v for k, v in wanted.items())
        )


def _read_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _pick(rows: list[dict[str, str]], keys: tuple[str, ...], cells: set[tuple[str, ...]], n: int):
    taken: dict[tuple[str, ...], int] = {}
    chosen = []
    for row in sorted(rows, key=lambda r: r["path"]):
        cell = tuple(row[k] for k in keys)
        if cell in cells and taken.get(cell, 0) < n:
            taken[cell] = taken.get(cell, 0) + 1
            chosen.append(row)
    return chosen


def _build(
    source: Path, rows: list[dict[str, str]], farm: Path, index_dir: Path, encoder: Encoder
) -> Subset:
    for row in rows:
        link = farm / row["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source / row["path"])
    engine = Spyglass(encoder, Index.open_for_writing(index_dir, encoder.info))
    engine.add([str(farm)])
    labels, paths = {}, {}
    for row in rows:
        state = engine.index.catalogue.file(str(farm / row["path"]))
        assert state is not None, row["path"]
        labels[state.image_id] = row
        paths[state.image_id] = farm / row["path"]
    return Subset(engine, farm, labels, paths)


@pytest.fixture(scope="session")
def pacs_subset(
    data_root: Path, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Subset]:
    source = data_root / "pacs"
    cells = {(c, d) for c in PACS_CLASSES for d in PACS_DOMAINS}
    rows = _pick(_read_rows(source), ("label", "domain"), cells, PACS_PER_CELL)
    subset = _build(
        source,
        rows,
        tmp_path_factory.mktemp("pacs-links"),
        tmp_path_factory.mktemp("pacs-index"),
        bundled,
    )
    yield subset
    subset.engine.close()


@pytest.fixture(scope="session")
def fashion_subset(
    data_root: Path, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Subset]:
    source = data_root / "fashion"
    rows = [r for r in _read_rows(source) if r["gender"] == "Men"]
    cells = {(t, c) for t in FASHION_TYPES for c in FASHION_COLOURS}
    rows = _pick(rows, ("articleType", "baseColour"), cells, FASHION_PER_CELL)
    subset = _build(
        source,
        rows,
        tmp_path_factory.mktemp("fashion-links"),
        tmp_path_factory.mktemp("fashion-index"),
        bundled,
    )
    yield subset
    subset.engine.close()
