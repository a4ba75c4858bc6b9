"""Small labelled collections cut from SPYGLASS_TEST_DATA: folders of symbolic links to
the real images plus a labels.csv with the real columns, named like the shared sets so
that their rules apply. Each has its own index folder, built on first use and reused
(incrementally) by the tests after."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


def read_labels(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@dataclass(frozen=True)
class SmallSet:
    folder: Path
    index_dir: Path
    rows: list[dict[str, str]]

    def cli_args(self) -> list[str]:
        return ["--data", str(self.folder), "--index-dir", str(self.index_dir)]


def cut(
    data_root: Path,
    target: Path,
    name: str,
    group_of: Callable[[dict[str, str]], str | None],
    limit: Callable[[str], int],
) -> SmallSet:
    """Link the first ``limit(group)`` rows (by path) of every group that ``group_of``
    names (None: leave the row out) into ``target/name``, with their labels."""
    source = data_root / name
    rows = sorted(read_labels(source), key=lambda r: r["path"])
    taken: dict[str, int] = {}
    chosen = []
    for row in rows:
        group = group_of(row)
        if group is None or taken.get(group, 0) >= limit(group):
            continue
        taken[group] = taken.get(group, 0) + 1
        chosen.append(row)
    folder = target / name
    for row in chosen:
        link = folder / row["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source / row["path"])
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return SmallSet(folder, target / f"{name}-index", chosen)


def five(group: str) -> int:
    return 5


CALTECH_CLASSES = ("airplanes", "Motorbikes", "bonsai", "watch", "Leopards")


@pytest.fixture(scope="session")
def small_caltech(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SmallSet:
    """5 classes x 12 images, plus 4 background and 4 Faces_easy images that the
    caltech101 rules must leave out (68 rows, 60 kept)."""

    def group_of(row: dict[str, str]) -> str | None:
        if row["label"] in (*CALTECH_CLASSES, "BACKGROUND_Google", "Faces_easy"):
            return row["label"]
        return None

    def limit(group: str) -> int:
        return 12 if group in CALTECH_CLASSES else 4

    return cut(data_root, tmp_path_factory.mktemp("eval-caltech"), "caltech101", group_of, limit)


@pytest.fixture(scope="session")
def small_fashion(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SmallSet:
    """3 article types x 4 colours x up to 5 images, with their captions."""
    types = ("Tshirts", "Casual Shoes", "Handbags")
    colours = ("Black", "Blue", "White", "Red")

    def group_of(row: dict[str, str]) -> str | None:
        if row["articleType"] in types and row["baseColour"] in colours:
            return row["articleType"] + "/" + row["baseColour"]
        return None

    return cut(data_root, tmp_path_factory.mktemp("eval-fashion"), "fashion", group_of, five)


@pytest.fixture(scope="session")
def small_pacs(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SmallSet:
    """3 objects x 3 domains x 5 images."""

    def group_of(row: dict[str, str]) -> str | None:
        if row["label"] in ("dog", "guitar", "house"):
            return row["label"] + "/" + row["domain"]
        return None

    return cut(data_root, tmp_path_factory.mktemp("eval-pacs"), "pacs", group_of, five)


@pytest.fixture(scope="session")
def photos_set(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SmallSet:
    """All 42 captioned photos, read in place."""
    folder = data_root / "photos"
    return SmallSet(folder, tmp_path_factory.mktemp("eval-photos") / "index", read_labels(folder))
