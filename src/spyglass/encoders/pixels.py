"""Image preprocessing read from a checkpoint's own configuration, as plain PIL + numpy.

Two dialects describe the same few steps (resize, centre crop, scale to 0..1, normalise):

* transformers' ``preprocessor_config.json`` (CLIPImageProcessor, SiglipImageProcessor),
  reproduced as their PIL backend does it (a crop offset rounds down);
* open_clip's ``preprocess_cfg.json`` (immich exports), as torchvision does it on PIL
  images (a crop offset rounds to nearest).

A :class:`PixelRecipe` is immutable and its ``__call__`` touches no shared state, so
decode workers may call it from many threads at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from spyglass.errors import ModelError

#: open_clip's interpolation names -> PIL resampling filters.
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class PixelRecipe:
    """How one RGB image becomes a (3, crop_height, crop_width) float32 model input."""

    #: ``shortest``: shorter side to ``size[0]`` keeping the aspect ratio (the longer
    #: side is truncated to an int, as torchvision and transformers do); ``squash``:
    #: straight to ``size`` = (height, width).
    resize: Literal["shortest", "squash", "none"]
    size: tuple[int, int]
    #: (height, width) of the centre crop, or ``None`` for no crop.
    crop: tuple[int, int] | None
    resample: int
    #: ``floor`` (transformers) or ``round`` (torchvision) for the crop's top-left corner.
    crop_rounding: Literal["floor", "round"]
    #: Multiplies the 0..255 pixels (1/255 usually; 1.0 means no rescale).
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of what ``__call__`` returns."""
        if self.crop is not None:
            return self.crop
        if self.resize == "squash":
            return self.size
        raise ModelError("a preprocessing without crop or fixed size has no fixed output shape")

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB image -> (3, H, W) float32 (H, W = ``output_size``)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.resize == "shortest":
            image = image.resize(_shortest_side_size(image.size, self.size[0]), self.resample)
        elif self.resize == "squash":
            image = image.resize((self.size[1], self.size[0]), self.resample)
        pixels = np.asarray(image)
        if self.crop is not None:
            pixels = _centre_crop(pixels, self.crop, self.crop_rounding)
        # float64 then float32, in this order, to match transformers to the last bit.
        scaled = (pixels.astype(np.float64) * self.scale).astype(np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))

    def describe(self) -> dict[str, Any]:
        """JSON-able form, part of the encoder's fingerprint."""
        return asdict(self)

    # -- reading the two dialects ------------------------------------------------------

    @classmethod
    def from_transformers(cls, config: Mapping[str, Any]) -> PixelRecipe:
        """From a ``preprocessor_config.json`` (CLIPImageProcessor / SiglipImageProcessor)."""
        unsupported = [k for k in ("do_pad", "do_image_splitting") if config.get(k)]
        if unsupported:
            raise ModelError(f"image preprocessing option(s) {unsupported} are not supported")
        size = config.get("size", {"shortest_edge": 224})
        resize: Literal["shortest", "squash", "none"]
        if not config.get("do_resize", True):
            resize, target = "none", (0, 0)
        elif isinstance(size, int):
            resize, target = "squash", (size, size)
        elif "shortest_edge" in size and "longest_edge" not in size:
            edge = int(size["shortest_edge"])
            resize, target = "shortest", (edge, edge)
        elif "height" in size and "width" in size:
            resize, target = "squash", (int(size["height"]), int(size["width"]))
        else:
            raise ModelError(f"image size {size} in preprocessor_config.json is not supported")
        crop = None
        if config.get("do_center_crop", False):
            crop_size = config.get("crop_size", {"height": 224, "width": 224})
            if isinstance(crop_size, int):
                crop = (crop_size, crop_size)
            else:
                crop = (int(crop_size["height"]), int(crop_size["width"]))
        normalize = config.get("do_normalize", True)
        return cls(
            resize=resize,
            size=target,
            crop=crop,
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
            crop_rounding="floor",
            scale=float(config.get("rescale_factor", 1 / 255))
            if config.get("do_rescale", True)
            else 1.0,
            mean=_triple(config.get("image_mean", 0.0) if normalize else 0.0),
            std=_triple(config.get("image_std", 1.0) if normalize else 1.0),
        )

    @classmethod
    def from_open_clip(cls, config: Mapping[str, Any]) -> PixelRecipe:
        """From open_clip's ``preprocess_cfg.json`` (as immich ships it)."""
        raw_size = config.get("size", 224)
        side = int(raw_size[0] if isinstance(raw_size, list | tuple) else raw_size)
        interpolation = str(config.get("interpolation", "bicubic"))
        if interpolation not in RESAMPLING:
            raise ModelError(f"interpolation '{interpolation}' in preprocess_cfg.json is unknown")
        mode = str(config.get("resize_mode", "shortest"))
        if mode not in ("shortest", "squash"):
            raise ModelError(f"resize_mode '{mode}' in preprocess_cfg.json is not supported")
        return cls(
            resize="shortest" if mode == "shortest" else "squash",
            size=(side, side),
            crop=(side, side) if mode == "shortest" else None,
            resample=int(RESAMPLING[interpolation]),
            crop_rounding="round",
            scale=1 / 255,
            mean=_triple(config.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=_triple(config.get("std", (0.26862954, 0.26130258, 0.27577711))),
        )

    def to_open_clip(self) -> dict[str, Any]:
        """This recipe as open_clip's ``preprocess_cfg.json``, where it can say it."""
        interpolation = {int(v): k for k, v in RESAMPLING.items()}.get(self.resample)
        side = self.size[0]
        shortest = self.resize == "shortest" and self.crop == (side, side)
        squash = (
            self.resize == "squash" and self.size == (side, side) and self.crop in (None, self.size)
        )
        if interpolation is None or not (shortest or squash) or abs(self.scale - 1 / 255) > 1e-12:
            raise ModelError(
                "this checkpoint's image preprocessing cannot be written as an open_clip "
                "preprocess_cfg.json; export the xenova layout instead"
            )
        return {
            "size": [side, side],
            "mode": "RGB",
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": interpolation,
            "resize_mode": "shortest" if shortest else "squash",
            "fill_color": 0,
        }


def _shortest_side_size(size: tuple[int, int], shortest: int) -> tuple[int, int]:
    """(width, height) -> (width, height) with the shorter side = ``shortest``."""
    width, height = size
    if width <= height:
        return shortest, int(shortest * height / width)
    return int(shortest * width / height), shortest


def _centre_crop(
    pixels: np.ndarray, crop: tuple[int, int], rounding: Literal["floor", "round"]
) -> np.ndarray:
    """(H, W, 3) -> (crop_h, crop_w, 3); an image smaller than the crop is zero-padded
    around its centre first, as both libraries do."""
    height, width = pixels.shape[:2]
    crop_h, crop_w = crop
    if height < crop_h or width < crop_w:
        padded = np.zeros((max(height, crop_h), max(width, crop_w), 3), dtype=pixels.dtype)
        top, left = -(-(padded.shape[0] - height) // 2), -(-(padded.shape[1] - width) // 2)
        padded[top : top + height, left : left + width] = pixels
        pixels, (height, width) = padded, padded.shape[:2]
    if rounding == "floor":
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    else:
        top, left = round((height - crop_h) / 2), round((width - crop_w) / 2)
    return pixels[top : top + crop_h, left : left + crop_w]


def _triple(value: Any) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        return (float(value),) * 3
    items = [float(v) for v in value]
    if len(items) != 3:
        raise ModelError(f"expected 3 channel values, got {items}")
    return items[0], items[1], items[2]
