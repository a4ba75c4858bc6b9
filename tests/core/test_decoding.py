"""Decoding: orientation, colour modes, size limits, fast large-JPEG decoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spyglass.errors import ImageRejected
from spyglass.images import crop_region, decode_image, open_image_file, read_image_file

LIMIT = 50_000_000


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_exif_orientation_is_applied_and_reported_size_is_upright():
    # A 40x20 image: left half red, right half blue, stored with "rotate 90 CW" (6).
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(data, max_pixels=LIMIT)
    assert (decoded.width, decoded.height) == (20, 40)
    assert decoded.image.size == (20, 40)
    top, bottom = np.asarray(decoded.image)[2, 10], np.asarray(decoded.image)[-3, 10]
    assert top[0] > 200 and top[2] < 60  # red went to the top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize(
    "image, fmt",
    [
        (Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG"),
        (Image.new("LA", (8, 8), (0, 0)), "PNG"),
        (Image.new("L", (8, 8), 255), "PNG"),
        (Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"),
        (Image.new("RGB", (8, 8), "white").convert("P"), "GIF"),
        (Image.new("1", (8, 8), 1), "PNG"),
    ],
)
def test_colour_modes_become_rgb_with_transparency_on_white(image, fmt):
    decoded = decode_image(encode(image, fmt), max_pixels=LIMIT)
    assert decoded.image.mode == "RGB"
    assert np.asarray(decoded.image).min() >= 240  # white, transparent or not


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    values = np.tile(np.linspace(0, 4000, 16, dtype=np.uint16), (16, 1))
    decoded = decode_image(encode(Image.fromarray(values), "PNG"), max_pixels=LIMIT)
    row = np.asarray(decoded.image)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and 100 < row[8] < 160


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue(), max_pixels=LIMIT)
    assert tuple(np.asarray(decoded.image)[5, 5]) == (255, 0, 0)


def test_large_jpegs_are_decoded_at_reduced_scale_but_report_full_size():
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 3000, 3), np.uint8))
    decoded = decode_image(encode(big, "JPEG"), max_pixels=LIMIT, min_side=448)
    assert (decoded.width, decoded.height) == (3000, 2000)
    assert 448 <= min(decoded.image.size) < 1000


def test_pixel_limit_is_checked_from_the_header():
    data = encode(Image.new("RGB", (300, 200)), "PNG")
    assert decode_image(data, max_pixels=60_000).width == 300
    with pytest.raises(ImageRejected) as error:
        decode_image(data, max_pixels=59_999)
    assert error.value.reason == "decompression-bomb"


def test_file_size_limit_and_missing_files(tmp_path: Path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(Image.new("RGB", (4, 4)), "PNG"))
    assert open_image_file(path, max_pixels=LIMIT, max_bytes=10_000).width == 4
    with pytest.raises(ImageRejected) as error:
        read_image_file(path, max_bytes=10)
    assert error.value.reason == "file-too-large"
    with pytest.raises(ImageRejected) as error:
        read_image_file(tmp_path / "nothing.png", max_bytes=10_000)
    assert error.value.reason == "missing"


def test_formats_outside_the_list_are_refused_even_if_pillow_reads_them():
    data = encode(Image.new("RGB", (4, 4)), "PCX")
    with pytest.raises(ImageRejected) as error:
        decode_image(data, max_pixels=LIMIT)
    assert error.value.reason == "not-an-image"


def test_crop_region_uses_fractions_and_never_collapses():
    image = Image.new("RGB", (200, 100))
    assert crop_region(image, (0.5, 0.0, 1.0, 0.5)).size == (100, 50)
    assert crop_region(image, (0.5, 0.5, 0.5001, 0.5001)).size == (1, 1)
