"""Case work over the HTTP API: near-duplicate groups (GET /api/duplicates), checking
a case file again (POST /api/verify) and saved searches (/api/saved...), each against
what the engine computes for the same index, on real images with the bundled model."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from spyglass.casework.duplicates import DuplicateRule
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.store.index import Index

from .conftest import CLASSES, PER_CLASS, EditedCollection, image_id, serve_in_process


def serve(folder: Path, bundled: Encoder) -> Iterator[tuple[TestClient, Spyglass]]:
    # refresh_seconds=0: a run right after indexing sees the new image, as it would
    # ten seconds later in a real server.
    yield from serve_in_process(folder, bundled, refresh_seconds=0.0)


@pytest.fixture
def shared(edited_index: Path, bundled: Encoder) -> Iterator[tuple[TestClient, Spyglass]]:
    """The session's index (read-only: its hashes are kept already)."""
    yield from serve(edited_index, bundled)


@pytest.fixture
def own(
    own_collection: tuple[EditedCollection, Path], bundled: Encoder
) -> Iterator[tuple[TestClient, Spyglass, EditedCollection, Path]]:
    """A server over an index of this test's own (files may change, images be added)."""
    collection, folder = own_collection
    for client, engine in serve(folder, bundled):
        yield client, engine, collection, folder


# -- GET /api/duplicates ----------------------------------------------------------------


def test_duplicates_are_the_engines_groups(
    shared: tuple[TestClient, Spyglass], edited: EditedCollection
) -> None:
    client, engine = shared
    response = client.get("/api/duplicates")
    assert response.status_code == 200, response.text
    document = response.json()
    expected = engine.duplicates(DuplicateRule(), save_hashes=False)
    assert document["total"] == len(expected) >= 1
    assert [[m["id"] for m in g["members"]] for g in document["groups"]] == [
        list(g.members) for g in expected
    ]
    assert [g["size"] for g in document["groups"]] == sorted(
        (g["size"] for g in document["groups"]), reverse=True
    )
    # Known from how the collection was made: a source and its half-size copy are one
    # group, and its members' paths are their files.
    source = next(iter(edited.copies))
    half = edited.copies[source]["half"]
    holding = [
        g for g in document["groups"] if image_id(engine, source) in [m["id"] for m in g["members"]]
    ]
    assert len(holding) == 1
    by_id = {m["id"]: m["path"] for m in holding[0]["members"]}
    assert by_id[image_id(engine, half)] == str(half)
    assert by_id[image_id(engine, source)] == str(source)
    assert document["threshold"] == DuplicateRule().threshold

    first = client.get("/api/duplicates", params={"limit": 1}).json()
    assert len(first["groups"]) == 1 and first["total"] == document["total"]
    # Cosine alone at a threshold of 1: no re-encode is that close, so fewer groups.
    strict = client.get("/api/duplicates", params={"threshold": 1.0, "no_phash": True}).json()
    assert strict["total"] < document["total"] and strict["phash_distance"] is None


@pytest.mark.parametrize(
    "params", [{"threshold": 0}, {"threshold": "high"}, {"limit": 0}, {"phash_distance": 33}]
)
def test_duplicates_refuse_bad_parameters(
    shared: tuple[TestClient, Spyglass], params: dict[str, object]
) -> None:
    client, _ = shared
    response = client.get("/api/duplicates", params=params)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid-request"


# -- POST /api/verify -------------------------------------------------------------------


