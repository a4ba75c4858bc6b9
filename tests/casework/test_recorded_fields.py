"""A recorded search (case file, saved search) holding a filter or a field this
version does not know is refused with one line, never run without it: `spyglass
verify`, `spyglass saved run`, POST /api/verify; and a search body's unknown filter
is a 422."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from spyglass.casework.saved import SAVED_FILE
from spyglass.cli import main
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app
from spyglass.store.index import Index

from .conftest import EditedCollection

#: Hand edits to a recorded search: (where, key, value), each unknown to this version.
EDITS = (
    ("filters", "colour", "red"),
    ("search", "sort_by", "size"),
    ("marks", "maybe", [1]),
)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def edited_search(search: dict, where: str, key: str, value: object) -> dict:
    changed = json.loads(json.dumps(search))
    if where == "search":
        changed[key] = value
    else:
        changed[where][key] = value
    return changed


@pytest.fixture
def case_document(edited_index: Path, edited: EditedCollection, tmp_path: Path) -> dict:
    case = tmp_path / "case.json"
    root = str(edited.root / "watch")
    status, out = invoke(
        "search", "a wrist watch", "--under", root, "-k", "3", "--index", str(edited_index),
        "--export", str(case),
    )  # fmt: skip
    assert status == 0, out
    document = json.loads(case.read_text())
    assert document["search"]["filters"] == {"under": [root]}
    return document


def test_verify_refuses_a_case_file_with_an_unknown_filter_or_field(
    edited_index: Path, case_document: dict, tmp_path: Path
) -> None:
    target = tmp_path / "edited.json"
    target.write_text(json.dumps(case_document))
    assert invoke("verify", str(target), "--index", str(edited_index))[0] == 0
    for where, key, value in EDITS:
        document = {
            **case_document,
            "search": edited_search(case_document["search"], where, key, value),
        }
        target.write_text(json.dumps(document))
        status, out = invoke("verify", str(target), "--index", str(edited_index))
        # Exit 2 (the search cannot be read), not 0 (run without it) nor 6 (a finding).
        assert status == 2, (key, out)
        assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
        assert f"'{key}'" in out and "does not know" in out and "not run without it" in out


def test_saved_run_refuses_a_hand_edited_saved_search(edited_index: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(edited_index, index)
    args = ("--index", str(index))
    assert invoke("saved", "save", "watches", "a wrist watch", "--format", "jpeg", *args)[0] == 0
    assert invoke("saved", "run", "watches", *args)[0] == 0
    stored = json.loads((index / SAVED_FILE).read_text())
    search = stored["searches"]["watches"]["search"]
    assert search["filters"] == {"formats": ["JPEG"]}
    for where, key, value in EDITS:
        stored["searches"]["watches"]["search"] = edited_search(search, where, key, value)
        (index / SAVED_FILE).write_text(json.dumps(stored))
        status, out = invoke("saved", "run", "watches", *args)
        assert status == 2, (key, out)
        assert len(out.strip().splitlines()) == 1
        assert out.startswith("error: saved search 'watches'") and f"'{key}'" in out


@pytest.fixture
def client(edited_index: Path, bundled: Encoder) -> Iterator[TestClient]:
    engine = Spyglass(bundled, Index.open(edited_index))
    settings = ServerSettings.for_binding("127.0.0.1", 8000, None, prepare_at_start=False)
    try:
        with TestClient(create_app(engine, settings), base_url="http://127.0.0.1") as served:
            yield served
    finally:
        engine.close()


def test_http_verify_refuses_an_unknown_filter_and_search_refuses_one(
    client: TestClient, case_document: dict
) -> None:
    untouched = client.post("/api/verify", json=case_document)
    assert untouched.status_code == 200 and untouched.json()["verified"] is True
    # The client parsed the file and wrote it again (1.0 as 1): the seal holds.
    assert untouched.json()["seal_format"] == 2 and untouched.json()["case_intact"] is True
    for where, key, value in EDITS:
        document = {
            **case_document,
            "search": edited_search(case_document["search"], where, key, value),
        }
        answer = client.post("/api/verify", json=document)
        assert answer.status_code == 400, (key, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid-query" and f"'{key}'" in error["message"]
    body = {"text": "a watch", "filters": {"formats": ["jpeg"], "colour": "red"}}
    refused = client.post("/api/search", json=body)
    assert refused.status_code == 422 and "colour" in refused.text
