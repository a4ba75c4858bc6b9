"""Hugging Face CLIP and SigLIP checkpoints through the Encoder interface, against the
same checkpoints run the usual transformers way (processor + tokenizer + model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spyglass.encoders import JOINT_SPACE, Encoder, embed_images

TEXTS = [
    "a photo of a cat",
    "",
    "Ünïcödé café — 日本語 🐱",
    "word " * 200,
    "two dogs playing in the snow",
]


def photo_images(photos: Any, count: int) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in photos.paths()[:count]]


def assert_unit_rows(vectors: np.ndarray, rows: int, dims: int) -> None:
    assert vectors.shape == (rows, dims)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def unit(x: Any) -> np.ndarray:
    array = x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def features(output: Any) -> Any:
    return output if hasattr(output, "shape") else output.pooler_output


def test_full_size_vit_b32_loads_and_embeds(
    clip_b32_dir: Path, encoder_for: Callable[[Path], Encoder], photos: Any
) -> None:
    encoder = encoder_for(clip_b32_dir)
    info = encoder.info
    assert info.name == "clip-vit-base-patch32"
    assert info.version.startswith("hf1-")
    assert dict(info.spaces) == {JOINT_SPACE: 512}
    assert info.text_space == info.image_space == JOINT_SPACE
    assert dict(info.spec) == {"kind": "hf", "path": str(clip_b32_dir)}
    images = photo_images(photos, 4)
    assert encoder.preprocess(images[0]).shape == (3, 224, 224)
    assert_unit_rows(embed_images(encoder, images)[JOINT_SPACE], 4, 512)
    assert_unit_rows(encoder.embed_texts(TEXTS), len(TEXTS), 512)
    assert encoder.embed_texts([]).shape == (0, 512)


def test_clip_matches_transformers_pipeline(
    tiny_clip_dir: Path,
    encoder_for: Callable[[Path], Encoder],
    transformers_quiet: Any,
    photos: Any,
) -> None:
    """The reference pads to the longest text with an attention mask, as transformers'
    examples do; Spyglass pads to 77 without one. CLIP must not tell the difference."""
    torch, transformers = transformers_quiet
    encoder = encoder_for(tiny_clip_dir)
    model = transformers.CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor_class = getattr(
        transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor
    )
    processor = processor_class.from_pretrained(tiny_clip_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_clip_dir)
    images = photo_images(photos, 5)
    with torch.inference_mode():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        expected_images = unit(features(model.get_image_features(pixel_values=pixels)))
        tokens = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
        expected_texts = unit(features(model.get_text_features(**tokens)))
    np.testing.assert_allclose(
        embed_images(encoder, images)[JOINT_SPACE], expected_images, atol=1e-5
    )
    np.testing.assert_allclose(encoder.embed_texts(TEXTS), expected_texts, atol=1e-5)


def test_siglip_matches_transformers_pipeline(
    tiny_siglip_dir: Path,
    encoder_for: Callable[[Path], Encoder],
    transformers_quiet: Any,
    photos: Any,
) -> None:
    """SigLIP as its model card says to run it: texts padded to max_length (64)."""
    torch, transformers = transformers_quiet
    encoder = encoder_for(tiny_siglip_dir)
    assert dict(encoder.info.spec) == {"kind": "hf", "path": str(tiny_siglip_dir)}
    assert dict(encoder.info.spaces) == {JOINT_SPACE: 32}
    model = transformers.SiglipModel.from_pretrained(tiny_siglip_dir).eval()
    processor_class = getattr(
        transformers, "SiglipImageProcessorPil", transformers.SiglipImageProcessor
    )
    processor = processor_class.from_pretrained(tiny_siglip_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_siglip_dir)
    images = photo_images(photos, 5)
    with torch.inference_mode():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        expected_images = unit(features(model.get_image_features(pixel_values=pixels)))
        ids = tokenizer(
            TEXTS, padding="max_length", max_length=64, truncation=True, return_tensors="pt"
        )
        expected_texts = unit(features(model.get_text_features(input_ids=ids["input_ids"])))
    got_images = embed_images(encoder, images)[JOINT_SPACE]
    assert_unit_rows(got_images, 5, 32)
    np.testing.assert_allclose(got_images, expected_images, atol=1e-5)
    np.testing.assert_allclose(encoder.embed_texts(TEXTS), expected_texts, atol=1e-5)