def test_verify_finds_nothing_then_the_rewritten_file(
    own: tuple[TestClient, Spyglass, EditedCollection, Path],
) -> None:
    client, _, _, _ = own
    exported = client.post(
        "/api/export", json={"text": "a sunflower", "limit": 4, "format": "json"}
    )
    assert exported.status_code == 200, exported.text
    case = exported.json()
    untouched = client.post("/api/verify", json=case)
    assert untouched.status_code == 200, untouched.text
    report = untouched.json()
    assert report["verified"] is True and report["exit_status"] == 0
    assert report["case_intact"] and report["case_sealed"] and report["same_results"]
    assert report["results_checked"] == 4 and report["file_changes"] == []
    assert report["index_then"] == report["index_now"] and not report["index_changed"]

    tampered = Path(case["results"][1]["path"])
    with Image.open(tampered) as opened:
        opened.convert("RGB").rotate(180).save(tampered, "JPEG", quality=70)
    after = client.post("/api/verify", json=case).json()
    assert after["verified"] is False and after["exit_status"] == 7
    assert after["same_results"] is True  # the index was not told: same ranking
    assert [c["path"] for c in after["file_changes"]] == [str(tampered)]
    change = after["file_changes"][0]
    assert change["recorded_sha256"] == case["results"][1]["sha256"] != change["sha256_now"]

    # A case file of a thousand results, or with a query image's copy, is far over the
    # 256 KiB other JSON requests may send; it is read, not refused as too large.
    padded = client.post("/api/verify", json={**case, "note": "x" * 1_000_000})
    assert padded.status_code == 200, padded.text
    assert padded.json()["case_intact"] is False  # the note is not under its digest

    edited = {**case, "results": [{**case["results"][0], "score": 0.5}, *case["results"][1:]]}
    broken_seal = client.post("/api/verify", json=edited).json()
    assert broken_seal["case_intact"] is False and broken_seal["exit_status"] == 6


