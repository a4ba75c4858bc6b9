"""Clients that connect and stall (no request, or a head dribbled and never finished)
are closed after --head-timeout; meanwhile and afterwards, real requests are served.
Against the real `spyglass serve` process on loopback, bounded in count and time."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

STALLED = 60


def closed_by_server(connection: socket.socket, within: float) -> bool:
    connection.settimeout(within)
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset


def test_stalled_connections_are_closed_and_others_are_served(
    sample_photos_index: Path, serve
) -> None:
    served = serve(sample_photos_index, "--head-timeout", "2", "--body-timeout", "2")
    url, port = served.url, served.port
    stalled: list[socket.socket] = []
    try:
        for n in range(STALLED):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            if n % 2:  # half send the start of a head and never finish it
                connection.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            stalled.append(connection)
        served = httpx.post(url + "/api/search", json={"text": "a cat"}, timeout=30)
        assert served.status_code == 200
        started = time.monotonic()
        assert all(closed_by_server(c, within=10) for c in stalled)
        assert time.monotonic() - started < 12
        assert httpx.get(url + "/api/status", timeout=10).status_code == 200
    finally:
        for connection in stalled:
            connection.close()


def test_a_body_that_stalls_is_answered_408(sample_photos_index: Path, serve) -> None:
    served = serve(sample_photos_index, "--body-timeout", "2")
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as connection:
        connection.sendall(
            b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        connection.settimeout(15)
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request-timeout" in answer
