"""A small PNG that declares a huge canvas costs one 8-bit plane, not several RGB copies,
when it is a query image; and reduced query images still come out upright."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from PIL import Image

from spyglass.images import decode_image
from spyglass.search import QUERY_MAX_SIDE

# VmHWM, not ru_maxrss: the latter survives exec, so a child of a big pytest process
# would start at its parent's peak.
PEAK = """
import sys
from spyglass.images import decode_image


def high_water_mark_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


data = open(sys.argv[1], "rb").read()
before = high_water_mark_kb()
options = {"max_side": int(sys.argv[2])} if sys.argv[2] != "none" else {}
decoded = decode_image(data, max_pixels=64_000_000, min_side=32, **options)
after = high_water_mark_kb()
print((after - before) // 1024, decoded.width, decoded.height, decoded.image.size[0])
"""


def peak_megabytes(path: Path, max_side: str) -> tuple[int, int, int, int]:
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(path), max_side],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    peak, width, height, decoded_width = (int(v) for v in done.stdout.split())
    return peak, width, height, decoded_width


def test_a_huge_flat_png_costs_a_fraction_of_its_full_decode(tmp_path: Path) -> None:
    bomb = tmp_path / "flat.png"
    Image.new("L", (7999, 7999), 128).save(bomb, optimize=True)
    assert bomb.stat().st_size < 200_000
    full, *_ = peak_megabytes(bomb, "none")
    reduced, width, height, decoded_width = peak_megabytes(bomb, str(QUERY_MAX_SIDE))
    assert (width, height) == (7999, 7999), "the record keeps the original size"
    assert QUERY_MAX_SIDE <= decoded_width < 2 * QUERY_MAX_SIDE
    assert full > 150 and reduced < full / 2, (full, reduced)


def test_a_reduced_image_is_turned_upright_from_its_exif() -> None:
    sideways = Image.new("RGB", (6000, 3000), (200, 30, 30))
    sideways.paste((20, 20, 220), (0, 0, 600, 3000))  # a blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # display: turn 90 degrees clockwise
    buffer = io.BytesIO()
    sideways.save(buffer, "PNG", exif=exif)
    decoded = decode_image(buffer.getvalue(), max_pixels=64_000_000, max_side=1000)
    assert (decoded.width, decoded.height) == (3000, 6000)
    width, height = decoded.image.size
    assert height > width and width < 3000  # reduced, and portrait
    assert decoded.image.getpixel((width // 2, 5))[2] > 200  # the band is now on top
    assert decoded.image.getpixel((width // 2, height - 5))[0] > 150
