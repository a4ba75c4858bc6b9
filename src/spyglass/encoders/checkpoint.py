"""Where a CLIP-family checkpoint's files are, which layout they use, and a fingerprint
of what they hold.

A checkpoint is a local directory or a Hugging Face hub id (``org/name``) whose files are
already in the local hub cache. Nothing here touches the network: a hub id that is not
cached fails at once with :class:`ModelNotFound` instead of waiting on retries.

Layouts, detected from the files present:

* ``hf``: a transformers checkpoint (``config.json`` with ``model_type`` clip or siglip,
  and ``model.safetensors`` or ``pytorch_model.bin``), run by PyTorch.
* ``xenova``: ``onnx/vision_model.onnx`` + ``onnx/text_model.onnx`` with ``tokenizer.json``
  and ``preprocessor_config.json`` beside them (transformers.js exports).
* ``immich``: ``visual/model.onnx`` + ``textual/model.onnx`` with ``textual/tokenizer.json``,
  ``visual/preprocess_cfg.json`` and an open_clip ``config.json`` (immich's exports).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spyglass.errors import ModelNotFound

HF_LAYOUT = "hf"
XENOVA_LAYOUT = "xenova"
IMMICH_LAYOUT = "immich"

#: Encoder kind (a key of ``spyglass.encoders.LOADERS``) that runs each layout.
KIND_FOR_LAYOUT = {HF_LAYOUT: "hf", XENOVA_LAYOUT: "onnx-clip", IMMICH_LAYOUT: "onnx-clip"}

#: transformers model types the ``hf`` kind can run.
HF_MODEL_TYPES = ("clip", "siglip")

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

#: How to get a model here when none can be loaded; ends every "not found" message.
FIX = (
    "pass --model with a local checkpoint directory, download the model first "
    "(e.g. `hf download ORG/NAME`), or use the bundled model (--model bundled)"
)


@dataclass(frozen=True)
class Checkpoint:
    """A located checkpoint: its folder, layout, a readable name and how to find it again."""

    folder: Path
    layout: str
    #: The checkpoint's own name (directory or hub repository name), shown to users.
    name: str
    #: ``{"path": ...}`` or ``{"hub_id": ...}``: what a model spec records to reload it.
    source: Mapping[str, str]

    @property
    def kind(self) -> str:
        return KIND_FOR_LAYOUT[self.layout]

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.source}


def looks_like_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name)) and not Path(name).expanduser().exists()


def locate(name: str) -> Checkpoint:
    """A directory or a cached hub id -> :class:`Checkpoint`; :class:`ModelNotFound` otherwise."""
    path = Path(name).expanduser()
    if path.is_dir():
        folder = path.resolve()
        return Checkpoint(
            folder, detect_layout(folder), _folder_name(folder), {"path": str(folder)}
        )
    if looks_like_hub_id(name):
        folder = hub_snapshot(name)
        return Checkpoint(folder, detect_layout(folder), name.split("/")[1], {"hub_id": name})
    raise ModelNotFound(f"'{name}' is neither a model directory nor a hub id (org/name): {FIX}")


def locate_spec(spec: Mapping[str, Any]) -> Checkpoint:
    """The checkpoint a recorded model spec names (``path`` or ``hub_id``)."""
    if spec.get("path"):
        path = Path(str(spec["path"])).expanduser()
        if not path.is_dir():
            raise ModelNotFound(f"model directory {path} is gone: {FIX}")
        return locate(str(path))
    if spec.get("hub_id"):
        return locate(str(spec["hub_id"]))
    raise ModelNotFound(f"model spec {dict(spec)} names no 'path' or 'hub_id'")


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache (``HF_HUB_CACHE``, ``HF_HOME``, or the default)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - tokenizers depends on huggingface_hub
        return Path("~/.cache/huggingface/hub").expanduser()
    return Path(constants.HF_HUB_CACHE).expanduser()


def hub_snapshot(hub_id: str, revision: str = "main") -> Path:
    """The cached snapshot folder of ``hub_id``, read straight from the cache layout
    (``models--ORG--NAME/refs/REVISION`` -> ``snapshots/COMMIT``): no network, ever."""
    repo = hub_cache_dir() / ("models--" + hub_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    ref = repo / "refs" / revision
    folder: Path | None = None
    if ref.is_file():
        folder = snapshots / ref.read_text("utf-8").strip()
    elif snapshots.is_dir():
        candidates = [p for p in snapshots.iterdir() if p.is_dir()]
        if len(candidates) == 1:
            folder = candidates[0]
    if folder is None or not folder.is_dir():
        raise ModelNotFound(
            f"model '{hub_id}' is not in the local Hugging Face cache ({hub_cache_dir()}) "
            f"and Spyglass never downloads: {FIX}"
        )
    return folder


def detect_layout(folder: Path) -> str:
    """Which layout ``folder`` holds (ONNX layouts win over a transformers checkpoint)."""
    if (folder / "visual" / "model.onnx").is_file() and (
        folder / "textual" / "model.onnx"
    ).is_file():
        return IMMICH_LAYOUT
    onnx = folder / "onnx"
    if (onnx / "vision_model.onnx").is_file() and (onnx / "text_model.onnx").is_file():
        return XENOVA_LAYOUT
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    model_type = config.get("model_type")
    if model_type in HF_MODEL_TYPES:
        if not hf_weight_files(folder):
            raise ModelNotFound(
                f"{folder} holds a {model_type} configuration but no weights "
                f"(model.safetensors or pytorch_model.bin): {FIX}"
            )
        return HF_LAYOUT
    if (folder / "open_clip_config.json").is_file():
        raise ModelNotFound(
            f"{folder} is an open_clip checkpoint; open_clip needs torchvision, which Spyglass "
            "does not install. Export it to ONNX elsewhere (see docs/models.md) and pass that "
            "folder, or use the bundled model (--model bundled)"
        )
    if model_type:
        raise ModelNotFound(
            f"{folder} holds a '{model_type}' model; Spyglass runs CLIP and SigLIP "
            f"checkpoints and their ONNX exports: {FIX}"
        )
    raise ModelNotFound(f"{folder} is not a model directory Spyglass can read: {FIX}")


def hf_weight_files(folder: Path) -> list[Path]:
    """The weight files transformers would load from ``folder`` (safetensors first)."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            shards = sorted(set(read_json(folder / index).get("weight_map", {}).values()))
            return [folder / index, *(folder / shard for shard in shards)]
    return []


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"could not read {path}: {first_line(exc)}") from exc
    if not isinstance(data, dict):
        raise ModelNotFound(f"{path} does not hold a JSON object")
    return data


