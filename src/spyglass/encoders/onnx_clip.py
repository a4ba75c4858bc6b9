"""CLIP-family ONNX exports run in onnxruntime: separate visual and textual graphs, a
``tokenizer.json``, and the preprocessing config, in immich's or Xenova's layout (see
:mod:`spyglass.encoders.checkpoint`). No PyTorch and no transformers are needed.

Both layouts' graphs are accepted as they come: immich's take ``image`` / ``text``
(int32) with a batch of one, Xenova's ``pixel_values`` / ``input_ids`` (int64, maybe an
``attention_mask``) with any batch. Outputs may or may not be normalised already; rows
are normalised here either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spyglass.encoders.base import JOINT_SPACE, EncoderInfo, normalize_rows
from spyglass.encoders.checkpoint import (
    IMMICH_LAYOUT,
    XENOVA_LAYOUT,
    Checkpoint,
    fingerprint,
    first_line,
    locate_spec,
    read_json,
)
from spyglass.encoders.pixels import PixelRecipe
from spyglass.encoders.runtime import onnx_session
from spyglass.encoders.tokenize import TextTokenizer, pad_token_of
from spyglass.errors import ModelError
from spyglass.settings import RuntimeSettings

KIND = "onnx-clip"
#: Bump when a code change here would change the vectors of an unchanged export.
CODE_VERSION = 1
DEFAULT_CONTEXT_LENGTH = 77
TEXT_BATCH = 256
#: Output names that hold the embedding, best first; otherwise the first output.
EMBEDDING_OUTPUTS = ("image_embeds", "text_embeds", "embedding", "embeddings")
ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


@dataclass(frozen=True)
class OnnxFiles:
    """What an export's files say: the graphs, the tokenizer and how to feed them."""

    visual: Path
    textual: Path
    tokenizer: Path
    pixels: PixelRecipe
    context_length: int
    pad_token: str | None
    #: Text cleaning before tokenizing (see :func:`spyglass.encoders.tokenize.canonicalize_text`).
    cleaning: str | None
    #: Configuration files that decide the vectors (fingerprinted with the graphs).
    config_files: tuple[Path, ...]


def read_xenova(folder: Path) -> OnnxFiles:
    """``onnx/{vision,text}_model.onnx`` with transformers-style configs at the top."""
    config = _optional_json(folder / "config.json")
    tokenizer_config = _optional_json(folder / "tokenizer_config.json")
    preprocessor = folder / "preprocessor_config.json"
    if not preprocessor.is_file():
        raise ModelError(f"{folder} has no preprocessor_config.json (the image preprocessing)")
    context = int(
        config.get("text_config", {}).get("max_position_embeddings", DEFAULT_CONTEXT_LENGTH)
    )
    limit = tokenizer_config.get("model_max_length")
    if isinstance(limit, int) and 0 < limit < context:
        context = limit
    siglip = tokenizer_config.get("tokenizer_class") == "SiglipTokenizer"
    names = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
    return OnnxFiles(
        visual=folder / "onnx" / "vision_model.onnx",
        textual=folder / "onnx" / "text_model.onnx",
        tokenizer=folder / "tokenizer.json",
        pixels=PixelRecipe.from_transformers(read_json(preprocessor)),
        context_length=context,
        pad_token=pad_token_of(tokenizer_config) or "<|endoftext|>",
        cleaning="transformers-siglip" if siglip else None,
        config_files=(preprocessor, *(folder / n for n in names if (folder / n).is_file())),
    )


