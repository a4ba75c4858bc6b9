"""Shared fixtures: the real bundled model, real data from SPYGLASS_TEST_DATA, and
indexes built once per test session.

Two kinds of real images:

- the 14 CC0 / public-domain sample photos that `spyglass demo` writes (from
  scikit-image's wheel, so always at hand): the end-to-end tests of the product
  (index, search by text, image and both, marks, incremental indexing, bad input, the
  server) run over them on any machine;
- the labelled collections in SPYGLASS_TEST_DATA (a folder laid out like
  ../shared/data): the collection-level tests (quality floors, methods, evaluation,
  the page) need them. Without it they skip, and the run ends with one line saying
  how many and why; with ``CI=true`` such a skip (and a missing browser) is a failure.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spyglass.encoders import Encoder, load_encoder
from spyglass.engine import Spyglass
from spyglass.settings import IngestSettings, RuntimeSettings
from spyglass.store.index import Index


@pytest.fixture(scope="session")
def runtime() -> RuntimeSettings:
    # The model cache is shared across runs on purpose: preparing the ONNX files takes
    # ~20 s and their content depends only on the installed model wheels.
    return RuntimeSettings.from_environment()


#: Words every skip for missing real data or a missing browser carries, so that the
#: summary can count them and CI can refuse them.
NEEDS_DATA = "needs SPYGLASS_TEST_DATA"
NEEDS_BROWSER = ("chromium", "playwright")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = os.environ.get("SPYGLASS_TEST_DATA")
    if not root:
        pytest.skip(f"{NEEDS_DATA} (a folder like ../shared/data)")
    path = Path(root).resolve()
    if not path.is_dir():
        pytest.fail(f"SPYGLASS_TEST_DATA={root} is not a directory")
    return path


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's 14 sample photos (CC0 / public domain, from scikit-image's wheel) in a
    session folder; available on every machine. Tests must not change them."""
    from spyglass.demo import write_sample_images

    folder = tmp_path_factory.mktemp("sample-photos")
    write_sample_images(folder)
    return folder


@pytest.fixture(scope="session")
def sample_photos_index(
    sample_photos: Path, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An index of the sample photos, built once (tests open it read-only)."""
    folder = tmp_path_factory.mktemp("sample-photos-index")
    with Spyglass(bundled, Index.open_for_writing(folder, bundled.info)) as writer:
        writer.add([str(sample_photos)])
    return folder


@pytest.fixture(scope="session")
def sample_client(sample_photos_index: Path, bundled: Encoder) -> Iterator[Any]:
    """An in-process client (FastAPI's TestClient) of the server's app over the sample
    photos' index, opened read-only as `spyglass serve` does."""
    from fastapi.testclient import TestClient

    from spyglass.server import ServerSettings, create_app

    engine = Spyglass(bundled, Index.open(sample_photos_index))
    settings = ServerSettings.for_binding("127.0.0.1", 8000, None)
    try:
        with TestClient(create_app(engine, settings), base_url="http://127.0.0.1") as client:
            yield client
    finally:
        engine.close()


@pytest.fixture(scope="session")
def photo_variants(sample_photos: Path) -> Callable[..., Path]:
    """Make ``count`` distinct images in a new ``folder``, each a seeded random crop of a
    sample photo resized to ``side`` pixels: different bytes, so every one is embedded
    (copies would only be linked). Returns the folder."""

    def make(folder: Path, count: int, *, seed: int = 0, side: int = 128) -> Path:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(seed)
        sources = sorted(sample_photos.glob("*.png"))
        folder.mkdir()
        for n in range(count):
            with Image.open(sources[n % len(sources)]) as image:
                width, height = image.size
                left, top = int(rng.integers(0, width // 3)), int(rng.integers(0, height // 3))
                crop = image.convert("RGB").crop((left, top, left + width // 2, top + height // 2))
                crop.resize((side, side)).save(folder / f"v{seed}-{n:04d}.jpg", quality=85)
        return folder

    return make


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


def _is_missing_requirement(reason: str) -> bool:
    return NEEDS_DATA in reason or any(word in reason.lower() for word in NEEDS_BROWSER)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With CI=true, a test skipped for missing data or a missing browser fails: CI must
    test the whole product, not the half that needs nothing."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and in_ci() and _is_missing_requirement(_skip_reason(report)):
        report.outcome = "failed"
        report.longrepr = f"CI=true, so this may not skip: {_skip_reason(report)}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    missing = [r for r in skipped if _is_missing_requirement(_skip_reason(r))]
    if not missing:
        return
    data = sum(NEEDS_DATA in _skip_reason(r) for r in missing)
    browser = len(missing) - data
    parts = []
    if data:
        parts.append(
            f"{data} collection-level tests skipped: they need the real collections "
            "(set SPYGLASS_TEST_DATA to a folder like ../shared/data)"
        )
    if browser:
        parts.append(f"{browser} browser tests skipped: they need Debian's chromium")
    terminalreporter.write_line("; ".join(parts), yellow=True, bold=True)


@pytest.fixture(scope="session")
def bundled(runtime: RuntimeSettings) -> Encoder:
    """The real bundled encoder, loaded once."""
    return load_encoder("bundled", runtime)


@dataclass(frozen=True)
class LabelledSet:
    """A labelled image folder: rows of labels.csv with absolute paths."""

    root: Path
    rows: list[dict[str, str]]

    def paths(self) -> list[Path]:
        return [self.root / r["path"] for r in self.rows]


def read_labels(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def caltech_rows(data_root: Path) -> list[dict[str, str]]:
    """Caltech-101's 2,748 object images: background clutter left out, and Faces_easy
    left out because it holds the same photos as Faces, cropped differently."""
    rows = read_labels(data_root / "caltech101")
    return [r for r in rows if r["is_background"] == "0" and r["label"] != "Faces_easy"]


def copy_subset(rows: list[dict[str, str]], source: Path, target: Path) -> list[Path]:
    """Copy labelled images into ``target`` (tests may modify the copies)."""
    copied = []
    for row in rows:
        destination = target / row["path"]
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / row["path"], destination)
        copied.append(destination)
    return copied


def index_folder(
    folder: Path, index_dir: Path, encoder: Encoder, settings: IngestSettings | None = None
) -> Spyglass:
    index = Index.open_for_writing(index_dir, encoder.info)
    engine = Spyglass(encoder, index, settings)
    engine.add([str(folder)])
    return engine


@pytest.fixture(scope="session")
def caltech_engine(
    data_root: Path, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Spyglass, LabelledSet]]:
    """All 2,748 Caltech-101 object images indexed with the bundled model (about 25 s).

    The folder indexed is a farm of symbolic links to the data folder's files, so the
    data is read in place and left-out classes stay out."""
    rows = caltech_rows(data_root)
    farm = tmp_path_factory.mktemp("caltech-links")
    for row in rows:
        link = farm / row["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(data_root / "caltech101" / row["path"])
    engine = index_folder(farm, tmp_path_factory.mktemp("caltech-index"), bundled)
    yield engine, LabelledSet(farm, rows)
    engine.close()


@pytest.fixture(scope="session")
def photos(data_root: Path) -> LabelledSet:
    """The 42 captioned photos (large JPEGs, good for smoke tests and the UI)."""
    folder = data_root / "photos"
    return LabelledSet(folder, read_labels(folder))
