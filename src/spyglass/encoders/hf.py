"""Hugging Face CLIP and SigLIP checkpoints, run by PyTorch through transformers.

The checkpoint's own ``preprocessor_config.json`` sets the image preprocessing (done here
in PIL + numpy, see :mod:`spyglass.encoders.pixels`) and its own tokenizer tokenizes. Texts
are padded to the full context length, as SigLIP was trained (see
:mod:`spyglass.encoders.tokenize`). Loading never reaches the network: a checkpoint is a
local directory or a hub id already in the local cache (:mod:`spyglass.encoders.checkpoint`).

Needs the ``hf`` extra (transformers); PyTorch is a core dependency.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spyglass.encoders.base import JOINT_SPACE, EncoderInfo, normalize_rows
from spyglass.encoders.checkpoint import (
    HF_LAYOUT,
    Checkpoint,
    fingerprint,
    first_line,
    hf_weight_files,
    locate_spec,
    read_json,
)
from spyglass.encoders.pixels import PixelRecipe
from spyglass.errors import MissingDependency, ModelError
from spyglass.settings import RuntimeSettings

KIND = "hf"
#: Bump when a code change here would change the vectors of an unchanged checkpoint.
CODE_VERSION = 1
#: Texts per forward pass.
TEXT_BATCH = 256
#: Tokenizer files whose content decides the token ids (all that exist are fingerprinted).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
)


def require_transformers() -> tuple[Any, Any]:
    """(torch, transformers), or :class:`MissingDependency` naming the extra."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependency(
            "Hugging Face CLIP/SigLIP checkpoints need transformers: pip install 'spyglass[hf]'"
        ) from exc
    from transformers.utils import logging as hf_logging

    # The engine never prints: no load progress bars, no advice on stderr.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return torch, transformers


def load_model(folder: Path) -> tuple[Any, Any]:
    """(model in eval mode on the CPU, its config) from a local transformers checkpoint."""
    _, transformers = require_transformers()
    config = read_json(folder / "config.json")
    classes = {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel}
    model_class = classes.get(config.get("model_type", ""))
    if model_class is None:
        raise ModelError(f"{folder}: model type {config.get('model_type')!r} is not CLIP or SigLIP")
    try:
        model = model_class.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"could not load the checkpoint in {folder}: {first_line(exc)}") from exc
    return model.float().eval(), model.config


def load_tokenizer(folder: Path) -> Any:
    """The checkpoint's own tokenizer (transformers' AutoTokenizer, local files only)."""
    _, transformers = require_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except ImportError as exc:
        raise MissingDependency(
            f"the tokenizer of {folder} needs a package that is not installed "
            f"({first_line(exc)}); "
            "SigLIP's sentencepiece tokenizer needs: pip install sentencepiece protobuf"
        ) from exc
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        # sentencepiece reports a broken model file as a RuntimeError.
        raise ModelError(f"could not load the tokenizer in {folder}: {first_line(exc)}") from exc


def pixel_recipe(folder: Path) -> PixelRecipe:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        raise ModelError(f"{folder} has no preprocessor_config.json (the image preprocessing)")
    return PixelRecipe.from_transformers(read_json(path))


def context_length(model_config: Any, tokenizer: Any) -> int:
    """Tokens per text: the model's position count, or the tokenizer's limit if smaller."""
    length = int(model_config.text_config.max_position_embeddings)
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < length:
        length = limit
    return length


def pooled(output: Any) -> Any:
    """transformers 4 returns the features; transformers 5 an output whose pooler_output
    holds them."""
    return output if hasattr(output, "shape") else output.pooler_output


def joint_dims(model: Any) -> int:
    """Width of the joint space: CLIP's projections, or SigLIP's text head (its image
    tower's pooled width matches it)."""
    layer = getattr(model, "text_projection", None) or model.text_model.head
    return int(layer.out_features)


def torch_device(torch: Any, settings: RuntimeSettings) -> str:
    if settings.device in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda"
    if settings.device == "cuda":
        raise ModelError(
            "--device cuda was asked for, but PyTorch sees no CUDA GPU here "
            "(install a CUDA build of torch, or use --device cpu)"
        )
    return "cpu"


