"""A token read from a file stays out of the process list, and still guards the API."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from click.testing import CliRunner

from spyglass.cli import main

TOKEN = "correct-horse-battery-staple-42"


def test_serve_takes_its_token_from_a_file(
    sample_photos_index: Path, tmp_path: Path, serve
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if k != "SPYGLASS_TOKEN"}
    served = serve(sample_photos_index, "--token-file", str(token_file), env=environment)
    url = served.url
    assert httpx.get(url + "/api/status", timeout=10).status_code == 401
    authorised = httpx.get(
        url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert authorised.status_code == 200
    command_line = Path(f"/proc/{served.process.pid}/cmdline").read_bytes()
    assert TOKEN.encode() not in command_line


def test_a_token_file_that_is_empty_or_missing_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    for name, message in (("empty", "is empty"), ("missing", "cannot read --token-file")):
        result = CliRunner().invoke(
            main, ["serve", "--index", str(tmp_path), "--token-file", str(tmp_path / name)]
        )
        assert result.exit_code == 2
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
