"""Bad files are skipped with their reason and indexing goes on; bad queries get one
readable line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from spyglass.cli import main
from spyglass.encoders.base import EncoderInfo
from spyglass.store.index import Index


def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header is rewritten to declare width x height."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def make_bad_folder(folder: Path, good: list[Path]) -> dict[str, str]:
    """Fill ``folder`` with good photos and every kind of bad file; returns the expected
    skip reason per bad path."""
    folder.mkdir()
    for path in good:
        shutil.copy2(path, folder / path.name)
    jpeg = good[0].read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) * 6 // 10])
    (folder / "notes.jpg").write_text("these are my notes, not a photo\n")
    (folder / "bomb.png").write_bytes(png_declaring(30000, 30000))
    (folder / "scan.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    (folder / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / "locked.jpg").write_bytes(jpeg)
    (folder / "locked.jpg").chmod(0)
    (folder / "sub").mkdir()
    (folder / "sub" / "loop").symlink_to("..")
    (folder / "self.jpg").symlink_to("self.jpg")
    (folder / "gone.jpg").symlink_to("nowhere.jpg")
    name = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")
    with open(name, "wb") as handle:
        handle.write(jpeg)
    return {
        "empty.jpg": "empty-file",
        "truncated.jpg": "truncated",
        "notes.jpg": "not-an-image",
        "bomb.png": "decompression-bomb",
        "scan.heic": "unsupported-format",
        "logo.svg": "unsupported-format",
        "locked.jpg": "unreadable",
        "sub/loop": "symlink-loop",
        "self.jpg": "symlink-loop",
        "gone.jpg": "broken-symlink",
        "caf\\xe9.jpg": "undecodable-name",
    }


def run_cli_without_root_powers(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess; as root, without the capabilities that let root read
    any file, so that a chmod 000 file is really unreadable."""
    command = [sys.executable, "-m", "spyglass", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "running as root needs util-linux setpriv to drop CAP_DAC_OVERRIDE"
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_every_bad_file_is_skipped_with_its_reason_and_the_good_ones_are_indexed(
    data_root: Path, tmp_path: Path
):
    good = sorted((data_root / "photos" / "images").iterdir())[:4]
    folder = tmp_path / "mixed"
    expected = make_bad_folder(folder, good)
    index_dir = tmp_path / "index"

    done = run_cli_without_root_powers(["index", str(folder), "--index", str(index_dir), "-q"])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "11 skipped" in done.stdout

    info = CliRunner().invoke(main, ["info", "--index", str(index_dir), "--json"])
    assert info.exit_code == 0, info.output
    status = json.loads(info.stdout)
    assert status["images"] == len(good)
    assert status["skipped"] == len(expected)
    reasons = {
        Path(s["path"]).relative_to(folder).as_posix(): s["reason"] for s in status["skipped_files"]
    }
    assert reasons == expected
    assert all(s["message"] for s in status["skipped_files"])

    # A second run retries nothing that has not changed and loses nothing.
    again = run_cli_without_root_powers(["index", str(folder), "--index", str(index_dir), "--json"])
    summary = json.loads(again.stdout)
    assert summary["embedded"] == 0 and summary["unchanged"] == len(good)
    status = json.loads(
        CliRunner().invoke(main, ["info", "--index", str(index_dir), "--json"]).stdout
    )
    assert (status["images"], status["skipped"]) == (len(good), len(expected))

    # Fixing a file gets it indexed and forgotten from the skipped list.
    (folder / "empty.jpg").write_bytes(good[0].read_bytes())
    (folder / "notes.jpg").unlink()
    CliRunner().invoke(main, ["index", str(folder), "--index", str(index_dir), "-q"])
    status = json.loads(
        CliRunner().invoke(main, ["info", "--index", str(index_dir), "--json"]).stdout
    )
    assert status["images"] == len(good) + 1
    assert status["skipped"] == len(expected) - 2


def one_error_line(result) -> str:
    assert "Traceback" not in result.output + (result.stderr or "")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, data_root: Path) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("few")
    for path in sorted((data_root / "photos" / "images").iterdir())[:3]:
        shutil.copy2(path, folder / path.name)
    index_dir = tmp_path_factory.mktemp("few-index")
    result = CliRunner().invoke(main, ["index", str(folder), "--index", str(index_dir), "-q"])
    assert result.exit_code == 0, result.output
    return folder, index_dir


def test_query_naming_a_missing_image(indexed):
    _, index_dir = indexed
    result = CliRunner().invoke(
        main, ["search", "--image", "no/such/photo.jpg", "--index", str(index_dir)]
    )
    assert result.exit_code == 2
    assert "image not found: no/such/photo.jpg" in one_error_line(result)


def test_query_image_that_is_not_an_image(indexed, tmp_path: Path):
    _, index_dir = indexed
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a photo")
    result = CliRunner().invoke(main, ["search", "--image", str(fake), "--index", str(index_dir)])
    assert result.exit_code == 2
    assert "not an image" in one_error_line(result)


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "empty query"),
        (["--region", "0,0,2,1", "--image", "x.jpg"], "inside the image"),
        (["a cat", "--region", "0,0,0.5,0.5"], "needs a query image"),
        (["--not", "dogs"], "positive weight"),
        (["a cat", "--method", "nonsense"], "unknown method"),
    ],
)
def test_malformed_queries(indexed, args, fragment):
    _, index_dir = indexed
    result = CliRunner().invoke(main, ["search", *args, "--index", str(index_dir)])
    assert result.exit_code == 2
    assert fragment in one_error_line(result)


def test_missing_index(tmp_path: Path):
    result = CliRunner().invoke(main, ["search", "a cat", "--index", str(tmp_path / "nothing")])
    assert result.exit_code == 3
    assert "no index at" in one_error_line(result)


def test_empty_index(tmp_path: Path):
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    index_dir = tmp_path / "index"
    assert (
        CliRunner().invoke(main, ["index", str(empty), "--index", str(index_dir), "-q"]).exit_code
        == 0
    )
    result = CliRunner().invoke(main, ["search", "a cat", "--index", str(index_dir)])
    assert result.exit_code == 3
    assert "has no images yet" in one_error_line(result)


def test_index_made_by_another_encoder(tmp_path: Path, indexed):
    folder, _ = indexed
    index_dir = tmp_path / "other-index"
    other = EncoderInfo(
        name="other-model", version="7", spaces={"joint": 512}, spec={"kind": "conse"}
    )
    Index.open_for_writing(index_dir, other).close()
    for args in (
        ["search", "a cat", "--index", str(index_dir), "--model", "bundled"],
        ["index", str(folder), "--index", str(index_dir), "--model", "bundled", "-q"],
        ["index", str(folder), "--index", str(index_dir), "-q"],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 3, result.output
        assert "was built with model 'other-model'" in one_error_line(result)


def test_unknown_model_name(tmp_path: Path, indexed):
    folder, _ = indexed
    result = CliRunner().invoke(
        main, ["index", str(folder), "--index", str(tmp_path / "i"), "--model", "nope"]
    )
    assert result.exit_code == 4
    assert "no model named 'nope'" in one_error_line(result)
