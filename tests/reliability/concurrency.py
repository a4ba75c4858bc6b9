"""Helpers for the concurrent-access tests: real `spyglass index` and `spyglass search`
processes, readers that search in a loop and keep what they saw, and the comparison of
an index with a clean build of the same folders (to the bit)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spyglass.errors import SpyglassError
from spyglass.store.index import CATALOGUE_FILE, Index
from spyglass.store.local import LocalVectorStore

#: What every reader searches for; any text finds every image when k exceeds them.
QUERY = "a photo"
#: More than any test indexes: a search returns every searchable image.
ALL = 1000


def spyglass(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spyglass", *args], capture_output=True, text=True, timeout=timeout
    )


def index_command(folders: Sequence[Path], index_dir: Path) -> list[str]:
    """`spyglass index` committing every 16 images (a commit waits for a whole batch,
    so the batch is 16 too): many commits on a small folder."""
    return [
        *(sys.executable, "-m", "spyglass", "index", *map(str, folders)),
        *("--index", str(index_dir), "-q", "--batch-size", "16", "--commit-every", "16"),
    ]


def run_index(folders: Sequence[Path], index_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        index_command(folders, index_dir), capture_output=True, text=True, timeout=600
    )


def index_folders(folders: Sequence[Path], index_dir: Path) -> None:
    done = run_index(folders, index_dir)
    assert done.returncode == 0, done.stderr


def start_writer(folders: Sequence[Path], index_dir: Path, log: Path) -> subprocess.Popen[str]:
    """A `spyglass index` process; its stderr goes to ``log`` (a pipe nobody reads while
    it runs could fill up and block it)."""
    with log.open("w") as stderr:
        return subprocess.Popen(
            index_command(folders, index_dir), stdout=subprocess.DEVNULL, stderr=stderr, text=True
        )


def finish(process: subprocess.Popen[str], timeout: float = 600) -> int:
    """Wait for ``process``; killed if it overruns (the test fails on its status then)."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        raise


def committed_images(index_dir: Path) -> int:
    """Images the catalogue has committed (0 while the index is being created)."""
    try:
        with Index.open(index_dir) as index:
            return index.catalogue.counts()["embedded"]
    except SpyglassError:  # not created yet, or half created: nothing committed
        return 0


def wait_for_commit(
    index_dir: Path, writer: subprocess.Popen[str], at_least: int, timeout: float = 300
) -> None:
    """Until the writer has committed ``at_least`` images; fails if it exits first."""
    deadline = time.monotonic() + timeout
    while committed_images(index_dir) < at_least:
        assert writer.poll() is None, f"the writer exited ({writer.returncode}) before"
        assert time.monotonic() < deadline, f"no {at_least} images committed in {timeout} s"
        time.sleep(0.05)


def server_environment(cache: Path, shared_cache: Path) -> dict[str, str]:
    """The environment for a `spyglass serve` with a cache of its own, in which the model
    files and the embedded vocabulary are the shared cache's (links): preparing them
    again would cost the busy test machine minutes, and they depend on the model only."""
    for part in ("models", "server/vocabulary"):
        (shared_cache / part).mkdir(parents=True, exist_ok=True)
        (cache / part).parent.mkdir(parents=True, exist_ok=True)
        (cache / part).symlink_to(shared_cache / part, target_is_directory=True)
    return {**os.environ, "SPYGLASS_CACHE_DIR": str(cache)}


@contextmanager
def frozen_before_commit(
    index_dir: Path, writer: subprocess.Popen[str], timeout: float = 300
) -> Iterator[None]:
    """The writer frozen (SIGSTOP) between appending a commit's vectors (fsynced) and
    recording them in the catalogue: the files hold rows a reader must not see yet, nor
    cut. Done by holding the catalogue's write lock until the vector files grow past the
    committed rows (the writer then waits for the lock), freezing the writer, and
    letting the lock go. The writer's wait for the lock resumes with it (SQLite counts
    the time it slept, not the time that passed), so it then commits as usual."""
    connection = sqlite3.connect(index_dir / CATALOGUE_FILE, isolation_level=None, timeout=60)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            committed = dict(connection.execute("SELECT name, rows FROM spaces"))
            ids = {space: index_dir / "vectors" / f"{space}.ids" for space in committed}
            deadline = time.monotonic() + timeout
            while any(ids[space].stat().st_size <= 8 * rows for space, rows in committed.items()):
                assert writer.poll() is None, f"the writer exited ({writer.returncode})"
                assert time.monotonic() < deadline, f"the writer appended nothing in {timeout} s"
                time.sleep(0.01)
            writer.send_signal(signal.SIGSTOP)
        finally:
            connection.execute("ROLLBACK")
    finally:
        connection.close()
    try:
        yield
    finally:
        writer.send_signal(signal.SIGCONT)