def test_verify_refuses_what_is_no_case_file(shared: tuple[TestClient, Spyglass]) -> None:
    client, _ = shared
    not_case = client.post("/api/verify", json={"results": []})
    assert not_case.status_code == 400
    assert not_case.json()["error"]["code"] == "case-file-problem"
    assert "case_file" in not_case.json()["error"]["message"]
    wrong_version = client.post("/api/verify", json={"case_file": 999})
    assert wrong_version.status_code == 400
    for body in (b"{not json", b"[1, 2]"):
        response = client.post(
            "/api/verify", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (400, 422), response.text
        assert set(response.json()) == {"error"}


def test_verify_reads_no_file_outside_the_index(
    own: tuple[TestClient, Spyglass, EditedCollection, Path], tmp_path: Path
) -> None:
    client, _, _, _ = own
    case = client.post("/api/export", json={"text": "a watch", "limit": 2, "format": "json"})
    document = case.json()
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not yours")
    document["results"][0]["path"] = str(secret)
    response = client.post("/api/verify", json=document)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "outside-index"
    inside = document["results"][1]["path"]
    hostile = {
        inside + "\x00.jpg": (400, "bad-path"),
        "": (400, "bad-path"),
        inside + "/../../../../../../etc/passwd": (403, "path-escape"),
    }
    for path, (status, code) in hostile.items():
        document["results"][0]["path"] = path
        refused = client.post("/api/verify", json=document)
        assert refused.status_code == status, (path, refused.text)
        assert refused.json()["error"]["code"] == code
    # A forged k would make the search allocate its rows first (10^12: terabytes): the
    # recorded search is refused as any malformed one is (SearchSpec.from_json).
    for forged in ({"k": 10**12}, {"k": 0}, {"offset": 10**12}):
        document = {**case.json(), "search": {**case.json()["search"], **forged}}
        refused = client.post("/api/verify", json=document)
        assert refused.status_code == 400, (forged, refused.text)
        assert refused.json()["error"]["code"] == "invalid-query"


# -- saved searches ---------------------------------------------------------------------


def next_sunflower(data_root: Path) -> Path:
    """A Caltech-101 sunflower the collection does not hold."""
    with (data_root / "caltech101" / "labels.csv").open(newline="") as handle:
        rows = sorted(r["path"] for r in csv.DictReader(handle) if r["label"] == CLASSES[0])
    return data_root / "caltech101" / rows[PER_CLASS]


def test_saved_search_runs_with_only_the_new_image(
    own: tuple[TestClient, Spyglass, EditedCollection, Path],
    bundled: Encoder,
    data_root: Path,
) -> None:
    client, _, collection, folder = own
    body = {"text": "a sunflower", "limit": 3, "filters": {"formats": ["jpeg"]}}
    saved = client.post("/api/saved", params={"name": "flowers"}, json=body)
    assert saved.status_code == 201, saved.text
    listed = client.get("/api/saved").json()["searches"]
    assert [s["name"] for s in listed] == ["flowers"] and listed[0]["last_run_at"] is None

    searched = client.post("/api/search", json=body).json()["results"]
    first = client.post("/api/saved/flowers/run", params={"new": True}).json()
    assert first["since"] is None  # the first run: everything counts as new
    assert [r["id"] for r in first["results"]] == [r["id"] for r in searched]
    again = client.post("/api/saved/flowers/run", params={"new": True}).json()
    assert again["since"] is not None and again["results"] == []
    assert client.get("/api/saved").json()["searches"][0]["last_run_at"] is not None

    added = collection.root / CLASSES[0] / "added-sunflower.jpg"
    shutil.copyfile(next_sunflower(data_root), added)
    with Spyglass(bundled, Index.open_for_writing(folder, bundled.info)) as writer:
        writer.add([str(added)])
    fresh = client.post("/api/saved/flowers/run", params={"new": True}).json()
    assert [r["path"] for r in fresh["results"]] == [str(added)]
    everything = client.post("/api/saved/flowers/run").json()
    assert len(everything["results"]) == 3 and everything["new_only"] is False


def test_saved_searches_refuse_bad_names_and_unknown_ones(
    own: tuple[TestClient, Spyglass, EditedCollection, Path],
) -> None:
    client, _, _, _ = own
    body = {"text": "a watch", "limit": 2}
    bad_name = client.post("/api/saved", params={"name": "../etc"}, json=body)
    assert bad_name.status_code == 400 and bad_name.json()["error"]["code"] == "invalid-query"
    assert client.post("/api/saved", json=body).status_code == 422  # no name
    nothing = client.post("/api/saved", params={"name": "w"}, json={"limit": 2})
    assert nothing.status_code == client.post("/api/search", json={"limit": 2}).status_code == 400
    assert client.post("/api/saved", params={"name": "w"}, json=body).status_code == 201
    again = client.post("/api/saved", params={"name": "w"}, json=body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "saved-search-exists"
    replaced = client.post("/api/saved", params={"name": "w", "replace": True}, json=body)
    assert replaced.status_code == 201
    unknown = client.post("/api/saved/nothing/run")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "saved-search-not-found"
    assert client.post("/api/saved/w/run", params={"new": "maybe"}).status_code == 422


def test_openapi_lists_the_case_work_paths(shared: tuple[TestClient, Spyglass]) -> None:
    client, _ = shared
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        ("/api/duplicates", "get", "DuplicatesResponse"),
        ("/api/verify", "post", "VerifyResponse"),
        ("/api/saved", "get", "SavedSearchesResponse"),
        ("/api/saved", "post", "SavedSearchItem"),
        ("/api/saved/{name}/run", "post", "SavedRunResponse"),
    }
    for path, method, model in expected:
        operation = paths[path][method]
        ok = operation["responses"]["200" if model != "SavedSearchItem" else "201"]
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith(model)
        errors = [s for s in operation["responses"] if s.startswith("4")]
        assert "401" in errors and "400" in errors, (path, method)
        for status in errors:
            error = operation["responses"][status]["content"]["application/json"]["schema"]
            assert error["$ref"].endswith("ErrorBody"), (path, method, status)


def test_saved_search_deleted_then_unknown(
    own: tuple[TestClient, Spyglass, EditedCollection, Path],
) -> None:
    client, _, _, folder = own
    body = {"text": "a watch", "limit": 2}
    assert client.post("/api/saved", params={"name": "gone"}, json=body).status_code == 201
    assert client.post("/api/saved", params={"name": "kept"}, json=body).status_code == 201
    deleted = client.delete("/api/saved/gone")
    assert deleted.status_code == 204 and deleted.content == b""
    assert [s["name"] for s in client.get("/api/saved").json()["searches"]] == ["kept"]
    assert "gone" not in (folder / "saved-searches.json").read_text()  # the CLI's file too
    again = client.delete("/api/saved/gone")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "saved-search-not-found"
    assert client.post("/api/saved/gone/run").status_code == 404
    operation = client.get("/openapi.json").json()["paths"]["/api/saved/{name}"]["delete"]
    assert "204" in operation["responses"] and "404" in operation["responses"]
    error = operation["responses"]["404"]["content"]["application/json"]["schema"]
    assert error["$ref"].endswith("ErrorBody")
