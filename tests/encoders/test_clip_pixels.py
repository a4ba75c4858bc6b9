"""Image preprocessing read from checkpoint configs, against transformers' own image
processors on real photos (large, non-square) and awkward shapes made from them."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spyglass.encoders.pixels import PixelRecipe

from .conftest import SIGLIP_PREPROCESSOR


def awkward_images(photos: Any) -> list[Image.Image]:
    """Real photos as they come, plus portrait, odd-sized, tiny and grey versions."""
    images = [Image.open(path).convert("RGB") for path in photos.paths()[::5]]
    first = images[0]
    images += [
        first.transpose(Image.Transpose.ROTATE_90),  # portrait
        first.crop((0, 0, 301, 227)),  # odd margins: the crop offset rounds
        first.crop((13, 7, 240, 231)),  # 227 x 224: one side already at size
        first.resize((97, 61)),  # smaller than the crop: scaled up
        first.convert("L").convert("RGB"),
    ]
    return images


def reference_processor(transformers: Any, name: str, config: dict[str, Any]) -> Any:
    """transformers' PIL image processor (transformers 5 names it ...Pil; in 4 it is the
    plain class)."""
    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    kwargs = {
        k: v for k, v in config.items() if k not in ("image_processor_type", "processor_class")
    }
    return cls(**kwargs)


def test_clip_preprocessing_matches_clip_image_processor(
    clip_files: Path, photos: Any, transformers_quiet: Any
) -> None:
    config = json.loads((clip_files / "preprocessor_config.json").read_text())
    recipe = PixelRecipe.from_transformers(config)
    reference = reference_processor(transformers_quiet[1], "CLIPImageProcessor", config)
    images = awkward_images(photos)
    expected = reference(images=images, return_tensors="np")["pixel_values"]
    ours = np.stack([recipe(image) for image in images])
    assert ours.shape == expected.shape == (len(images), 3, 224, 224)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_siglip_preprocessing_matches_siglip_image_processor(
    photos: Any, transformers_quiet: Any
) -> None:
    recipe = PixelRecipe.from_transformers(SIGLIP_PREPROCESSOR)
    reference = reference_processor(
        transformers_quiet[1], "SiglipImageProcessor", SIGLIP_PREPROCESSOR
    )
    images = awkward_images(photos)
    expected = reference(images=images, return_tensors="np")["pixel_values"]
    ours = np.stack([recipe(image) for image in images])
    assert ours.shape == expected.shape == (len(images), 3, 224, 224)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_open_clip_recipe_resizes_short_side_and_rounds_crop_to_nearest(photos: Any) -> None:
    """open_clip (torchvision) semantics, worked out by hand. A 301 x 227 image: the short
    side goes to 224, the long one to int(224 * 301 / 227) = 297, the crop starts at
    round(36.5) = 36. A 227 x 224 image: the crop starts at round(1.5) = 2, where
    transformers floors to 1."""
    config = {"size": [224, 224], "mean": [0.0] * 3, "std": [1.0] * 3, "interpolation": "bicubic"}
    recipe = PixelRecipe.from_open_clip({**config, "resize_mode": "shortest"})
    image = Image.open(photos.paths()[0]).convert("RGB").crop((0, 0, 301, 227))
    resized = np.asarray(image.resize((297, 224), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    expected = resized[:, 36 : 36 + 224].transpose(2, 0, 1)
    np.testing.assert_allclose(recipe(image), expected, atol=1e-6)

    wide = Image.open(photos.paths()[0]).convert("RGB").crop((0, 0, 227, 224))
    pixels = np.asarray(wide, dtype=np.float32) / 255
    np.testing.assert_allclose(recipe(wide), pixels[:, 2:226].transpose(2, 0, 1), atol=1e-6)
    floor = PixelRecipe.from_transformers(
        {
            "size": {"shortest_edge": 224},
            "do_center_crop": True,
            "crop_size": 224,
            "image_mean": [0.0] * 3,
            "image_std": [1.0] * 3,
        }
    )
    np.testing.assert_allclose(floor(wide), pixels[:, 1:225].transpose(2, 0, 1), atol=1e-6)

    squash = PixelRecipe.from_open_clip({**config, "resize_mode": "squash"})
    assert squash(image).shape == (3, 224, 224)


def test_open_clip_round_trip_of_a_transformers_recipe(clip_files: Path) -> None:
    config = json.loads((clip_files / "preprocessor_config.json").read_text())
    recipe = PixelRecipe.from_transformers(config)
    written = recipe.to_open_clip()
    assert written["resize_mode"] == "shortest" and written["size"] == [224, 224]
    again = PixelRecipe.from_open_clip(written)
    assert (again.resize, again.size, again.crop, again.resample) == (
        recipe.resize,
        recipe.size,
        recipe.crop,
        recipe.resample,
    )
    assert again.mean == recipe.mean and again.std == recipe.std


def test_preprocess_is_thread_safe(clip_files: Path, photos: Any) -> None:
    recipe = PixelRecipe.from_transformers(
        json.loads((clip_files / "preprocessor_config.json").read_text())
    )
    images = awkward_images(photos) * 3
    sequential = [recipe(image) for image in images]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(recipe, images))
    for one, other in zip(sequential, parallel, strict=True):
        np.testing.assert_array_equal(one, other)


@pytest.mark.parametrize(
    "config",
    [
        {"size": {"longest_edge": 224}},
        {"do_pad": True},
    ],
)
def test_unsupported_preprocessing_is_refused(config: dict[str, Any]) -> None:
    from spyglass.errors import ModelError

    with pytest.raises(ModelError):
        PixelRecipe.from_transformers(config)
