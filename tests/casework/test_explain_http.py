"""Why it matched, over HTTP: ``POST /api/explain`` returns the result (or query) image
with its heatmap as PNG, or the heat as JSON, and refuses bad requests with 4xx JSON."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass

from .conftest import PastedObjects, image_id, serve_in_process


@pytest.fixture
def served(pasted: PastedObjects, bundled: Encoder) -> Iterator[tuple[TestClient, Spyglass]]:
    yield from serve_in_process(pasted.index, bundled)


def test_explain_returns_the_result_with_its_heatmap_as_png(
    served: tuple[TestClient, Spyglass], pasted: PastedObjects
) -> None:
    client, engine = served
    target = image_id(engine, pasted.paths[0])
    body = {"text": pasted.words[0], "id": target, "grid": 4}
    answer = client.post("/api/explain", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(answer.content))
    with Image.open(pasted.paths[0]) as original:
        assert overlay.size == original.size
        # The overlay is not the image itself: the heat changed its pixels.
        difference = np.abs(
            np.asarray(overlay.convert("RGB"), np.int16)
            - np.asarray(original.convert("RGB"), np.int16)
        )
    assert difference.mean() > 5
    score = client.post("/api/search", json={"text": pasted.words[0], "limit": 10}).json()
    listed = {r["id"]: r["score"] for r in score["results"]}
    assert float(answer.headers["x-spyglass-score"]) == pytest.approx(listed[target], abs=1e-4)


def test_explain_as_json_gives_both_heatmaps_of_an_image_query(
    served: tuple[TestClient, Spyglass], pasted: PastedObjects
) -> None:
    client, engine = served
    query, result = (image_id(engine, p) for p in pasted.paths[:2])
    answer = client.post(
        "/api/explain", json={"image_id": query, "id": result, "grid": 3, "format": "json"}
    )
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["space"] == engine.encoder.info.image_space
    assert np.asarray(document["result"]).shape == (3, 3)
    assert np.asarray(document["query"]).shape == (3, 3)
    assert np.ptp(document["result"]) > 0 and np.ptp(document["query"]) > 0
    png = client.post(
        "/api/explain", json={"image_id": query, "id": result, "grid": 3, "target": "query"}
    )
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    with Image.open(pasted.paths[0]) as query_image:
        assert Image.open(io.BytesIO(png.content)).size == query_image.size


def test_explain_refuses_bad_requests_with_json(served: tuple[TestClient, Spyglass]) -> None:
    client, _ = served
    unknown = client.post("/api/explain", json={"text": "a cup", "id": 999_999})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown-image-id"
    for body, status in (
        ({"text": "a cup"}, 422),  # no id
        ({"text": "a cup", "id": 0, "grid": 40}, 422),
        ({"text": "a cup", "id": 0, "target": "query"}, 400),  # no query image
        ({"id": 0}, 400),  # nothing to explain against
    ):
        answer = client.post("/api/explain", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert "error" in answer.json()


def test_explain_is_in_the_openapi_document(served: tuple[TestClient, Spyglass]) -> None:
    client, _ = served
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/api/explain"]["post"]
    content = operation["responses"]["200"]["content"]
    assert {"image/png", "application/json"} <= set(content)
    assert "ExplainRequest" in document["components"]["schemas"]
    assert "404" in operation["responses"]
