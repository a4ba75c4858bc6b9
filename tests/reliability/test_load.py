"""A bounded load run against the live `spyglass serve` process on loopback, through
`spyglass bench load` itself: every kind of request the page makes, from concurrent
clients, answered without one error, and the server's memory reported.

CI: 1 then 4 clients for 4 s each over the sample photos. SPYGLASS_LONG=1: 1, 8 and
32 clients for 30 s each."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.bench.load import DEFAULT_MIX
from spyglass.cli import main
from spyglass.settings import RuntimeSettings

LONG = bool(os.environ.get("SPYGLASS_LONG"))
CLIENTS, SECONDS = ("1,8,32", "30") if LONG else ("1,4", "4")


@pytest.fixture
def server_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of the test's own for the server's thumbnails and map, sharing the
    prepared model files (preparing them again takes tens of seconds)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(RuntimeSettings.from_environment().cache_dir / "models")
    monkeypatch.setenv("SPYGLASS_CACHE_DIR", str(cache))
    return cache


def test_concurrent_clients_get_every_answer(
    sample_photos_index: Path, server_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "load.json"
    result = CliRunner().invoke(
        main,
        [
            *("bench", "load", "--index", str(sample_photos_index)),
            *("--clients", CLIENTS, "--seconds", SECONDS, "--timeout", "60"),
            *("--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    phases = report["phases"]
    assert [p["clients"] for p in phases] == [int(c) for c in CLIENTS.split(",")]
    for phase in phases:
        assert phase["errors"] == 0, phase["error_examples"]
        assert phase["requests"] > 0
    answered = {kind for phase in phases for kind in phase["kinds"]}
    assert answered == set(DEFAULT_MIX)
    assert report["goals"]["errors"] == 0
    assert report["rss_mb_before"] > 0 and report["rss_mb_after"] > 0
    assert "client(s)" in result.output
    # The server's caches went to the test's folder, not the user's.
    assert any((server_cache / "server").rglob("*"))


def test_a_server_that_does_not_answer_is_one_line() -> None:
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = CliRunner().invoke(main, ["bench", "load", "--url", url, "--seconds", "1"])
    assert result.exit_code == 5
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith(f"error: the server at {url} did not answer")


def test_an_index_that_cannot_be_served_is_one_line(sample_photos: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "load", "--index", str(sample_photos), "--seconds", "1"]
    )
    assert result.exit_code == 5
    assert result.output.strip().count("\n") == 0
    assert "spyglass serve did not start" in result.output


def test_an_open_loop_phase_sends_at_its_rate_whatever_the_answers_take(
    sample_photos_index: Path, server_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "open.json"
    result = CliRunner().invoke(
        main,
        [
            *("bench", "load", "--index", str(sample_photos_index)),
            *("--rate", "4", "--seconds", "5", "--timeout", "60", "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    (phase,) = report["phases"]
    assert phase["rate"] == 4 and "clients" not in phase
    assert phase["errors"] == 0, phase["error_examples"]
    # Poisson arrivals at 4/s for 5 s: 20 expected; the seeded draw is well inside this.
    assert 8 <= phase["requests"] <= 40
    assert "open loop at 4 requests/s" in result.output


def test_a_bad_rate_is_one_line() -> None:
    result = CliRunner().invoke(main, ["bench", "load", "--url", "http://x", "--rate", "0"])
    assert result.exit_code == 2
    assert "requests per second" in result.output
