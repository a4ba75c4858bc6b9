"""Clients that connect and stall (no request, or a head dribbled and never finished)
are closed after --head-timeout; meanwhile and afterwards, real requests are served.
Against the real `spyglass serve` process on loopback, bounded in count and time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STALLED = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_by_server(connection: socket.socket, within: float) -> bool:
    connection.settimeout(within)
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset


def test_stalled_connections_are_closed_and_others_are_served(
    sample_photos_index: Path, tmp_path: Path
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "spyglass", "serve", "--index", str(sample_photos_index)),
            *("--port", str(port), "--head-timeout", "2", "--body-timeout", "2"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SPYGLASS_CACHE_DIR": str(tmp_path / "cache")},
    )
    url = f"http://127.0.0.1:{port}"
    stalled: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()
            try:
                httpx.get(url + "/api/status", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "spyglass serve did not answer"
                time.sleep(0.2)
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
        process.terminate()
        process.wait(timeout=30)


def test_a_body_that_stalls_is_answered_408(sample_photos_index: Path, tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "spyglass", "serve", "--index", str(sample_photos_index)),
            *("--port", str(port), "--body-timeout", "2"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SPYGLASS_CACHE_DIR": str(tmp_path / "cache")},
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "spyglass serve did not answer"
                time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
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
    finally:
        process.terminate()
        process.wait(timeout=30)
