"""ONNX exports in Xenova's and immich's layouts, made by `export_onnx` from the random-
weight checkpoints and run in onnxruntime, against the same checkpoints in PyTorch."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from spyglass.encoders import JOINT_SPACE, Encoder, load_encoder, resolve_spec
from spyglass.encoders.onnx_export import export_onnx
from spyglass.encoders.tokenize import TextTokenizer
from spyglass.errors import ModelError
from spyglass.settings import RuntimeSettings

from .test_clip_hf import TEXTS, assert_unit_rows, photo_images

TOLERANCE = 1e-4


def graph_io(path: Path) -> tuple[list[str], list[str]]:
    session = ort.InferenceSession(str(path))
    return [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]


def compare_with_torch(onnx: Encoder, torch: Encoder, images: list[Image.Image]) -> None:
    """Same pixels and texts through both; unit vectors agree within TOLERANCE."""
    pixels = np.stack([torch.preprocess(image) for image in images])
    from_onnx = onnx.embed_pixels(pixels)[JOINT_SPACE]
    assert_unit_rows(from_onnx, len(images), torch.info.spaces[JOINT_SPACE])
    np.testing.assert_allclose(from_onnx, torch.embed_pixels(pixels)[JOINT_SPACE], atol=TOLERANCE)
    texts = onnx.embed_texts(TEXTS)
    assert_unit_rows(texts, len(TEXTS), torch.info.spaces[JOINT_SPACE])
    np.testing.assert_allclose(texts, torch.embed_texts(TEXTS), atol=TOLERANCE)


def test_full_size_vit_b32_xenova_export_matches_torch(
    clip_b32_dir: Path,
    clip_files: Path,
    export_of: Callable[..., Path],
    encoder_for: Callable[[Path], Encoder],
    photos: Any,
) -> None:
    export = export_of(clip_b32_dir, "xenova")
    for name in (
        "onnx/vision_model.onnx",
        "onnx/text_model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "config.json",
    ):
        assert (export / name).is_file(), name
    # As transformers.js exports CLIP: a mask input, hidden states beside the embeddings.
    assert graph_io(export / "onnx" / "text_model.onnx") == (
        ["input_ids", "attention_mask"],
        ["text_embeds", "last_hidden_state"],
    )
    assert graph_io(export / "onnx" / "vision_model.onnx") == (
        ["pixel_values"],
        ["image_embeds", "last_hidden_state"],
    )
    assert resolve_spec(str(export)) == {"kind": "onnx-clip", "path": str(export)}
    onnx = encoder_for(export)
    assert onnx.info.version.startswith("onnx1-")
    assert dict(onnx.info.spaces) == {JOINT_SPACE: 512}
    torch = encoder_for(clip_b32_dir)
    images = photo_images(photos, 4)
    for image in images:
        np.testing.assert_array_equal(onnx.preprocess(image), torch.preprocess(image))
    compare_with_torch(onnx, torch, images)
    # The exported tokenizer.json tokenizes as the original file does.
    original = TextTokenizer(clip_files / "tokenizer.json", 77, "<|endoftext|>")
    exported = TextTokenizer(export / "tokenizer.json", 77, "<|endoftext|>")
    np.testing.assert_array_equal(original(TEXTS)[0], exported(TEXTS)[0])


def test_immich_export_with_a_batch_of_one(
    tiny_clip_dir: Path,
    export_of: Callable[..., Path],
    encoder_for: Callable[[Path], Encoder],
    photos: Any,
) -> None:
    """immich's own exports take one image and one text per call, int32 token ids."""
    export = export_of(tiny_clip_dir, "immich", 1)
    for name in (
        "visual/model.onnx",
        "visual/preprocess_cfg.json",
        "textual/model.onnx",
        "textual/tokenizer.json",
        "textual/tokenizer_config.json",
        "config.json",
    ):
        assert (export / name).is_file(), name
    textual = ort.InferenceSession(str(export / "textual" / "model.onnx"))
    (text_input,) = textual.get_inputs()
    assert (text_input.name, text_input.type, text_input.shape) == (
        "text",
        "tensor(int32)",
        [1, 77],
    )
    assert json.loads((export / "config.json").read_text())["text_cfg"]["context_length"] == 77
    compare_with_torch(encoder_for(export), encoder_for(tiny_clip_dir), photo_images(photos, 5))


@pytest.mark.parametrize("layout", ["xenova", "immich"])
def test_siglip_exports_match_torch(
    layout: str,
    tiny_siglip_dir: Path,
    export_of: Callable[..., Path],
    encoder_for: Callable[[Path], Encoder],
    photos: Any,
) -> None:
    export = export_of(tiny_siglip_dir, layout)
    if layout == "xenova":  # SigLIP's text tower takes no attention mask
        assert graph_io(export / "onnx" / "text_model.onnx")[0] == ["input_ids"]
    onnx = encoder_for(export)
    torch = encoder_for(tiny_siglip_dir)
    images = photo_images(photos, 3)
    for image in images:  # SigLIP squashes: both dialects agree to the last bit
        np.testing.assert_allclose(onnx.preprocess(image), torch.preprocess(image), atol=1e-6)
    compare_with_torch(onnx, torch, images)


def test_version_follows_the_files(
    tiny_clip_dir: Path,
    export_of: Callable[..., Path],
    cpu_runtime: RuntimeSettings,
    tmp_path: Path,
) -> None:
    export = export_of(tiny_clip_dir, "immich", 1)
    original = load_encoder(resolve_spec(str(export)), cpu_runtime).info
    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    copied = load_encoder(resolve_spec(str(copy)), cpu_runtime).info
    assert copied.version == original.version and copied.name == "copy"
    config_path = copy / "visual" / "preprocess_cfg.json"
    config = json.loads(config_path.read_text())
    config["mean"] = [0.5, 0.5, 0.5]
    config_path.write_text(json.dumps(config))
    assert load_encoder(resolve_spec(str(copy)), cpu_runtime).info.version != original.version


def test_preprocessing_that_does_not_fit_the_graph_is_refused(
    tiny_clip_dir: Path,
    export_of: Callable[..., Path],
    cpu_runtime: RuntimeSettings,
    tmp_path: Path,
) -> None:
    copy = tmp_path / "wrong-size"
    shutil.copytree(export_of(tiny_clip_dir, "immich", 1), copy)
    config_path = copy / "visual" / "preprocess_cfg.json"
    config = json.loads(config_path.read_text())
    config["size"] = [256, 256]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="256"):
        load_encoder(resolve_spec(str(copy)), cpu_runtime)


def test_export_refuses_an_existing_target_and_a_non_checkpoint(
    tiny_clip_dir: Path, export_of: Callable[..., Path], tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="already exists"):
        export_onnx(tiny_clip_dir, tmp_path)
    with pytest.raises(ModelError, match="not a transformers checkpoint"):
        export_onnx(export_of(tiny_clip_dir, "immich", 1), tmp_path / "new")