class HFClipEncoder:
    """A CLIP or SigLIP checkpoint: one joint space shared by images and texts."""

    def __init__(
        self, checkpoint: Checkpoint, settings: RuntimeSettings, spec: Mapping[str, Any]
    ) -> None:
        torch, _ = require_transformers()
        folder = checkpoint.folder
        self._torch = torch
        self.pixels = pixel_recipe(folder)
        model, config = load_model(folder)
        image_size = int(config.vision_config.image_size)
        if self.pixels.output_size != (image_size, image_size):
            raise ModelError(
                f"{folder}: preprocessing makes {self.pixels.output_size} images but the "
                f"model takes {image_size}x{image_size}"
            )
        self.device = torch_device(torch, settings)
        self._model = model.to(self.device)
        self._tokenizer = load_tokenizer(folder)
        # transformers' tokenizers change their padding state on every call: one at a time.
        self._tokenizer_lock = threading.Lock()
        self.context_length = context_length(config, self._tokenizer)
        self.max_text_tokens = self.context_length
        dims = joint_dims(model)
        files = [folder / "config.json", folder / "preprocessor_config.json"]
        files += [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
        files += hf_weight_files(folder)
        version = fingerprint(
            {
                "code": CODE_VERSION,
                "layout": HF_LAYOUT,
                "pixels": self.pixels.describe(),
                "context_length": self.context_length,
            },
            files,
            settings.cache_dir / "digests",
        )
        self.info = EncoderInfo(
            name=checkpoint.name,
            version=f"hf{CODE_VERSION}-{version}",
            spaces={JOINT_SPACE: dims},
            text_space=JOINT_SPACE,
            image_space=JOINT_SPACE,
            spec={**spec, **checkpoint.source, "kind": KIND},
        )

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> (3, H, W) float32, as the checkpoint's image processor does it."""
        return self.pixels(image)

    def embed_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """(n, 3, H, W) float32 -> {"joint": (n, dims) float32 unit rows}."""
        torch = self._torch
        if len(pixels) == 0:
            return {JOINT_SPACE: np.zeros((0, self.info.spaces[JOINT_SPACE]), np.float32)}
        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            features = pooled(self._model.get_image_features(pixel_values=batch))
        return {JOINT_SPACE: normalize_rows(features.float().cpu().numpy())}

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """n texts -> (n, dims) float32 unit rows."""
        rows = [
            self._embed_text_batch(texts[i : i + TEXT_BATCH])
            for i in range(0, len(texts), TEXT_BATCH)
        ]
        if not rows:
            return np.zeros((0, self.info.spaces[JOINT_SPACE]), np.float32)
        return np.concatenate(rows)

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` before the cut at ``max_text_tokens`` (start and end tokens
        included), by the checkpoint's own tokenizer."""
        with self._tokenizer_lock:
            encoded = self._tokenizer([text], truncation=False, padding=False)
        return len(encoded["input_ids"][0])

    def token_ids(self, texts: Sequence[str]) -> np.ndarray:
        """n texts -> (n, context_length) int64 ids, padded to full length."""
        with self._tokenizer_lock:
            encoded = self._tokenizer(
                list(texts),
                padding="max_length",
                max_length=self.context_length,
                truncation=True,
                return_tensors="np",
            )
        return np.asarray(encoded["input_ids"], dtype=np.int64)

    def _embed_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        # Token ids only, no attention mask: SigLIP was trained attending to its padding,
        # and CLIP's causal attention never lets the end token see the padding after it.
        ids = torch.from_numpy(self.token_ids(texts)).to(self.device)
        with torch.inference_mode():
            features = pooled(self._model.get_text_features(input_ids=ids))
        return normalize_rows(features.float().cpu().numpy())


def load(spec: Mapping[str, Any], settings: RuntimeSettings) -> HFClipEncoder:
    """The encoder a model spec names (``{"kind": "hf", "path" | "hub_id": ...}``)."""
    checkpoint = locate_spec(spec)
    # A folder may hold both; the ONNX export is preferred only when the kind is not named.
    if checkpoint.layout != HF_LAYOUT and not hf_weight_files(checkpoint.folder):
        raise ModelError(
            f"{checkpoint.folder} holds a {checkpoint.layout} ONNX export, not a transformers "
            "checkpoint; pass it as --model and Spyglass runs it in onnxruntime"
        )
    return HFClipEncoder(checkpoint, settings, spec)
