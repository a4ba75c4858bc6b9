"""Hostile HTTP against the app over the sample photos (no test data needed): Host
headers that only start like this machine's, Origins with other schemes, HEAD."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def client(sample_client: TestClient) -> TestClient:
    return sample_client


@pytest.mark.parametrize(
    "host",
    [
        "[::1].evil.example",
        "localhost:80@evil",
        "127.0.0.1.evil.example",
        "localhost.evil.example:8000",
        "127.0.0.1:8000/evil",
        "localhost:abc",
        "",
    ],
)
def test_host_headers_that_only_look_local_are_refused(client: TestClient, host: str) -> None:
    response = client.get("/api/status", headers={"host": host})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "wrong-host"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8000", "[::1]:8000", "LOCALHOST"])
def test_this_machines_names_are_accepted(client: TestClient, host: str) -> None:
    assert client.get("/api/status", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("origin", ["null", "ftp://127.0.0.1", "127.0.0.1", "http://evil.example"])
def test_origins_of_other_schemes_or_sites_are_refused(client: TestClient, origin: str) -> None:
    response = client.post(
        "/api/search", json={"text": "a cat"}, headers={"host": "127.0.0.1", "origin": origin}
    )
    assert response.status_code == 403


def test_a_same_origin_post_is_served(client: TestClient) -> None:
    response = client.post(
        "/api/search",
        json={"text": "a cat"},
        headers={"host": "127.0.0.1", "origin": "http://127.0.0.1"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/", "/api/status", "/api/methods", "/static/style.css"])
def test_head_answers_like_get_without_a_body(client: TestClient, path: str) -> None:
    got = client.get(path)
    head = client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