# -- readers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """What one search saw: the searchable count it reported and its (id, path) hits."""

    started: float
    searchable: int
    hits: tuple[tuple[int, str], ...]


class ReaderFailed(Exception):
    pass


@dataclass
class Reader:
    """Calls ``read`` in a thread until stopped; keeps every reading and every error."""

    name: str
    read: Callable[[], tuple[int, list[tuple[int, str]]]]
    pause: float = 0.5
    # Out of the repr: a failing assertion would print every reading.
    readings: list[Reading] = field(default_factory=list, repr=False)
    errors: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 300) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"reader {self.name} did not stop"

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                searchable, hits = self.read()
            except BaseException as error:  # every failure is the test's business
                self.errors.append(f"{self.name}: {type(error).__name__}: {error}")
            else:
                self.readings.append(Reading(started, searchable, tuple(hits)))
            self._stop.wait(self.pause)

    def has_read_since(self, moment: float) -> bool:
        return self.has_failed() or any(r.started >= moment for r in self.readings)

    def has_failed(self) -> bool:
        return bool(self.errors) or not self._thread.is_alive()


def wait_for_readings(readers: Sequence[Reader], since: float, timeout: float = 300) -> None:
    """Until every reader has done a whole reading that started at ``since`` or later."""
    deadline = time.monotonic() + timeout
    while not all(r.has_read_since(since) for r in readers):
        assert time.monotonic() < deadline, f"readers made no reading in {timeout} s"
        time.sleep(0.05)


def cli_search(index_dir: Path) -> tuple[int, list[tuple[int, str]]]:
    """One `spyglass search` process: rc 0, nothing on stderr. Asks for more results than
    the index holds, so the number returned is the number searchable."""
    done = spyglass("search", QUERY, "--index", str(index_dir), "--json", "-k", str(ALL))
    if done.returncode != 0 or done.stderr.strip():
        raise ReaderFailed(f"exit {done.returncode}: {done.stderr.strip()}")
    results = json.loads(done.stdout)
    return len(results), [(r["id"], r["path"]) for r in results]


# -- an index compared with a clean build ------------------------------------------------


def assert_no_duplicate_or_orphan(catalogue: Any) -> None:
    """Each content indexed once, and each file pointing at an image."""
    (duplicates,) = catalogue.execute("SELECT COUNT(*) - COUNT(DISTINCT content_hash) FROM images")[
        0
    ]
    (orphans,) = catalogue.execute(
        "SELECT COUNT(*) FROM files WHERE image_id NOT IN (SELECT id FROM images)"
    )[0]
    assert duplicates == 0 and orphans == 0, (duplicates, orphans)


def snapshot(index_dir: Path) -> dict[str, dict[str, bytes]]:
    """``{"content": {path: content hash}, space: {path: the vector's bytes}}``, after
    checking that the index holds no duplicate row: each content once, each image with
    exactly one row in every space, each file pointing at an image."""
    with Index.open(index_dir) as index:
        catalogue = index.catalogue
        assert_no_duplicate_or_orphan(catalogue)
        image_ids = sorted(r[0] for r in catalogue.execute("SELECT id FROM images"))
        files = catalogue.files_under("/")
        owners = np.array([state.image_id for state in files.values()], np.int64)
        hashes = dict(catalogue.execute("SELECT id, content_hash FROM images"))
        taken: dict[str, dict[str, bytes]] = {
            "content": {path: hashes[state.image_id] for path, state in files.items()}
        }
        for space, store in index.stores.items():
            assert isinstance(store, LocalVectorStore)
            rows = store.owners().tolist()
            assert rows == image_ids, f"{space}: rows {len(rows)} for {len(image_ids)} images"
            vectors = store.fetch(owners)
            taken[space] = {
                path: vector.tobytes() for path, vector in zip(files, vectors, strict=True)
            }
    return taken


def assert_same_index(index_dir: Path, clean_dir: Path) -> None:
    """The same files, showing the same contents, with the same vectors to the bit."""
    after, reference = snapshot(index_dir), snapshot(clean_dir)
    assert sorted(after) == sorted(reference), "the same spaces"
    for part, expected in reference.items():
        assert sorted(after[part]) == sorted(expected), f"{part}: the same files"
        differing = [path for path, value in expected.items() if after[part][path] != value]
        assert not differing, f"{part}: {len(differing)} files differ, e.g. {differing[:3]}"
