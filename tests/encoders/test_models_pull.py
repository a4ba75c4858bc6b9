"""`spyglass models pull NAME` against a fake hub started here: a loopback HTTP server laid
out as the Hugging Face hub is (``/{repo}/resolve/{revision}/{file}``, LFS files
redirected with their SHA-256 and size in ``X-Linked-Etag`` / ``X-Linked-Size``, range
requests), and a ``file://`` mirror of the same folder. The files are a real-architecture
random-weight CLIP (``tiny_clip_dir``) published under the name ``clip-vit-b-32``'s
repository. The real network is never used: the offline checks point the hub at a
closed port on 127.0.0.1 and refuse every other connection."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from spyglass.cli import main
from spyglass.encoders.hub import CONNECT_TIMEOUT

NAME = "clip-vit-b-32"
REPO = "openai/clip-vit-base-patch32"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
#: Files the hub stores in LFS: redirected, with their SHA-256 stated.
LFS_SUFFIXES = (".safetensors", ".bin", ".onnx")
PHOTO_COUNT = 4


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeHub:
    """A hub over ``root/{repo}/{file}``; ``announced`` holds the SHA-256 it states for
    each LFS file (computed when the hub is built: a file changed afterwards is served
    as it now is, against the hash stated for the original)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.announced = {
            str(p.relative_to(root)): sha256(p)
            for p in root.rglob("*")
            if p.is_file() and p.name.endswith(LFS_SUFFIXES)
        }
        self.requests: list[tuple[str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                hub.requests.append((self.path, self.headers.get("Range")))
                lfs = re.fullmatch(r"/lfs/(.+)", self.path)
                resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", self.path)
                relative = ""
                if lfs:
                    relative = lfs.group(1)
                elif resolve:
                    relative = f"{resolve.group(1)}/{resolve.group(2)}"
                file = hub.root / relative
                if not relative or not file.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if resolve and relative in hub.announced:
                    self.send_response(302)
                    self.send_header("Location", f"/lfs/{relative}")
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("X-Linked-Etag", f'"{hub.announced[relative]}"')
                    self.send_header("X-Linked-Size", str(file.stat().st_size))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if ranged:
                    start = int(ranged.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub_root(tiny_clip_dir: Path, tmp_path: Path) -> Path:
    """``root/openai/clip-vit-base-patch32/`` holding the tiny CLIP's files."""
    root = tmp_path / "hub"
    shutil.copytree(tiny_clip_dir, root / REPO)
    return root


@pytest.fixture
def fake_hub(hub_root: Path) -> Iterator[FakeHub]:
    hub = FakeHub(hub_root)
    yield hub
    hub.close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Spyglass cache (sharing the prepared bundled model) and an empty
    Hugging Face cache, so that nothing is found but what the pull puts there."""
    from huggingface_hub import constants

    from spyglass.settings import RuntimeSettings

    shared = RuntimeSettings.from_environment().cache_dir / "models"
    shared.mkdir(parents=True, exist_ok=True)
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "models").symlink_to(shared)
    monkeypatch.setenv("SPYGLASS_CACHE_DIR", str(folder))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-hub"))
    return folder


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def no_network_but(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse (and record) every connection: the hub, loopback or not, must not be asked."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network use where none may happen")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_pull_then_index_offline_with_the_name(
    fake_hub: FakeHub,
    hub_root: Path,
    cache: Path,
    photos: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    photo_paths = [str(p) for p in photos.paths()[:PHOTO_COUNT]]
    index = str(tmp_path / "index")
    # Before the pull the name resolves to nothing: one line saying how to get it.
    monkeypatch.setenv("SPYGLASS_HUB_URL", fake_hub.url)
    before = run("index", *photo_paths, "--index", index, "--model", NAME)
    assert before.exit_code == 4
    line = one_error_line(before)
    assert f"spyglass models pull {NAME}" in line and str(cache / "pulled" / NAME) in line

    pulled = run("models", "pull", NAME)
    assert pulled.exit_code == 0, pulled.output
    folder = cache / "pulled" / NAME
    published = {str(p.relative_to(hub_root / REPO)) for p in (hub_root / REPO).rglob("*")}
    assert published <= {str(p.relative_to(folder)) for p in folder.rglob("*")}
    for name in published:  # byte for byte what the hub holds
        assert sha256(folder / name) == sha256(hub_root / REPO / name), name
    manifest = json.loads((folder / ".spyglass-pull.json").read_text())
    assert manifest["commit"] == COMMIT
    assert manifest["files"]["model.safetensors"]["verified"] == "hub"
    assert manifest["files"]["config.json"]["verified"] == "first download"
    assert not (cache / "pulled" / ".partial" / NAME).exists()
    listed = json.loads(run("models", "--json").output)["pullable"][NAME]
    assert listed["pulled"] is True and listed["folder"] == str(folder)

    # Offline: the hub is a closed port and no connection may be opened at all.
    monkeypatch.setenv("SPYGLASS_HUB_URL", f"http://127.0.0.1:{closed_port()}")
    attempts = no_network_but(monkeypatch)
    indexed = run("index", *photo_paths, "--index", index, "--model", NAME, "--json")
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.output)["added"] == PHOTO_COUNT
    searched = run("search", "a calm lake", "--index", index, "--json", "-k", "2")
    assert searched.exit_code == 0, searched.output
    assert len(json.loads(searched.output)) == 2
    # Pulling again checks the files against the record and downloads nothing.
    again = run("models", "pull", NAME)
    assert again.exit_code == 0, again.output
    assert "0 of" in again.output
    assert attempts == []


def test_a_partial_download_resumes_with_a_range_request(
    fake_hub: FakeHub, hub_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = (hub_root / REPO / "model.safetensors").read_bytes()
    partial = cache / "pulled" / ".partial" / NAME / "model.safetensors.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(weights[: len(weights) // 2])
    monkeypatch.setenv("SPYGLASS_HUB_URL", fake_hub.url)
    assert run("models", "pull", NAME).exit_code == 0
    # The resolve request and its redirect to storage both ask for the missing half.
    ranges = [r for path, r in fake_hub.requests if path.endswith("model.safetensors")]
    assert ranges == [f"bytes={len(weights) // 2}-"] * 2
    assert (cache / "pulled" / NAME / "model.safetensors").read_bytes() == weights


def test_a_corrupted_file_is_refused_and_not_kept(
    fake_hub: FakeHub, hub_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = hub_root / REPO / "model.safetensors"
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one byte flipped after the hash was stated
    weights.write_bytes(bytes(damaged))
    monkeypatch.setenv("SPYGLASS_HUB_URL", fake_hub.url)
    result = run("models", "pull", NAME)
    assert result.exit_code == 4
    line = one_error_line(result)
    assert "model.safetensors" in line and "failed verification" in line and "SHA-256" in line
    assert not (cache / "pulled" / NAME / "model.safetensors").exists()
    assert not list((cache / "pulled").rglob("*.part"))
    # The name still does not resolve: nothing half-verified is used.
    indexed = run("index", str(hub_root), "--index", str(cache / "i"), "--model", NAME)
    assert indexed.exit_code == 4 and "is not pulled" in one_error_line(indexed)


def test_a_file_mirror_records_hashes_and_catches_a_changed_file(
    hub_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = no_network_but(monkeypatch)
    monkeypatch.setenv("SPYGLASS_HUB_URL", hub_root.as_uri())
    first = run("models", "pull", NAME)
    assert first.exit_code == 0, first.output
    folder = cache / "pulled" / NAME
    manifest = json.loads((folder / ".spyglass-pull.json").read_text())
    weights = folder / "model.safetensors"
    assert manifest["files"]["model.safetensors"] == {
        "size": weights.stat().st_size,
        "sha256": sha256(hub_root / REPO / "model.safetensors"),
        "verified": "first download",
    }
    # A file changed after the pull no longer matches the record: refused and removed.
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    changed = run("models", "pull", NAME)
    assert changed.exit_code == 4
    assert "not the file that was pulled" in one_error_line(changed)
    assert not weights.exists()
    # And the next pull fetches it again from the mirror.
    assert run("models", "pull", NAME).exit_code == 0
    assert sha256(weights) == sha256(hub_root / REPO / "model.safetensors")
    assert attempts == []


def test_an_unreachable_hub_is_one_fast_line_saying_how_to_copy_by_hand(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPYGLASS_HUB_URL", f"http://127.0.0.1:{closed_port()}")
    started = time.perf_counter()
    result = run("models", "pull", NAME)
    elapsed = time.perf_counter() - started
    assert result.exit_code == 4
    line = one_error_line(result)
    assert "cannot reach http://127.0.0.1:" in line
    assert str(cache / "pulled" / NAME) in line
    assert "model.safetensors (or pytorch_model.bin)" in line and "config.json" in line
    # Refused at once: no retry loop, no wait for the connect time-out.
    assert elapsed < CONNECT_TIMEOUT, elapsed
    assert not (cache / "pulled" / NAME).exists()


def test_files_copied_in_by_hand_are_used_and_verified_offline(
    tiny_clip_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = no_network_but(monkeypatch)
    monkeypatch.setenv("SPYGLASS_HUB_URL", "https://huggingface.co")
    shutil.copytree(tiny_clip_dir, cache / "pulled" / NAME)
    result = run("models", "pull", NAME)
    assert result.exit_code == 0, result.output
    assert "0 of" in result.output
    listed = json.loads(run("models", "--json").output)["pullable"][NAME]
    assert listed["pulled"] is True
    assert attempts == []
