"""The real `spyglass serve` process: many clients at once, and clients that hang up
or send broken requests, while others keep getting right answers."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from .conftest import Collection, LiveServer

pytestmark = pytest.mark.slow

QUERIES = ["an airplane", "a wrist watch", "a sunflower", "a laptop computer", "a coffee cup"]


def search(http: httpx.Client, text: str) -> list[int]:
    response = http.post("/api/search", json={"text": text, "limit": 30})
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def test_concurrent_clients_get_the_same_answers(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        expected = {text: search(http, text) for text in QUERIES}
        ids = sorted({i for found in expected.values() for i in found})[:40]

    def work(n: int) -> Any:
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            kind = n % 4
            if kind == 0:
                text = QUERIES[n % len(QUERIES)]
                return ("search", text, search(http, text))
            if kind == 1:
                response = http.get(f"/api/images/{ids[n % len(ids)]}/thumbnail")
                return ("thumbnail", response.status_code, response.headers["content-type"])
            if kind == 2:
                body = {"text": QUERIES[n % len(QUERIES)], "limit": 30}
                return ("clusters", http.post("/api/clusters", json=body).status_code, None)
            return ("status", http.get("/api/status").status_code, None)

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(work, range(72)))
    for kind, first, second in answers:
        if kind == "search":
            assert second == expected[first]
        elif kind == "thumbnail":
            assert (first, second) == (200, "image/jpeg")
        else:
            assert first == 200, kind


def test_broken_and_abandoned_requests_do_not_stop_the_server(
    live_server: LiveServer, collection: Collection
) -> None:
    host, port = live_server.url.removeprefix("http://").split(":")
    photo = (collection.root / "photos" / "07_Kite.jpg").read_bytes()
    # An upload that announces more bytes than it sends, then hangs up.
    head = (
        "POST /api/uploads HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {len(photo) + 1000}\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="image"; filename="k.jpg"\r\n\r\n'
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(head + photo[: len(photo) // 2])
    # Garbage instead of HTTP.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200))
        raw.recv(1024)
    # A multipart body cut in the middle of its envelope.
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        cut = http.post(
            "/api/uploads",
            content=b'--b\r\nContent-Disposition: form-data; name="image"; filename="k"\r\n\r\nxx',
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert 400 <= cut.status_code < 500
        assert search(http, "an airplane")
        upload = http.post("/api/uploads", files={"image": ("k.jpg", photo, "image/jpeg")})
        assert upload.status_code == 201
