"""Index creation is atomic: a catalogue left without tables (a full disk, a crash while
creating) is completed by the next writer, and a reader racing a writer that is creating
the index gets one typed error, never a raw SQLite one."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.errors import IndexNotFound
from spyglass.query.terms import Query, TextTerm
from spyglass.store.catalogue import Catalogue
from spyglass.store.index import CATALOGUE_FILE, Index


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spyglass", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("leftover", ["empty file", "database without tables"])
def test_a_catalogue_without_tables_is_not_an_index_yet_and_the_next_run_completes_it(
    sample_photos: Path, tmp_path: Path, leftover: str
) -> None:
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    catalogue = index_dir / CATALOGUE_FILE
    if leftover == "empty file":
        catalogue.write_bytes(b"")
    else:
        with sqlite3.connect(catalogue) as connection:
            connection.execute("PRAGMA user_version = 1")  # a 4,096-byte file, no tables
    searched = cli("search", "a cat", "--index", str(index_dir))
    assert searched.returncode == 3, searched.stderr
    assert searched.stderr.strip().splitlines() == [
        f"error: {index_dir} holds no finished index yet (no encoder recorded)"
    ]
    indexed = cli("index", str(sample_photos), "--index", str(index_dir), "-q")
    assert indexed.returncode == 0, indexed.stderr
    found = cli("search", "a cat", "--index", str(index_dir), "--json", "-k", "1")
    assert found.returncode == 0 and json.loads(found.stdout)[0]["path"].endswith("cat.png")


def test_readers_racing_the_creation_of_an_index_get_typed_errors(
    sample_photos: Path, bundled: Encoder, tmp_path: Path
) -> None:
    folders = [tmp_path / f"index-{n}" for n in range(12)]
    stop = threading.Event()
    unexpected: list[BaseException] = []
    opened = 0

    def read() -> None:
        nonlocal opened
        while not stop.is_set():
            for folder in folders:
                try:
                    with Index.open(folder) as index:
                        index.count()
                        opened += 1
                except IndexNotFound:
                    pass  # not there yet, or not finished yet: the typed answer
                except BaseException as error:
                    unexpected.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for folder in folders:
            with Spyglass(bundled, Index.open_for_writing(folder, bundled.info)) as engine:
                engine.add([str(sample_photos / "coffee.png")])
    finally:
        stop.set()
        reader.join(timeout=30)
    assert not unexpected, unexpected[:3]
    with Spyglass(bundled, Index.open(folders[-1])) as engine:
        assert engine.search(Query((TextTerm("coffee"),), k=1))[0].path.endswith("coffee.png")


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / CATALOGUE_FILE).write_bytes(b"this is no SQLite file, " * 200)
    searched = cli("info", "--index", str(tmp_path))
    assert searched.returncode == 3
    assert len(searched.stderr.strip().splitlines()) == 1
    assert "not a readable catalogue" in searched.stderr
    with pytest.raises(Exception, match="not a readable catalogue"):
        Catalogue(tmp_path / CATALOGUE_FILE, create=True)
