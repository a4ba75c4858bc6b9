"""Indexing a folder of damaged files (bytes flipped at random in JPEG, TIFF, PNG, WebP
and GIF files): every file is indexed or skipped with a reason, and stderr holds no
library warnings, only the summary."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

from PIL import Image

FORMATS = (("JPEG", "jpg"), ("TIFF", "tif"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"))


def damaged_files(sample_photos: Path, folder: Path, per_format: int) -> int:
    rng = random.Random(0)
    folder.mkdir()
    with Image.open(sample_photos / "chelsea-the-cat.png") as image:
        source = image.convert("RGB").resize((128, 96))
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 3, "Camera"
    for fmt, ext in FORMATS:
        buffer = io.BytesIO()
        source.save(buffer, fmt, **({} if fmt == "GIF" else {"exif": exif}))
        data = buffer.getvalue()
        for n in range(per_format):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            (folder / f"{fmt}-{n:03d}.{ext}").write_bytes(bytes(damaged))
    return per_format * len(FORMATS)


def test_damaged_files_are_indexed_or_skipped_quietly(sample_photos: Path, tmp_path: Path) -> None:
    count = damaged_files(sample_photos, tmp_path / "damaged", 60)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "spyglass", "index", str(tmp_path / "damaged")),
            *("--index", str(tmp_path / "index"), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # before: Pillow's warnings, a line each
    report = json.loads(done.stdout)
    assert report["added"] + report["skipped"] == count
    assert report["skipped"] > 0 and report["added"] > 0
