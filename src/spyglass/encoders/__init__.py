"""Encoders, chosen by name. Model names are data: see ``models.json``.

A model spec is a name from ``models.json``, a local directory (a Hugging Face CLIP or
SigLIP checkpoint, or an ONNX export with visual and textual models), or a Hugging Face
hub id (``org/name``) already in the local hub cache.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from spyglass.encoders.base import JOINT_SPACE, Encoder, EncoderInfo, embed_images, normalize_rows
from spyglass.errors import ModelNotFound
from spyglass.settings import RuntimeSettings

__all__ = [
    "JOINT_SPACE",
    "Encoder",
    "EncoderInfo",
    "embed_images",
    "load_encoder",
    "model_names",
    "normalize_rows",
    "resolve_spec",
]

DEFAULT_MODEL = "bundled"

#: kind -> module with ``load(spec, settings) -> Encoder``; imported only when used.
LOADERS = {
    "conse": "spyglass.encoders.bundled",
    "hf": "spyglass.encoders.hf",
    "onnx-clip": "spyglass.encoders.onnx_clip",
}


def model_names() -> dict[str, Mapping[str, Any]]:
    """The named models of ``models.json``: name -> spec."""
    text = resources.files(__package__).joinpath("models.json").read_text("utf-8")
    data: dict[str, Mapping[str, Any]] = json.loads(text)
    return data


def resolve_spec(name: str) -> dict[str, Any]:
    """A model name, directory or hub id -> a spec dict with at least ``kind``."""
    named = model_names()
    if name in named:
        return {"name": name, **named[name]}
    path = Path(name).expanduser()
    if path.is_dir():
        return _spec_for_directory(path)
    from spyglass.encoders.checkpoint import locate, looks_like_hub_id

    if looks_like_hub_id(name):
        # Only the local hub cache is looked at: an uncached id fails at once.
        return locate(name).spec()
    known = ", ".join(sorted(named))
    raise ModelNotFound(
        f"no model named '{name}': use one of {known}, "
        "a local checkpoint directory, or a Hugging Face hub id"
    )


def _spec_for_directory(path: Path) -> dict[str, Any]:
    """A CLIP/SigLIP checkpoint or ONNX export folder -> ``{"kind", "path"}``."""
    from spyglass.encoders.checkpoint import locate

    return locate(str(path)).spec()


def load_encoder(spec: str | Mapping[str, Any], settings: RuntimeSettings) -> Encoder:
    """Load an encoder from a model name/path/hub id or a recorded spec dict."""
    resolved = resolve_spec(spec) if isinstance(spec, str) else dict(spec)
    kind = resolved.get("kind")
    if kind not in LOADERS:
        raise ModelNotFound(f"unknown model kind {kind!r} in model spec {resolved}")
    module = importlib.import_module(LOADERS[kind])
    config = {k: v for k, v in resolved.items() if k not in ("about",)}
    encoder: Encoder = module.load(config, settings)
    return encoder
