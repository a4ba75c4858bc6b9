"""Saved searches: kept in the index folder, listed, run again; --new shows only the
images indexed since the last run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from spyglass.casework.saved import SAVED_FILE
from spyglass.cli import main

from .conftest import EditedCollection


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_save_list_and_run(edited_index: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(edited_index, index)  # saving writes into the index folder
    status, out = run("saved", "save", "flowers", "a sunflower", "-k", "4", "--index", str(index))
    assert status == 0 and out.startswith("saved 'flowers'")
    status, listed = run("saved", "list", "--index", str(index))
    assert status == 0 and listed.startswith('flowers: "a sunflower"') and "never run" in listed
    status, saved = run("saved", "run", "flowers", "--json", "--index", str(index))
    status_direct, direct = run("search", "a sunflower", "-k", "4", "--json", "--index", str(index))
    assert status == status_direct == 0
    assert json.loads(saved) == json.loads(direct)
    assert "last run 20" in run("saved", "list", "--index", str(index))[1]
    document = json.loads((index / SAVED_FILE).read_text())
    assert document["searches"]["flowers"]["last_image_id"] >= 0
    status, out = run("saved", "save", "flowers", "a rose", "--index", str(index))
    assert status == 2 and "--replace" in out
    status, out = run("saved", "run", "tulips", "--index", str(index))
    assert status == 2 and "no saved search named 'tulips' (saved: flowers)" in out


def test_new_shows_only_images_indexed_since_the_last_run(
    own_collection: tuple[EditedCollection, Path], tmp_path: Path
) -> None:
    collection, index = own_collection
    args = ["--index", str(index)]
    assert run("saved", "save", "watches", "a wrist watch", "-k", "5", *args)[0] == 0
    status, first = run("saved", "run", "watches", "--new", "--paths", *args)
    assert status == 0 and len(first.splitlines()) == 5  # the first run: everything is new
    # Two more watches arrive and are indexed.
    arrivals = collection.root / "arrivals"
    arrivals.mkdir()
    for n, source in enumerate(collection.by_class["watch"][1:3]):
        with_other_bytes = source.read_bytes() + b"\0" * (n + 1)
        (arrivals / f"new-{n}.jpg").write_bytes(with_other_bytes)
    assert run("index", str(collection.root), *args)[0] == 0
    status, fresh = run("saved", "run", "watches", "--new", "--paths", *args)
    assert status == 0
    assert sorted(Path(p).name for p in fresh.splitlines()) == ["new-0.jpg", "new-1.jpg"]
    log = tmp_path / "audit.jsonl"
    status, again = run("saved", "run", "watches", "--new", "--paths", "--audit", str(log), *args)
    assert status == 0 and again == ""
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["event"] == "saved-search" and entry["query"]["name"] == "watches"
    assert entry["results"] == []
