"""CLIP-family models end to end through the command line (in-process, CliRunner):
index real photos with a checkpoint, search the index with the model it recorded, and
refuse another model on it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from spyglass.cli import main
from spyglass.encoders import resolve_spec
from spyglass.settings import RuntimeSettings

PHOTO_COUNT = 6


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


@pytest.fixture(autouse=True, scope="module")
def private_cache(runtime: RuntimeSettings, tmp_path_factory: Any) -> Iterator[None]:
    """The CLI reads SPYGLASS_CACHE_DIR: point it at a private folder (weight digests of
    temporary checkpoints stay out of the user's cache) that shares the prepared models."""
    cache = tmp_path_factory.mktemp("cli-cache")
    (runtime.cache_dir / "models").mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(runtime.cache_dir / "models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPYGLASS_CACHE_DIR", str(cache))
        yield


@pytest.fixture(scope="module")
def photo_paths(photos: Any) -> list[str]:
    return [str(p) for p in photos.paths()[:PHOTO_COUNT]]


@pytest.mark.parametrize("model", ["tiny-clip", "tiny-clip-immich"])
def test_index_then_search_with_the_recorded_model(
    model: str,
    request: pytest.FixtureRequest,
    export_of: Callable[..., Path],
    photo_paths: list[str],
    tmp_path: Path,
) -> None:
    if model == "tiny-clip":
        folder: Path = request.getfixturevalue("tiny_clip_dir")
    else:
        folder = export_of(request.getfixturevalue("tiny_clip_dir"), "immich", 1)
    index = str(tmp_path / "index")
    indexed = run("index", *photo_paths, "--index", index, "--model", str(folder), "--json")
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.output)["added"] == PHOTO_COUNT

    info = json.loads(run("info", "--index", index, "--json").output)
    assert info["model"] == folder.name
    assert info["images"] == PHOTO_COUNT

    # No --model: the encoder is reloaded from the spec the index recorded.
    searched = run("search", "a calm lake at dusk", "--index", index, "--json", "-k", "4")
    assert searched.exit_code == 0, searched.output
    results = json.loads(searched.output)
    assert len(results) == 4
    assert {r["path"] for r in results} <= set(photo_paths)
    ranked = [r["rank_score"] for r in results]  # the order; "score" is the cosine
    assert ranked == sorted(ranked, reverse=True)

    by_image = run("search", "--image", photo_paths[2], "--index", index, "--json", "-k", "1")
    assert by_image.exit_code == 0, by_image.output
    assert json.loads(by_image.output)[0]["path"] == photo_paths[2]

    if model == "tiny-clip":  # the bundled model is loaded once, not per model
        refused = run("search", "a lake", "--index", index, "--model", "bundled", "--json")
        assert refused.exit_code == 3
        line = one_error_line(refused)
        assert "tiny-clip" in line and "bundled" in line


def test_export_onnx_command(tiny_clip_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "tiny-immich"
    made = run("export-onnx", str(tiny_clip_dir), str(target), "--layout", "immich")
    assert made.exit_code == 0, made.output
    assert str(target) in made.output
    assert resolve_spec(str(target)) == {"kind": "onnx-clip", "path": str(target)}

    again = run("export-onnx", str(tiny_clip_dir), str(target))
    assert again.exit_code == 4
    assert "already exists" in one_error_line(again)


def test_uncached_hub_model_is_one_line_and_exit_4(
    photo_paths: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    result = run(
        "index", photo_paths[0], "--index", str(tmp_path / "i"), "--model", "clip-vit-b-32"
    )
    assert result.exit_code == 4
    assert "openai/clip-vit-base-patch32" in one_error_line(result)


def test_models_lists_the_clip_family() -> None:
    result = run("models", "--json")
    models = json.loads(result.output)["models"]
    assert {"clip-vit-b-32", "clip-vit-b-32-onnx", "siglip-base"} <= set(models)
