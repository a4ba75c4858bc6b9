"""Ingest, stage 2: bytes -> the encoder's input array, in worker threads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spyglass.encoders.base import Encoder
from spyglass.images import decode_image
from spyglass.ingest.reader import ReadFile
from spyglass.settings import IngestSettings


@dataclass(frozen=True)
class DecodedFile:
    """A file ready for the encoder: ``pixels`` is ``encoder.preprocess``'s output."""

    read: ReadFile
    pixels: np.ndarray
    width: int
    height: int
    format: str


def decode_for(encoder: Encoder, read: ReadFile, settings: IngestSettings) -> DecodedFile:
    """Decode and preprocess one file. Raises ``ImageRejected``; thread-safe."""
    decoded = decode_image(read.data, max_pixels=settings.max_pixels)
    pixels = encoder.preprocess(decoded.image)
    return DecodedFile(read, pixels, decoded.width, decoded.height, decoded.format)
