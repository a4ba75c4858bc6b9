"""Export a Hugging Face CLIP or SigLIP checkpoint to separate visual and textual ONNX
graphs, in Xenova's or immich's layout, so that it runs in onnxruntime without PyTorch.

The graphs compute exactly what :mod:`spyglass.encoders.hf` computes (the projected
image and text features); Spyglass normalises their rows. Files are written to a
temporary folder beside the target and renamed, so a failed export leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

from spyglass.encoders.checkpoint import first_line, hf_weight_files, locate, read_json
from spyglass.encoders.hf import (
    context_length,
    load_model,
    load_tokenizer,
    pixel_recipe,
    pooled,
    require_transformers,
)
from spyglass.encoders.pixels import PixelRecipe
from spyglass.errors import ModelError

Layout = Literal["xenova", "immich"]
LAYOUTS: tuple[Layout, ...] = ("xenova", "immich")
OPSET = 17
#: Texts the text graph is traced with (any will do; real ones make a realistic trace).
TRACE_TEXTS = ["a photo of a cat", "two dogs playing in the snow"]


def export_onnx(
    source: str | Path,
    target: str | Path,
    *,
    layout: Layout = "xenova",
    fixed_batch: int | None = None,
) -> Path:
    """Write ``source`` (a checkpoint directory or cached hub id) as an ONNX export at
    ``target`` (must not exist yet). ``fixed_batch`` bakes a batch size into the graphs,
    as immich's own exports do (1); ``None`` keeps the batch axis dynamic."""
    if layout not in LAYOUTS:
        raise ModelError(f"unknown ONNX layout '{layout}': use one of {', '.join(LAYOUTS)}")
    target = Path(target).expanduser()
    if target.exists():
        raise ModelError(f"{target} already exists; export into a new folder")
    checkpoint = locate(str(source))
    folder = checkpoint.folder
    if not hf_weight_files(folder):
        raise ModelError(f"{folder} is not a transformers checkpoint with weights")
    torch, _ = require_transformers()
    model, config = load_model(folder)
    tokenizer = load_tokenizer(folder)
    recipe = pixel_recipe(folder)
    context = context_length(config, tokenizer)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".exporting-", dir=target.parent))
    try:
        paths = {
            "xenova": (
                staging / "onnx" / "vision_model.onnx",
                staging / "onnx" / "text_model.onnx",
            ),
            "immich": (staging / "visual" / "model.onnx", staging / "textual" / "model.onnx"),
        }[layout]
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        immich = layout == "immich"
        batch = fixed_batch or 2
        encoded = tokenizer(
            (TRACE_TEXTS * batch)[:batch],
            padding="max_length",
            max_length=context,
            truncation=True,
            return_tensors="pt",
        )
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        image_graph = _image_graph(torch, model, normalize=immich, with_states=not immich)
        # Xenova's CLIP text graphs also take the attention mask; SigLIP never used one.
        text_graph = _text_graph(
            torch,
            model,
            normalize=immich,
            with_states=not immich,
            with_mask=not immich and config.model_type == "clip",
        )
        if immich:
            image_names = (["image"], ["embedding"])
            text_names = (["text"], ["embedding"])
            text_example: tuple[Any, ...] = (ids.to(torch.int32),)
        else:
            image_names = (["pixel_values"], ["image_embeds", "last_hidden_state"])
            text_names = (
                ["input_ids", "attention_mask"] if text_graph.with_mask else ["input_ids"],
                ["text_embeds", "last_hidden_state"],
            )
            text_example = (ids, mask) if text_graph.with_mask else (ids,)
        pixels = torch.zeros(batch, 3, *recipe.output_size)
        _export(torch, image_graph, (pixels,), paths[0], *image_names, fixed_batch)
        _export(torch, text_graph, text_example, paths[1], *text_names, fixed_batch)
        tokenizer_folder = staging / "textual" if immich else staging
        _write_tokenizer(folder, tokenizer, context, tokenizer_folder)
        if immich:
            _write_immich_configs(staging, config, recipe, context, tokenizer)
        else:
            for name in ("config.json", "preprocessor_config.json"):
                shutil.copy(folder / name, staging / name)
        os.rename(staging, target)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"could not export {folder} to ONNX: {first_line(exc)}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _image_graph(torch: Any, model: Any, normalize: bool, with_states: bool) -> Any:
    """pixel_values -> image features (and the last hidden states, as Xenova's have)."""

    class ImageGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: Any) -> Any:
            output = self.model.get_image_features(pixel_values=pixel_values)
            return _outputs(torch, output, normalize, with_states)

    return ImageGraph().eval()


