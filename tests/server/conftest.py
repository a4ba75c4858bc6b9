"""Fixtures for the server tests: a real index of 150 real images (120 Caltech-101
objects in 12 classes and 30 photos) built once per session with the bundled model,
and the app over it.

The images are copied into a temporary folder (the server refuses files whose links
lead out of the indexed folders, so a farm of links would not do). Three files are
added on purpose: a photo stored sideways with an EXIF tag that turns it upright, a
symbolic link to an image outside the collection, and a text file named like an image.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app
from spyglass.store.index import Index

CLASSES = (
    "airplanes",
    "Motorbikes",
    "watch",
    "grand_piano",
    "butterfly",
    "sunflower",
    "laptop",
    "umbrella",
    "chair",
    "cup",
    "camera",
    "starfish",
)
PER_CLASS = 10
PHOTOS = 30
#: A photo whose copy is stored sideways with EXIF orientation 6 (display: turn right).
ROTATED_SOURCE = "images/28_chelsea.jpg"


@dataclass(frozen=True)
class Collection:
    root: Path
    #: collection-relative path -> Caltech class (photos: "photo")
    labels: dict[str, str]
    rotated: Path
    upright_source: Path
    link_out: Path
    outside: Path

    def paths_of(self, label: str) -> list[Path]:
        return [self.root / p for p, lab in self.labels.items() if lab == label]


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def collection(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Collection:
    base = tmp_path_factory.mktemp("server-data")
    root = base / "collection"
    labels: dict[str, str] = {}
    caltech = data_root / "caltech101"
    by_class: dict[str, list[str]] = {}
    for row in _rows(caltech):
        if row["label"] in CLASSES:
            by_class.setdefault(row["label"], []).append(row["path"])
    for label in CLASSES:
        for path in sorted(by_class[label])[:PER_CLASS]:
            target = root / "caltech" / label / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(caltech / path, target)
            labels[str(target.relative_to(root))] = label
    photos = data_root / "photos"
    photo_rows = [r for r in _rows(photos) if r["path"] != ROTATED_SOURCE][:PHOTOS]
    for row in photo_rows:
        target = root / "photos" / Path(row["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photos / row["path"], target)
        labels[str(target.relative_to(root))] = "photo"

    upright = photos / ROTATED_SOURCE
    rotated = root / "photos" / "sideways-cat.jpg"
    with Image.open(upright) as image:
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
        image.transpose(Image.Transpose.ROTATE_90).save(rotated, "JPEG", quality=92, exif=exif)
    labels[str(rotated.relative_to(root))] = "photo"

    outside = base / "outside" / "not-in-the-collection.jpg"
    outside.parent.mkdir()
    shutil.copyfile(caltech / sorted(by_class["cup"])[-1], outside)
    link_out = root / "linked-out.jpg"
    link_out.symlink_to(outside)
    (root / "notes.jpg").write_text("not an image, only named like one\n")
    return Collection(root, labels, rotated, upright, link_out, outside)


@pytest.fixture(scope="session")
def server_engine(
    collection: Collection, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Spyglass]:
    folder = tmp_path_factory.mktemp("server-index")
    writer = Spyglass(bundled, Index.open_for_writing(folder, bundled.info))
    writer.add([str(collection.root)])
    writer.close()
    # The server opens the index read-only, as `spyglass serve` does.
    engine = Spyglass(bundled, Index.open(folder))
    yield engine
    engine.close()


def make_app(engine: Spyglass, **options: object) -> FastAPI:
    settings = ServerSettings.for_binding("127.0.0.1", 8000, None, **options)  # type: ignore[arg-type]
    return create_app(engine, settings)


@pytest.fixture(scope="session")
def app(server_engine: Spyglass, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    cache = tmp_path_factory.mktemp("server-cache")
    return make_app(server_engine, max_upload_bytes=2 * 1024 * 1024, cache_dir=cache)


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=True) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served_in_thread(make_app: Callable[[int], FastAPI]) -> Iterator[str]:
    """The app ``make_app(port)`` builds, served by uvicorn in a thread on a free
    loopback port, for a browser to reach: yields its base URL, stops it on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(make_app(port), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass(frozen=True)
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def live_server(
    server_engine: Spyglass, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The real `spyglass serve` command in its own process, on a free loopback port."""
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this block: closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from spyglass.cli import main; main()",
            "serve",
            "--index",
            str(server_engine.index.folder),
            "--port",
            str(port),
            "--max-upload-mb",
            "2",
        ],
        env={**os.environ, "SPYGLASS_CACHE_DIR": str(tmp_path_factory.mktemp("serve-cache"))},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"spyglass serve exited: {log.read().decode(errors='replace')}")
            try:
                if httpx.get(url + "/api/status?skipped=0", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("spyglass serve did not answer within 60 s")
            time.sleep(0.2)
        yield LiveServer(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
