"""A token read from a file stays out of the process list, and still guards the API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from spyglass.cli import main

TOKEN = "correct-horse-battery-staple-42"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_takes_its_token_from_a_file(sample_photos_index: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "spyglass", "serve", "--index", str(sample_photos_index)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--token-file", str(token_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "SPYGLASS_TOKEN"},
    )
    url = f"http://127.0.0.1:{port}/api/status"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None
            try:
                anonymous = httpx.get(url, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "spyglass serve did not answer"
                time.sleep(0.2)
        assert anonymous.status_code == 401
        authorised = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert authorised.status_code == 200
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in command_line
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_token_file_that_is_empty_or_missing_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    for name, message in (("empty", "is empty"), ("missing", "cannot read --token-file")):
        result = CliRunner().invoke(
            main, ["serve", "--index", str(tmp_path), "--token-file", str(tmp_path / name)]
        )
        assert result.exit_code == 2
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
