"""The HTTP API over the demo's 14 sample photos: needs no SPYGLASS_TEST_DATA, so every
machine tests the server end to end (in-process, and the real `spyglass serve` process)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from .conftest import free_port


def search(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    response = client.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def name(result: dict[str, Any]) -> str:
    return Path(result["path"]).name


def image_id(client: TestClient, folder: Path, file: str) -> int:
    found = client.get("/api/images/lookup", params={"path": str(folder / file)})
    assert found.status_code == 200, found.text
    return int(found.json()["id"])


def test_status_and_text_search(sample_client: TestClient) -> None:
    status = sample_client.get("/api/status").json()
    assert status["images"] == 14 and status["skipped"] == 0
    results = search(sample_client, text="a cup of coffee", limit=5)
    assert name(results[0]) == "coffee.png"
    assert all(-1.0 <= r["score"] <= 1.0 for r in results)


def test_image_image_and_text_and_marks(sample_client: TestClient, sample_photos: Path) -> None:
    camera = image_id(sample_client, sample_photos, "cameraman.png")
    by_image = search(sample_client, image_id=camera, limit=14)
    assert name(by_image[0]) == "cameraman.png" and by_image[0]["score"] > 0.999
    both = search(sample_client, image_id=camera, text="a rocket launch", limit=14)
    assert [name(r) for r in both].index("rocket.jpg") < [name(r) for r in by_image].index(
        "rocket.jpg"
    )
    horse = image_id(sample_client, sample_photos, "horse.png")
    marked = search(sample_client, text="a cup of coffee", positives=[horse], limit=5)
    assert name(marked[0]) == "horse.png"
    both_marks = sample_client.post(
        "/api/search", json={"text": "a cup of coffee", "positives": [horse], "negatives": [horse]}
    )
    assert both_marks.status_code == 400
    assert "both good and bad" in both_marks.json()["error"]["message"]


def test_thumbnails_export_and_bad_input(sample_client: TestClient, sample_photos: Path) -> None:
    coffee = image_id(sample_client, sample_photos, "coffee.png")
    thumbnail = sample_client.get(f"/api/images/{coffee}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    exported = sample_client.post("/api/export", json={"text": "a horse", "format": "csv"})
    assert exported.status_code == 200 and "horse.png" in exported.text
    assert sample_client.get("/api/images/999999").status_code == 404
    region = sample_client.post(
        "/api/search", json={"image_id": coffee, "region": [0.9, 0, 0.1, 1]}
    )
    assert 400 <= region.status_code < 500 and region.json()["error"]["message"]


def test_the_real_serve_process_answers(sample_photos_index: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "spyglass", "serve"),
            *("--index", str(sample_photos_index), "--port", str(port)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                answer = httpx.post(url + "/api/search", json={"text": "a cat"}, timeout=30)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "spyglass serve did not answer in 90 s"
                time.sleep(0.3)
        assert answer.status_code == 200
        assert name(answer.json()["results"][0]) == "chelsea-the-cat.png"
        assert httpx.get(url + "/", timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_query_longer_than_the_model_reads_says_it_was_cut(sample_client: TestClient) -> None:
    response = sample_client.post("/api/search", json={"text": "a cup of coffee " * 100})
    assert response.status_code == 200
    (note,) = response.json()["notes"]
    assert note.startswith("the query was cut at 256 tokens (it has ")
    plain = sample_client.post("/api/search", json={"text": "a cup of coffee"}).json()
    assert plain["notes"] == []
