"""Fixtures for case work: a small real collection with edited copies, indexed once
with the bundled model, and fresh small indexes for the tests that change files.

The collection: five Caltech-101 images of each of four classes (20 distinct images);
for the first image of each class, three edited copies: a JPEG re-encode at quality
30, a resize to half size, and a 90% crop. Copies are named ``<source>-<edit>.jpg``.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from spyglass.casework.duplicates import hash_index
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app
from spyglass.store.index import Index

CLASSES = ("sunflower", "watch", "starfish", "grand_piano")
PER_CLASS = 5
EDITS = ("q30", "half", "crop90")


@dataclass(frozen=True)
class EditedCollection:
    root: Path
    #: class -> its images (the first of each has edited copies)
    by_class: dict[str, list[Path]]
    #: source image -> its edited copies, by edit name
    copies: dict[Path, dict[str, Path]]


def edit(image: Image.Image, name: str) -> Image.Image:
    if name == "half":
        return image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    if name == "crop90":
        w, h = int(image.width * 0.9), int(image.height * 0.9)
        return image.crop((image.width - w, 0, image.width, h))
    return image


def make_collection(data_root: Path, root: Path) -> EditedCollection:
    with (data_root / "caltech101" / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_class: dict[str, list[Path]] = {}
    copies: dict[Path, dict[str, Path]] = {}
    for label in CLASSES:
        paths = sorted(r["path"] for r in rows if r["label"] == label)[:PER_CLASS]
        for path in paths:
            target = root / label / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_root / "caltech101" / path, target)
            by_class.setdefault(label, []).append(target)
        source = by_class[label][0]
        with Image.open(source) as opened:
            image = opened.convert("RGB")
        copies[source] = {}
        for name in EDITS:
            target = source.with_name(f"{source.stem}-{name}.jpg")
            edit(image, name).save(target, "JPEG", quality=30 if name == "q30" else 90)
            copies[source][name] = target
    return EditedCollection(root, by_class, copies)


@pytest.fixture(scope="session")
def edited(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> EditedCollection:
    return make_collection(data_root, tmp_path_factory.mktemp("casework-data") / "collection")


@pytest.fixture(scope="session")
def edited_index(
    edited: EditedCollection, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The collection indexed once, and its perceptual hashes kept as `spyglass
    duplicates` keeps them (so that collapsed searches join the same groups whichever
    test runs first); tests open it read-only and must not change it."""
    folder = tmp_path_factory.mktemp("casework-index") / "index"
    with Spyglass(bundled, Index.open_for_writing(folder, bundled.info)) as writer:
        writer.add([str(edited.root)])
        hash_index(writer.index)
    return folder


@pytest.fixture
def engine(edited_index: Path, bundled: Encoder) -> Iterator[Spyglass]:
    with Spyglass(bundled, Index.open(edited_index)) as opened:
        yield opened


@pytest.fixture
def own_collection(
    data_root: Path, bundled: Encoder, tmp_path: Path
) -> Iterator[tuple[EditedCollection, Path]]:
    """A collection and index of this test's own (it may change files and index more)."""
    collection = make_collection(data_root, tmp_path / "collection")
    folder = tmp_path / "index"
    with Spyglass(bundled, Index.open_for_writing(folder, bundled.info)) as writer:
        writer.add([str(collection.root)])
    yield collection, folder


def image_id(engine: Spyglass, path: Path) -> int:
    state = engine.index.catalogue.file(str(path))
    assert state is not None, path
    return state.image_id


@pytest.fixture(scope="session")
def filter_collection(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """24 images with known folders, formats, sizes, EXIF and file times (for filters)."""
    from .filtered_collection import plan

    return plan(data_root, tmp_path_factory.mktemp("filters-data") / "collection")


@pytest.fixture(scope="session")
def filtered_index(
    filter_collection: list[Any], bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``filter_collection`` indexed once; tests open it read-only."""
    folder = tmp_path_factory.mktemp("filters-index") / "index"
    root = filter_collection[0].path.parents[2]
    with Spyglass(bundled, Index.open_for_writing(folder, bundled.info)) as writer:
        writer.add([str(root)])
    return folder


# -- why it matched (spyglass explain) -------------------------------------------------


@dataclass(frozen=True)
class PastedObjects:
    """Caltech-101 photos pasted at known boxes into real backgrounds, indexed."""

    root: Path
    index: Path
    #: The composites' files, their query words and object boxes (fractions).
    paths: list[Path]
    words: list[str]
    boxes: list[tuple[float, float, float, float]]
    #: The pasted photos themselves (image queries), one per composite.
    things: list[Path]


#: Composites in the explanation tests: few, as each explanation runs the model ~40 times.
PASTED = 6


@pytest.fixture(scope="session")
def pasted(
    data_root: Path, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> PastedObjects:
    from spyglass.bench.explain import make_cases

    root = tmp_path_factory.mktemp("explain-data")
    (root / "composites").mkdir()
    (root / "things").mkdir()
    cases = make_cases(data_root, PASTED, seed=1)
    paths, things = [], []
    for n, case in enumerate(cases):
        path = root / "composites" / f"{n:02d}-{case.words.replace(' ', '_')}.png"
        case.image.save(path)
        thing = root / "things" / f"{n:02d}.png"
        case.thing.save(thing)
        paths.append(path)
        things.append(thing)
    folder = root / "index"
    with Spyglass(bundled, Index.open_for_writing(folder, bundled.info)) as writer:
        writer.add([str(root / "composites")])
    return PastedObjects(
        root, folder, paths, [c.words for c in cases], [c.box for c in cases], things
    )


def serve_in_process(
    folder: Path, bundled: Encoder, **settings: Any
) -> Iterator[tuple[TestClient, Spyglass]]:
    """The app over the index in ``folder`` behind an in-process client (``settings``:
    more :meth:`ServerSettings.for_binding` options); the engine closed afterwards."""
    engine = Spyglass(bundled, Index.open(folder))
    options = {"prepare_at_start": False, **settings}
    server_settings = ServerSettings.for_binding("127.0.0.1", 8000, None, **options)
    try:
        with TestClient(create_app(engine, server_settings), base_url="http://127.0.0.1") as client:
            yield client, engine
    finally:
        engine.close()