def read_immich(folder: Path) -> OnnxFiles:
    """``visual/`` and ``textual/`` folders with an open_clip ``config.json`` on top."""
    config = _optional_json(folder / "config.json")
    text_config = config.get("text_config") or config.get("text_cfg") or {}
    tokenizer_config = _optional_json(folder / "textual" / "tokenizer_config.json")
    preprocess = folder / "visual" / "preprocess_cfg.json"
    if not preprocess.is_file():
        raise ModelError(f"{folder} has no visual/preprocess_cfg.json (the image preprocessing)")
    clean = (text_config.get("tokenizer_kwargs") or {}).get("clean")
    names = (
        "config.json",
        "textual/tokenizer.json",
        "textual/tokenizer_config.json",
        "textual/special_tokens_map.json",
    )
    return OnnxFiles(
        visual=folder / "visual" / "model.onnx",
        textual=folder / "textual" / "model.onnx",
        tokenizer=folder / "textual" / "tokenizer.json",
        pixels=PixelRecipe.from_open_clip(read_json(preprocess)),
        context_length=int(text_config.get("context_length", DEFAULT_CONTEXT_LENGTH)),
        pad_token=pad_token_of(tokenizer_config) or "<|endoftext|>",
        cleaning="open_clip-canonicalize" if clean == "canonicalize" else None,
        config_files=(preprocess, *(folder / n for n in names if (folder / n).is_file())),
    )


READERS = {XENOVA_LAYOUT: read_xenova, IMMICH_LAYOUT: read_immich}


class _Graph:
    """One ONNX graph and how to call it."""

    def __init__(self, path: Path, settings: RuntimeSettings) -> None:
        self.path = path
        self.session = onnx_session(path, settings)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        named = [name for name in EMBEDDING_OUTPUTS if name in outputs]
        self.output = named[0] if named else outputs[0]
        first = next(iter(self.inputs.values()))
        # immich's exports take exactly one item per call.
        self.fixed_batch = first.shape[0] if isinstance(first.shape[0], int) else None

    def input_type(self, name: str) -> Any:
        onnx_type = self.inputs[name].type
        if onnx_type not in ONNX_TYPES:
            raise ModelError(f"{self.path}: input '{name}' of type {onnx_type} is not supported")
        return ONNX_TYPES[onnx_type]

    def static_dims(self, name: str) -> list[int | None]:
        return [d if isinstance(d, int) else None for d in self.inputs[name].shape]

    def output_width(self) -> int | None:
        shape = next(o.shape for o in self.session.get_outputs() if o.name == self.output)
        return shape[-1] if isinstance(shape[-1], int) else None

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Feeds of n rows -> (n, d) float32, in chunks of the graph's fixed batch if any."""
        n = len(next(iter(feeds.values())))
        step = self.fixed_batch or max(n, 1)
        rows = []
        for start in range(0, n, step):
            chunk = {k: v[start : start + step] for k, v in feeds.items()}
            short = step - len(next(iter(chunk.values())))
            if self.fixed_batch and short:
                chunk = {
                    k: np.concatenate([v, np.repeat(v[-1:], short, 0)]) for k, v in chunk.items()
                }
            try:
                (out,) = self.session.run([self.output], chunk)
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelError(f"{self.path} failed to run: {first_line(exc)}") from exc
            out = np.asarray(out, dtype=np.float32)
            if out.ndim != 2:
                raise ModelError(
                    f"{self.path}: output '{self.output}' is not (n, d) but {out.shape}"
                )
            rows.append(out[: len(out) - short] if self.fixed_batch and short else out)
        return np.concatenate(rows)


