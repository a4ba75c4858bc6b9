"""Ingest, stage 2: bytes -> the encoder's input array, in worker threads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spyglass.encoders.base import Encoder
from spyglass.images import Region, crop_region, decode_image
from spyglass.ingest.reader import ReadFile
from spyglass.settings import IngestSettings


@dataclass(frozen=True)
class DecodedFile:
    """A file ready for the encoder: ``pixels`` is ``encoder.preprocess``'s output for
    the whole image, ``crops`` the same for each crop window (maybe none)."""

    read: ReadFile
    pixels: np.ndarray
    crops: list[np.ndarray]
    width: int
    height: int
    format: str


def crop_windows(grid: int) -> list[Region]:
    """``grid`` x ``grid`` windows, each 2/(grid+1) of the width and height, half
    overlapping their neighbours, as (left, top, right, bottom) fractions."""
    if grid <= 0:
        return []
    size, step = 2.0 / (grid + 1), 1.0 / (grid + 1)
    return [
        (col * step, row * step, col * step + size, row * step + size)
        for row in range(grid)
        for col in range(grid)
    ]


def decode_for(
    encoder: Encoder, read: ReadFile, settings: IngestSettings, windows: list[Region]
) -> DecodedFile:
    """Decode and preprocess one file (and its crops). Raises ``ImageRejected``;
    thread-safe."""
    decoded = decode_image(read.data, max_pixels=settings.max_pixels)
    pixels = encoder.preprocess(decoded.image)
    crops = [encoder.preprocess(crop_region(decoded.image, window)) for window in windows]
    return DecodedFile(read, pixels, crops, decoded.width, decoded.height, decoded.format)
