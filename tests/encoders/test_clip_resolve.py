"""Finding checkpoints: directories, the local hub cache, failing fast with the fix named,
and versions that follow the files' content."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from spyglass.encoders import load_encoder, resolve_spec
from spyglass.encoders.checkpoint import file_digest
from spyglass.errors import MissingDependency, ModelError, ModelNotFound
from spyglass.settings import RuntimeSettings


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every attempt to open a connection is recorded and refused."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network use in a test that must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face hub cache in place of the user's."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def assert_names_the_fix(error: BaseException) -> None:
    message = str(error)
    assert "--model" in message and "bundled" in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "spec",
    [
        "openai/clip-vit-base-patch32",
        "clip-vit-b-32",
        "siglip-base",
        {"kind": "hf", "hub_id": "google/siglip-base-patch16-224"},
        {"kind": "onnx-clip", "hub_id": "Xenova/clip-vit-base-patch32"},
    ],
)
def test_uncached_hub_model_fails_at_once_without_network(
    spec: Any, hub_cache: Path, no_network: list[Any], cpu_runtime: RuntimeSettings
) -> None:
    started = time.monotonic()
    with pytest.raises(ModelNotFound) as caught:
        load_encoder(spec, cpu_runtime)
    assert time.monotonic() - started < 5.0
    assert no_network == []
    assert "not in the local Hugging Face cache" in str(caught.value)
    assert_names_the_fix(caught.value)


def test_configuration_without_weights_fails_naming_the_fix(clip_files: Path) -> None:
    with pytest.raises(ModelNotFound, match="no weights") as caught:
        resolve_spec(str(clip_files))
    assert_names_the_fix(caught.value)


def test_cached_hub_id_loads_from_the_local_cache(
    tiny_clip_dir: Path,
    hub_cache: Path,
    no_network: list[Any],
    cpu_runtime: RuntimeSettings,
) -> None:
    """A hub cache laid out as huggingface_hub writes it: large files as blobs named by
    their SHA-256, linked from a snapshot named by the commit."""
    repo = hub_cache / "models--spyglass-test--tiny-clip"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for source in tiny_clip_dir.iterdir():
        content = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snapshot / source.name).symlink_to(blob)

    spec = resolve_spec("spyglass-test/tiny-clip")
    assert spec == {"kind": "hf", "hub_id": "spyglass-test/tiny-clip"}
    from_hub = load_encoder(spec, cpu_runtime)
    from_folder = load_encoder(resolve_spec(str(tiny_clip_dir)), cpu_runtime)
    assert from_hub.info.name == from_folder.info.name == "tiny-clip"
    # The blob names stand in for reading the weights; the version must not notice.
    assert from_hub.info.version == from_folder.info.version
    assert dict(from_hub.info.spec) == {"kind": "hf", "hub_id": "spyglass-test/tiny-clip"}
    assert no_network == []


def test_file_digest_is_remembered_and_follows_changes(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first content")
    cache = tmp_path / "digests"
    first = file_digest(weights, cache)
    assert first == hashlib.sha256(b"first content").hexdigest()
    assert len(list(cache.iterdir())) == 1
    assert file_digest(weights, cache) == first
    weights.write_bytes(b"other content, other size")
    assert file_digest(weights, cache) == hashlib.sha256(b"other content, other size").hexdigest()


def test_version_follows_weights_and_preprocessing(
    tiny_clip_dir: Path, transformers_quiet: Any, cpu_runtime: RuntimeSettings, tmp_path: Path
) -> None:
    torch, _ = transformers_quiet
    from safetensors.torch import load_file, save_file

    original = load_encoder(resolve_spec(str(tiny_clip_dir)), cpu_runtime).info
    copy = tmp_path / "tiny-clip"
    shutil.copytree(tiny_clip_dir, copy)
    assert load_encoder(resolve_spec(str(copy)), cpu_runtime).info == original.__class__(
        **{**original.to_json(), "spec": {"kind": "hf", "path": str(copy)}}
    )

    weights = load_file(copy / "model.safetensors")
    name = next(k for k in weights if k.endswith("text_projection.weight"))
    weights[name] = weights[name] + 1e-3 * torch.ones_like(weights[name])
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    retrained = load_encoder(resolve_spec(str(copy)), cpu_runtime).info.version
    assert retrained != original.version

    config_path = copy / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    config["image_mean"] = [0.5, 0.5, 0.5]
    config_path.write_text(json.dumps(config))
    renormalised = load_encoder(resolve_spec(str(copy)), cpu_runtime).info.version
    assert renormalised not in (original.version, retrained)


def test_moved_checkpoint_fails_naming_the_fix(
    cpu_runtime: RuntimeSettings, tmp_path: Path
) -> None:
    with pytest.raises(ModelNotFound, match="is gone") as caught:
        load_encoder({"kind": "hf", "path": str(tmp_path / "moved")}, cpu_runtime)
    assert_names_the_fix(caught.value)


def test_open_clip_checkpoint_is_refused_with_export_advice(tmp_path: Path) -> None:
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="torchvision") as caught:
        resolve_spec(str(tmp_path))
    assert "docs/models.md" in str(caught.value)


def test_other_model_types_and_empty_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelNotFound, match="'bert'"):
        resolve_spec(str(tmp_path / "bert"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="not a model directory"):
        resolve_spec(str(tmp_path / "empty"))


def test_cuda_asked_for_without_a_gpu_is_refused(
    tiny_clip_dir: Path, transformers_quiet: Any, cpu_runtime: RuntimeSettings
) -> None:
    torch, _ = transformers_quiet
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from dataclasses import replace

    with pytest.raises(ModelError, match="--device cpu"):
        load_encoder(resolve_spec(str(tiny_clip_dir)), replace(cpu_runtime, device="cuda"))


def test_missing_transformers_names_the_extra(
    tiny_clip_dir: Path, cpu_runtime: RuntimeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'spyglass\[hf\]'"):
        load_encoder(resolve_spec(str(tiny_clip_dir)), cpu_runtime)


def test_sentencepiece_tokenizer_without_sentencepiece_is_one_line(
    tiny_siglip_dir: Path, cpu_runtime: RuntimeSettings, tmp_path: Path
) -> None:
    """Real SigLIP checkpoints ship spiece.model and no tokenizer.json."""
    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("sentencepiece is installed here")
    copy = tmp_path / "siglip-spm"
    shutil.copytree(tiny_siglip_dir, copy)
    (copy / "tokenizer.json").unlink()
    (copy / "spiece.model").write_bytes(b"a sentencepiece model would be here")
    config = {"tokenizer_class": "SiglipTokenizer", "pad_token": "</s>", "model_max_length": 64}
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(MissingDependency, match="pip install sentencepiece") as caught:
        load_encoder(resolve_spec(str(copy)), cpu_runtime)
    assert "\n" not in str(caught.value)


def test_a_broken_sentencepiece_model_is_one_line(
    tiny_siglip_dir: Path, cpu_runtime: RuntimeSettings, tmp_path: Path
) -> None:
    if importlib.util.find_spec("sentencepiece") is None:
        pytest.skip("sentencepiece is not installed here")
    copy = tmp_path / "siglip-spm"
    shutil.copytree(tiny_siglip_dir, copy)
    (copy / "tokenizer.json").unlink()
    (copy / "spiece.model").write_bytes(b"not a sentencepiece model")
    config = {"tokenizer_class": "SiglipTokenizer", "pad_token": "</s>", "model_max_length": 64}
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="could not load the tokenizer") as caught:
        load_encoder(resolve_spec(str(copy)), cpu_runtime)
    assert "\n" not in str(caught.value)