class OnnxClipEncoder:
    """A CLIP-family ONNX export: one joint space shared by images and texts."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        settings: RuntimeSettings,
        spec: Mapping[str, Any],
    ) -> None:
        files = READERS[checkpoint.layout](checkpoint.folder)
        self.files = files
        self.pixels = files.pixels
        self._visual = _Graph(files.visual, settings)
        self._textual = _Graph(files.textual, settings)
        self._pixel_input = next(iter(self._visual.inputs))
        self._check_image_size()
        self._ids_input, self._mask_input = self._text_inputs()
        context = self._textual.static_dims(self._ids_input)[-1] or files.context_length
        if context != files.context_length:
            raise ModelError(
                f"{files.textual} takes {context} tokens but its configuration says "
                f"{files.context_length}"
            )
        self.tokenizer = TextTokenizer(files.tokenizer, context, files.pad_token, files.cleaning)
        self.max_text_tokens = context
        dims = self._textual.output_width() or int(self.embed_texts(["a photo"]).shape[1])
        described = {
            "code": CODE_VERSION,
            "layout": checkpoint.layout,
            "pixels": self.pixels.describe(),
            "context_length": context,
            "pad_token": files.pad_token,
            "cleaning": files.cleaning,
        }
        weights = [*_with_external_data(files.visual), *_with_external_data(files.textual)]
        version = fingerprint(
            described, [*files.config_files, *weights], settings.cache_dir / "digests"
        )
        self.info = EncoderInfo(
            name=checkpoint.name,
            version=f"onnx{CODE_VERSION}-{version}",
            spaces={JOINT_SPACE: dims},
            text_space=JOINT_SPACE,
            image_space=JOINT_SPACE,
            spec={**spec, **checkpoint.source, "kind": KIND},
        )

    def _check_image_size(self) -> None:
        dims = self._visual.static_dims(self._pixel_input)
        expected = self.pixels.output_size
        if len(dims) != 4 or any(
            d is not None and d != e for d, e in zip(dims[2:], expected, strict=True)
        ):
            raise ModelError(
                f"{self.files.visual} takes input of shape {dims}, but the preprocessing "
                f"makes (3, {expected[0]}, {expected[1]}) images"
            )

    def _text_inputs(self) -> tuple[str, str | None]:
        names = list(self._textual.inputs)
        mask = "attention_mask" if "attention_mask" in names else None
        others = [n for n in names if n != mask]
        if len(others) != 1:
            raise ModelError(f"{self.files.textual}: cannot tell the token input among {names}")
        return others[0], mask

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> (3, H, W) float32, as the export's preprocessing config says."""
        return self.pixels(image)

    def embed_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """(n, 3, H, W) float32 -> {"joint": (n, dims) float32 unit rows}."""
        if len(pixels) == 0:
            return {JOINT_SPACE: np.zeros((0, self.info.spaces[JOINT_SPACE]), np.float32)}
        dtype = self._visual.input_type(self._pixel_input)
        features = self._visual.run({self._pixel_input: np.asarray(pixels, dtype=dtype)})
        return {JOINT_SPACE: normalize_rows(features)}

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` before the cut at ``max_text_tokens`` (the context length)."""
        return self.tokenizer.count_tokens(text)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """n texts -> (n, dims) float32 unit rows."""
        rows = []
        for start in range(0, len(texts), TEXT_BATCH):
            ids, mask = self.tokenizer(texts[start : start + TEXT_BATCH])
            feeds = {self._ids_input: ids.astype(self._textual.input_type(self._ids_input))}
            if self._mask_input:
                feeds[self._mask_input] = mask.astype(self._textual.input_type(self._mask_input))
            rows.append(normalize_rows(self._textual.run(feeds)))
        if not rows:
            return np.zeros((0, self.info.spaces[JOINT_SPACE]), np.float32)
        return np.concatenate(rows)


def _optional_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _with_external_data(model: Path) -> list[Path]:
    """The graph file and the external-data files saved beside it (``model.onnx_data``...)."""
    extra = sorted(
        p
        for p in model.parent.iterdir()
        if p.is_file() and p != model and p.name.startswith(model.name)
    )
    return [model, *extra]


def load(spec: Mapping[str, Any], settings: RuntimeSettings) -> OnnxClipEncoder:
    """The encoder a model spec names (``{"kind": "onnx-clip", "path" | "hub_id": ...}``)."""
    checkpoint = locate_spec(spec)
    if checkpoint.layout not in READERS:
        raise ModelError(
            f"{checkpoint.folder} is a transformers checkpoint, not an ONNX export; "
            "make one with `spyglass export-onnx`"
        )
    return OnnxClipEncoder(checkpoint, settings, spec)
