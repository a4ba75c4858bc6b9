"""Encoders, chosen by name. Model names are data: see ``models.json``.

A model spec is a name from ``models.json``, a local directory (a Hugging Face CLIP or
SigLIP checkpoint, or an ONNX export with visual and textual models), or a Hugging Face
hub id (``org/name``) already in the local hub cache.

A name with a ``pull`` entry loads from the folder ``spyglass models pull NAME`` filled
(``{cache_dir}/pulled/NAME``, see :mod:`spyglass.encoders.hub`) when it is there, else
from the local Hugging Face cache; loading never downloads.
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
    resolved = with_pulled_folder(resolved, settings)
    kind = resolved.get("kind")
    if kind not in LOADERS:
        raise ModelNotFound(f"unknown model kind {kind!r} in model spec {resolved}")
    module = importlib.import_module(LOADERS[kind])
    config = {k: v for k, v in resolved.items() if k not in ("about", "pull")}
    encoder: Encoder = module.load(config, settings)
    return encoder


def with_pulled_folder(spec: dict[str, Any], settings: RuntimeSettings) -> dict[str, Any]:
    """A named model's spec pointed at its pulled folder (``path``) when the files are
    there. A pullable model found neither there nor in the local Hugging Face cache
    fails at once with one line saying how to get it (pull, or copy by hand)."""
    name = spec.get("name")
    named = model_names().get(str(name)) if name and "path" not in spec else None
    if named is None or "pull" not in named:
        return spec
    from spyglass.encoders.checkpoint import hub_snapshot
    from spyglass.encoders.hub import PullPlan, is_pulled, not_pulled_message, pulled_folder

    plan = PullPlan.from_spec(str(name), named)
    if is_pulled(plan, settings.cache_dir):
        return {**spec, "path": str(pulled_folder(settings.cache_dir, plan.name))}
    try:
        hub_snapshot(plan.repo)
    except ModelNotFound:
        raise ModelNotFound(
            not_pulled_message(plan, settings.cache_dir, settings.hub_url)
        ) from None
    return spec