def _text_graph(torch: Any, model: Any, normalize: bool, with_states: bool, with_mask: bool) -> Any:
    """token ids (and mask) -> text features (and the last hidden states)."""

    class TextGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.with_mask = with_mask

        def forward(self, input_ids: Any, attention_mask: Any = None) -> Any:
            output = self.model.get_text_features(
                input_ids=input_ids.long(), attention_mask=attention_mask
            )
            return _outputs(torch, output, normalize, with_states)

    return TextGraph().eval()


def _outputs(torch: Any, output: Any, normalize: bool, with_states: bool) -> Any:
    features = pooled(output)
    if normalize:
        features = torch.nn.functional.normalize(features, dim=-1)
    if with_states and not hasattr(output, "shape"):
        return features, output.last_hidden_state
    return features


def _export(
    torch: Any,
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    fixed_batch: int | None,
) -> None:
    with torch.no_grad():
        produced = module(*example)
    # transformers 4 returns bare features, without the hidden states to name.
    output_names = output_names[: len(produced) if isinstance(produced, tuple) else 1]
    dynamic = None if fixed_batch else {name: {0: "n"} for name in input_names + output_names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def _write_tokenizer(source: Path, tokenizer: Any, context: int, folder: Path) -> None:
    """tokenizer.json (what transformers tokenizes with), tokenizer_config.json with the
    pad token and context length, and special_tokens_map.json when the source has one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.save(str(folder / "tokenizer.json"))
    elif (source / "tokenizer.json").is_file():
        shutil.copy(source / "tokenizer.json", folder / "tokenizer.json")
    else:
        raise ModelError(
            f"{source} has no tokenizer.json and its tokenizer cannot write one; convert it "
            "with transformers where sentencepiece is installed "
            "(AutoTokenizer.from_pretrained(path).save_pretrained(path))"
        )
    tokenizer_config: dict[str, Any] = {}
    if (source / "tokenizer_config.json").is_file():
        tokenizer_config = read_json(source / "tokenizer_config.json")
    tokenizer_config.setdefault("tokenizer_class", type(tokenizer).__name__)
    tokenizer_config.setdefault("pad_token", str(tokenizer.pad_token))
    tokenizer_config["model_max_length"] = context
    _write_json(folder / "tokenizer_config.json", tokenizer_config)
    if (source / "special_tokens_map.json").is_file():
        shutil.copy(source / "special_tokens_map.json", folder / "special_tokens_map.json")


def _write_immich_configs(
    folder: Path, config: Any, recipe: PixelRecipe, context: int, tokenizer: Any
) -> None:
    """open_clip's model config (the parts immich reads) and preprocess_cfg.json."""
    text_cfg: dict[str, Any] = {
        "context_length": context,
        "vocab_size": int(config.text_config.vocab_size),
    }
    if type(tokenizer).__name__ == "SiglipTokenizer":
        text_cfg["tokenizer_kwargs"] = {"clean": "canonicalize"}
    model_config = {
        "embed_dim": int(getattr(config, "projection_dim", config.text_config.hidden_size)),
        "vision_cfg": {"image_size": int(config.vision_config.image_size)},
        "text_cfg": text_cfg,
    }
    _write_json(folder / "config.json", model_config)
    _write_json(folder / "visual" / "preprocess_cfg.json", recipe.to_open_clip())


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
