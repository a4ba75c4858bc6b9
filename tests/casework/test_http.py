"""Case work over HTTP: collapsing near-duplicates in search results, the page's
export as a case file that `verify` accepts, and the server's audit log."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spyglass.casework.audit import verify_log
from spyglass.casework.casefile import CaseFile
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app
from spyglass.store.index import Index

from .conftest import EditedCollection, image_id, serve_in_process


@pytest.fixture
def served(
    edited_index: Path, bundled: Encoder, tmp_path: Path
) -> Iterator[tuple[TestClient, Spyglass, Path]]:
    audit_log = tmp_path / "audit.jsonl"
    for client, engine in serve_in_process(edited_index, bundled, audit_log=audit_log):
        yield client, engine, audit_log


def test_search_collapses_near_duplicates_on_request(
    served: tuple[TestClient, Spyglass, Path], edited: EditedCollection
) -> None:
    client, engine, _ = served
    source = next(iter(edited.copies))
    members = {image_id(engine, p) for p in [source, *edited.copies[source].values()]}
    body = {"image_id": image_id(engine, source), "limit": 6}
    plain = client.post("/api/search", json=body).json()["results"]
    collapsed = client.post("/api/search", json={**body, "collapse_duplicates": True}).json()
    assert len({r["id"] for r in plain} & members) >= 3
    assert all(r["group_size"] == 1 for r in plain)
    first = collapsed["results"][0]
    assert first["group_size"] >= 3 and set(first["duplicates"]) | {first["id"]} >= members
    assert not {r["id"] for r in collapsed["results"][1:]} & members
    for wrong in ("yes", 1, None):
        refused = client.post("/api/search", json={**body, "collapse_duplicates": wrong})
        assert refused.status_code == 422


def test_export_is_a_case_file_that_verifies(served: tuple[TestClient, Spyglass, Path]) -> None:
    client, engine, audit_log = served
    body = {"text": "a sunflower", "limit": 5, "positives": [0], "collapse_duplicates": True}
    response = client.post("/api/export", json={**body, "format": "json"})
    assert response.status_code == 200, response.text
    case = CaseFile.from_json(response.text)
    assert case.intact and len(case.results) == 5 and case.search.collapse is not None
    assert case.results[0].sha256 and case.request and case.request["positives"] == [0]
    verification = engine.verify(case)
    assert verification.ok, verification.lines()
    flat = client.post("/api/export", json={**body, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(flat.text)))
    assert [int(r["id"]) for r in rows] == [r.image_id for r in case.results]
    assert [r["sha256"] for r in rows] == [r.sha256 for r in case.results]
    entries = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert [e["event"] for e in entries] == ["export", "export"]
    assert entries[0]["client"] == "address testclient"
    assert entries[0]["results"] == [r.image_id for r in case.results]
    assert verify_log(audit_log).intact


def test_openapi_documents_collapse_and_group_size(
    served: tuple[TestClient, Spyglass, Path],
) -> None:
    client, _, audit_log = served
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["SearchRequest"]["properties"]["collapse_duplicates"]["type"] == "boolean"
    assert "group_size" in schemas["SearchResultItem"]["properties"]
    assert "case file" in schemas["ExportRequest"]["description"]
    client.post("/api/search", json={"text": "a watch", "limit": 3})
    assert json.loads(audit_log.read_text())["event"] == "search"


def test_an_uploaded_query_image_is_kept_in_the_case_file(
    served: tuple[TestClient, Spyglass, Path], edited: EditedCollection
) -> None:
    client, engine, _ = served
    picture = edited.by_class["watch"][3].read_bytes()
    first = client.post(
        "/api/search/upload",
        files={"image": ("query.jpg", picture, "image/jpeg")},
        data={"limit": "4", "collapse_duplicates": "true"},
    )
    assert first.status_code == 200, first.text
    upload_id = first.json()["upload_id"]
    response = client.post(
        "/api/export", json={"upload_id": upload_id, "limit": 4, "format": "json"}
    )
    case = CaseFile.from_json(response.text)
    (image,) = case.search.terms
    assert getattr(image, "kind", None) == "upload" and getattr(image, "data", None) == picture
    assert engine.verify(case).ok
    # The audit log keeps the upload's SHA-256, not its bytes.
    _, _, audit_log = served
    logged = json.loads(audit_log.read_text().splitlines()[-1])["query"]["terms"][0]["image"]
    assert "copy" not in logged and logged["copy_bytes"] == len(picture)


def test_a_search_that_cannot_be_audited_is_refused(
    edited_index: Path, bundled: Encoder, tmp_path: Path
) -> None:
    engine = Spyglass(bundled, Index.open(edited_index))
    settings = ServerSettings.for_binding(
        "127.0.0.1", 8000, None, audit_log=tmp_path, prepare_at_start=False
    )  # a folder: no entry can be appended
    try:
        with TestClient(create_app(engine, settings), base_url="http://127.0.0.1") as client:
            refused = client.post("/api/search", json={"text": "a watch"})
    finally:
        engine.close()
    assert refused.status_code == 503
    assert "cannot open the audit log" in refused.text


def test_a_saved_search_run_is_recorded_in_the_audit_log(
    own_collection: tuple[EditedCollection, Path], bundled: Encoder, tmp_path: Path
) -> None:
    """Running a saved search is a search: the server's log has it, with the name, the
    search as saved and the ids it returned, chained like every other entry. (An index
    of its own: saved searches are written into the index's folder.)"""
    _, folder = own_collection
    audit_log = tmp_path / "audit.jsonl"
    for client, _ in serve_in_process(folder, bundled, audit_log=audit_log):
        saved = client.post("/api/saved?name=watches", json={"text": "a watch", "limit": 3})
        assert saved.status_code == 201, saved.text
        run = client.post("/api/saved/watches/run")
        assert run.status_code == 200, run.text
    entries = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert [e["event"] for e in entries] == ["saved-search"]
    (entry,) = entries
    assert entry["query"]["name"] == "watches" and entry["query"]["new_only"] is False
    assert entry["results"] == [r["id"] for r in run.json()["results"]]
    assert verify_log(audit_log).intact
