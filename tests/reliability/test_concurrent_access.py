"""Readers during writes, and two writers at once, with real processes.

Readers: while `spyglass index` adds a folder, `spyglass search` processes, the Python
API (one engine kept open and refreshed, one opened anew for every search) and the live
server (`/api/search`, `/api/status`) search in a loop. None of them ever fails; every
image any of them returns is a committed image with that file; the searchable count
each sees never goes down; the server picks up the new images; the index ends equal to
a clean build (the same files, the same vectors to the bit). A few times the writer is
frozen (SIGSTOP) with a commit's vectors on disk but not yet in the catalogue, until
every reader has searched that half-written index.

Writers: a second `spyglass index` on an index being written (the first one frozen
halfway) is refused with one line naming the writer's pid and exit status 3, whichever
folder it was given; run again afterwards, it finishes the job, and the index equals a
clean build of both folders with no duplicate row. Two writers started at the same
moment on a new index end the same way.

SPYGLASS_LONG=1 indexes more images, freezes the writer more often and repeats the
two-writer runs (docs/reliability.md)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.query.terms import Query, TextTerm
from spyglass.settings import RuntimeSettings
from spyglass.store.index import Index

from .concurrency import (
    ALL,
    QUERY,
    Reader,
    ReaderFailed,
    assert_same_index,
    cli_search,
    finish,
    frozen_before_commit,
    index_folders,
    run_index,
    server_environment,
    spyglass,
    start_writer,
    wait_for_commit,
    wait_for_readings,
)

LONG = bool(os.environ.get("SPYGLASS_LONG"))
#: Images the writer adds while the readers search, and how often it is frozen.
ADDED = 600 if LONG else 128
FREEZES = 8 if LONG else 2
#: Runs of each two-writer case.
ROUNDS = 6 if LONG else 1

#: The one line a refused writer prints (exit status 3).
LOCKED = re.compile(
    r"error: index (\S+) is being written by (pid \d+|another process); wait for it to finish"
)


def api_search(engine: Spyglass) -> tuple[int, list[tuple[int, str]]]:
    """What the engine can find, and every hit of one search asking for all of it: the
    two must agree."""
    searchable = engine.index.count()
    results = engine.search(Query((TextTerm(QUERY),), k=ALL))
    if len(results) != searchable:
        raise ReaderFailed(f"{searchable} searchable but {len(results)} results")
    return searchable, [(r.image_id, r.path) for r in results]


def server_reads(
    client: httpx.Client,
) -> tuple[Callable[[], tuple[int, list[tuple[int, str]]]], ...]:
    def search() -> tuple[int, list[tuple[int, str]]]:
        answer = client.post("/api/search", json={"text": QUERY, "limit": ALL})
        if answer.status_code != 200:
            raise ReaderFailed(f"/api/search {answer.status_code}: {answer.text[:300]}")
        body = answer.json()
        if len(body["results"]) != body["searchable"]:
            raise ReaderFailed(f"{body['searchable']} searchable but {len(body['results'])}")
        return body["searchable"], [(r["id"], r["path"]) for r in body["results"]]

    def status() -> tuple[int, list[tuple[int, str]]]:
        answer = client.get("/api/status")
        if answer.status_code != 200:
            raise ReaderFailed(f"/api/status {answer.status_code}: {answer.text[:300]}")
        return answer.json()["unique_images"], []

    return search, status


def test_readers_during_a_write_see_only_committed_images_and_never_fewer(
    sample_photos: Path,
    photo_variants,
    bundled: Encoder,
    runtime: RuntimeSettings,
    serve,
    tmp_path: Path,
) -> None:
    added = photo_variants(tmp_path / "added", ADDED, seed=3, side=112)
    index_dir, clean_dir = tmp_path / "index", tmp_path / "clean"
    index_folders([sample_photos], index_dir)  # the server needs an index to start
    served = serve(
        index_dir,
        *("--refresh-seconds", "0.5"),
        env=server_environment(tmp_path / "cache", runtime.cache_dir),
    )
    kept_open = Spyglass(bundled, Index.open(index_dir))

    def kept_open_search() -> tuple[int, list[tuple[int, str]]]:
        kept_open.index.refresh()  # what a long-lived reader does to see new commits
        return api_search(kept_open)

    def opened_anew_search() -> tuple[int, list[tuple[int, str]]]:
        with Spyglass(bundled, Index.open(index_dir)) as engine:
            return api_search(engine)

    client = httpx.Client(base_url=served.url, timeout=120)
    server_search, server_status = server_reads(client)
    readers = [
        # Each `spyglass search` loads the model: spaced out, to leave the writer the CPU.
        Reader("cli search", lambda: cli_search(index_dir), pause=2.0),
        Reader("api kept open", kept_open_search),
        Reader("api opened anew", opened_anew_search),
        Reader("server search", server_search),
        Reader("server status", server_status),
    ]
    for reader in readers:
        reader.start()
    wait_for_readings(readers, since=0)
    before = kept_open.index.count()
    writer = start_writer([added], index_dir, tmp_path / "writer.err")
    clean = None
    try:
        # Frozen at spread-out commits (of 16), with the vectors of the next one on disk
        # but not committed: every reader searches the index in that state.
        for freeze in range(1, FREEZES + 1):
            wait_for_commit(index_dir, writer, before + freeze * ADDED // (FREEZES + 2))
            with frozen_before_commit(index_dir, writer):
                wait_for_readings(readers, since=time.monotonic())
        assert finish(writer) == 0, (tmp_path / "writer.err").read_text()
        clean = start_writer([sample_photos, added], clean_dir, tmp_path / "clean.err")
        with Index.open(index_dir) as index:
            final = index.count()
        # The server looks for other processes' commits every --refresh-seconds: 0.5 s
        # here (10 s by default), so it must have them well within the deadline.
        deadline = time.monotonic() + 60
        while not any(r.searchable == final for r in readers[3].readings):
            assert not readers[3].has_failed(), readers[3].errors
            assert time.monotonic() < deadline, "the server did not pick up the new images"
            time.sleep(0.2)
        wait_for_readings(readers, since=time.monotonic())
        assert finish(clean) == 0, (tmp_path / "clean.err").read_text()
    finally:
        for reader in readers:
            reader.stop()
        kept_open.close()
        client.close()
        for process in (writer, clean):
            if process is not None and process.poll() is None:  # the test failed
                process.kill()
                process.wait(timeout=30)

    for reader in readers:
        assert not reader.errors, reader.errors[:3]
    server_log = served.stderr.read_text()
    assert "Traceback" not in server_log and "ERROR" not in server_log, server_log[-2000:]
    with Index.open(index_dir) as index:
        count = index.count()
        seen = {hit for reader in readers for r in reader.readings for hit in r.hits}
        records = index.catalogue.images(sorted({image_id for image_id, _ in seen}))
    assert count == final > before, (count, final, before)
    for image_id, path in seen:
        record = records.get(image_id)
        assert record is not None and record.alive and path in record.paths, (image_id, path)
    for reader in readers:
        counts = [r.searchable for r in reader.readings]
        assert counts == sorted(counts), f"{reader.name} saw fewer images later: {counts}"
        assert counts[0] >= before and counts[-1] == count, (reader.name, counts)
    halfway = {r.searchable for reader in readers for r in reader.readings} - {before, count}
    assert halfway, "no reader saw the index halfway through the write"
    assert_same_index(index_dir, clean_dir)


@pytest.fixture(scope="module")
def two_folders(
    photo_variants, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path, Path]:
    """(first, second, clean build of first, clean build of both): the first folder big
    enough for a writer to be caught in the middle of it."""
    root = tmp_path_factory.mktemp("two-writers")
    first = photo_variants(root / "first", 64, seed=5, side=112)
    second = photo_variants(root / "second", 32, seed=6, side=112)
    index_folders([first], root / "clean-first")
    index_folders([first, second], root / "clean-both")
    return first, second, root / "clean-first", root / "clean-both"


def assert_refused(returncode: int, stderr: str, index_dir: Path, by: str | None) -> None:
    """Exit status 3 and one line naming the index and the writer holding it (``by``:
    "pid N", "another process", or ``None`` for either)."""
    assert returncode == 3, (returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and (match := LOCKED.fullmatch(lines[0])), stderr
    assert match[1] == str(index_dir) and by in (None, match[2]), stderr


@pytest.mark.parametrize("second_writes", ["the same folder", "another folder"])
def test_a_second_writer_is_refused_in_one_line_and_nothing_is_lost(
    two_folders, tmp_path: Path, second_writes: str
) -> None:
    first, second, clean_first, clean_both = two_folders
    same = second_writes == "the same folder"
    folder, clean = (first, clean_first) if same else (second, clean_both)
    for round_ in range(ROUNDS):
        index_dir = tmp_path / f"index-{round_}"
        writer = start_writer([first], index_dir, tmp_path / "first.err")
        try:
            # Caught after 1 to 3 of its 4 commits, the next one's vectors on disk.
            wait_for_commit(index_dir, writer, 16 * (1 + round_ % 3))
            with frozen_before_commit(index_dir, writer):
                refused = run_index([folder], index_dir)
        finally:
            returncode = finish(writer)
        assert returncode == 0, (tmp_path / "first.err").read_text()
        assert_refused(refused.returncode, refused.stderr, index_dir, f"pid {writer.pid}")
        again = run_index([folder], index_dir)
        assert again.returncode == 0, again.stderr
        assert_same_index(index_dir, clean)
        shutil.rmtree(index_dir)


def test_two_writers_started_together_on_a_new_index_end_as_a_clean_build(
    two_folders, tmp_path: Path
) -> None:
    first, second, _, clean_both = two_folders
    for round_ in range(ROUNDS):
        index_dir = tmp_path / f"index-{round_}"
        runs = [(first, tmp_path / "first.err"), (second, tmp_path / "second.err")]
        writers = [start_writer([folder], index_dir, log) for folder, log in runs]
        codes = [finish(writer) for writer in writers]
        # Whichever comes second (or neither, if one was done before the other began).
        for code, (folder, log) in zip(codes, runs, strict=True):
            if code == 0:
                continue
            assert_refused(code, log.read_text(), index_dir, by=None)
            again = run_index([folder], index_dir)
            assert again.returncode == 0, again.stderr
        assert_same_index(index_dir, clean_both)
        shutil.rmtree(index_dir)


def test_a_lock_held_without_a_pid_is_named_another_process(
    sample_photos: Path, tmp_path: Path
) -> None:
    """The lock file is empty between a writer's taking the lock and its writing its pid
    (or the holder is no spyglass): the refusal names no pid then."""
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    handle = os.open(index_dir / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = spyglass("index", str(sample_photos), "--index", str(index_dir), "-q")
    finally:
        os.close(handle)
    assert_refused(refused.returncode, refused.stderr, index_dir, "another process")
