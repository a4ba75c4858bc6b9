"""Heatmaps drawn over their image, as PNG, with a small colormap of our own (no
plotting library): cold regions are dimmed and keep their colours, hot regions turn
yellow-white through red, so the eye goes to what drove the score."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from spyglass.casework.explain import Heatmap

#: Heat 0 -> 1 anchors of the colormap (an "inferno"-like ramp: dark purple, red,
#: orange, pale yellow), linearly interpolated between.
RAMP = np.array(
    [[20, 11, 52], [120, 28, 109], [214, 66, 57], [250, 155, 30], [252, 245, 170]],
    np.float32,
)
#: How much colour the hottest region takes, and how dark the coldest turns.
MAX_TINT = 0.7
COLD_BRIGHTNESS = 0.55


def colormap(heat: np.ndarray) -> np.ndarray:
    """(h, w) float in [0, 1] -> (h, w, 3) float32 RGB in 0..255 along :data:`RAMP`."""
    position = np.clip(heat, 0.0, 1.0) * (len(RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(RAMP) - 2)
    fraction = (position - low)[..., None]
    return (RAMP[low] * (1.0 - fraction) + RAMP[low + 1] * fraction).astype(np.float32)


def render_overlay(
    image: Image.Image, heatmap: Heatmap, max_side: int | None = None
) -> Image.Image:
    """``image`` (RGB, any size) with ``heatmap`` blended over it, at the image's size
    or reduced so that its longer side is at most ``max_side``."""
    image = image.convert("RGB")
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    heat = heatmap.pixels(image.width, image.height)[..., None]
    pixels = np.asarray(image, np.float32)
    dimmed = pixels * (COLD_BRIGHTNESS + (1.0 - COLD_BRIGHTNESS) * heat)
    tint = MAX_TINT * heat
    blended = dimmed * (1.0 - tint) + colormap(heat[..., 0]) * tint
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8), mode="RGB")


def png_bytes(image: Image.Image) -> bytes:
    """The image as PNG file bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
