"""`spyglass serve` binds its port before it says anything: a busy port is one line on
stderr and exit status 5, in the real process."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def serve(index: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spyglass", "serve", "--index", str(index), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_busy_port_is_one_line_and_exit_5_before_any_announcement(photo_index: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(photo_index, "--port", str(port))
    assert result.returncode == 5
    assert result.stdout == ""  # no "serving ... open http://..." first
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is in use; choose another with --port\n"
    )


def test_an_address_not_on_this_machine_is_exit_5(photo_index: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to a machine; nothing is sent.
    result = serve(photo_index, "--host", "192.0.2.1", "--token", "x" * 32)
    assert result.returncode == 5 and result.stdout == ""
    assert result.stderr == (
        "error: 192.0.2.1 is not an address of this machine; choose another with --host\n"
    )