def first_line(error: BaseException) -> str:
    """A library's error text cut to its first line: messages reach users as one line."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _folder_name(folder: Path) -> str:
    # A hub snapshot passed as a path is named by its commit; name it by its repository.
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return folder.name


# --- fingerprints -----------------------------------------------------------------


def fingerprint(
    settings_like: Mapping[str, Any], files: Iterable[Path], digest_cache: Path | None
) -> str:
    """A short digest that changes whenever the vectors could: what the encoder was
    configured with (``settings_like``, JSON-able) and the content of ``files``."""
    digest = hashlib.sha256(json.dumps(settings_like, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + file_digest(path, digest_cache).encode())
    return digest.hexdigest()[:16]


def file_digest(path: Path, digest_cache: Path | None) -> str:
    """SHA-256 of a file's content, remembered per (path, size, mtime, inode) so that a
    600 MB weights file is read once, not at every load. A hub-cache blob is already
    named by its SHA-256, so it is not read at all."""
    real = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", real.name) and real.parent.name == "blobs":
        return real.name
    stat = real.stat()
    key = hashlib.sha1(f"{real}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}".encode())
    remembered = digest_cache / f"{key.hexdigest()}.sha256" if digest_cache else None
    if remembered is not None and remembered.is_file():
        return remembered.read_text("ascii").strip()
    with real.open("rb") as handle:
        value = hashlib.file_digest(handle, "sha256").hexdigest()
    if remembered is not None:
        _write_atomically(remembered, value)
    return value


def _write_atomically(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".digest-", dir=path.parent)
        with os.fdopen(handle, "w", encoding="ascii") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError:
        pass  # a read-only cache only costs hashing again next time
