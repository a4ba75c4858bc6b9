"""Real CLIP-family architectures with random weights, saved in the real file formats.

No pretrained CLIP weights can be had here, so the checkpoints are built from the real
OpenAI CLIP ViT-B/32 configuration, tokenizer and preprocessing files (a folder beside
the test data: ``$SPYGLASS_TEST_MODELS`` or ``$SPYGLASS_TEST_DATA/../models``), given
seeded random weights and saved with ``save_pretrained``. Random weights give random
rankings: these tests check shapes, formats, tokenisation, preprocessing, loading and
export, never retrieval quality.

The full-size ViT-B/32 (600 MB; build + save ~4 s, ONNX export ~20 s on two busy cores)
is made once per session and used where size matters (loading the real architecture, one
ONNX parity check); everything else uses a narrow two-layer copy of the same config.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spyglass.encoders import Encoder, load_encoder, resolve_spec
from spyglass.settings import RuntimeSettings

CLIP_FILES = "clip-vit-base-patch32-noweights"
#: The real checkpoint's tokenizer and preprocessing files, copied beside the weights.
CLIP_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
)
NARROW = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}

#: google/siglip-base-patch16-224's image preprocessing, as its preprocessor_config.json says.
SIGLIP_PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "SiglipProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 224, "width": 224},
}

#: Text the offline SigLIP tokenizer learns its vocabulary from.
SIGLIP_CORPUS = [
    "a photo of a cat sitting on a red sofa",
    "two dogs playing in the snow near a wooden fence",
    "a bathroom with a black waste basket and white tiles",
    "an aerial view of a city at night with bright lights",
    "a bowl of fresh fruit: apples, oranges and bananas",
    "a person riding a bicycle down a quiet country road",
    "colorful plastic cups seen from above on a table",
    "a calm lake in blue dusk light with mountains behind",
    "wooden planks of a dock by the water at sunset",
    "the hubble deep field full of distant galaxies",
    "a close-up of raindrops on a green leaf",
    "an astronaut floating above the earth in space",
]


@pytest.fixture(scope="session")
def clip_files(data_root: Path) -> Path:
    """The real ViT-B/32 config, tokenizer and preprocessing files (no weights)."""
    root = os.environ.get("SPYGLASS_TEST_MODELS")
    folder = (Path(root) if root else data_root.parent / "models") / CLIP_FILES
    if not (folder / "config.json").is_file():
        pytest.fail(f"{folder} is missing; set SPYGLASS_TEST_MODELS to the folder holding it")
    return folder


@pytest.fixture(scope="session")
def transformers_quiet() -> Any:
    """transformers and torch, imported once, with progress bars off."""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return torch, transformers


def random_model(torch: Any, model_class: Any, config: Any, seed: int) -> Any:
    """``model_class(config)`` with seeded random weights: matrices N(0, 1/fan_in) so that
    signals keep their scale through the layers (images stay distinguishable), biases 0,
    layer norms at identity. Built on the meta device and filled in place: transformers'
    own initialisation takes 4-8 s for ViT-B/32 on two busy cores."""
    with torch.device("meta"):
        model = model_class(config)
    model = model.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                parameter.zero_()
            elif parameter.ndim >= 2:
                parameter.normal_(0.0, parameter[0].numel() ** -0.5, generator=generator)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
        for name, buffer in model.named_buffers():
            if not name.endswith("position_ids"):
                raise AssertionError(f"unexpected buffer {name}: fill it")
            buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
    return model


def save_clip(
    transformers_quiet: Any, clip_files: Path, folder: Path, seed: int, narrow: bool
) -> Path:
    torch, transformers = transformers_quiet
    config = transformers.CLIPConfig.from_pretrained(clip_files).to_dict()
    if narrow:
        config["text_config"].update(NARROW)
        config["vision_config"].update(NARROW)
        config["projection_dim"] = 16
    model_config = transformers.CLIPConfig(**config)
    random_model(torch, transformers.CLIPModel, model_config, seed).save_pretrained(folder)
    for name in CLIP_SIDE_FILES:
        shutil.copy(clip_files / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def clip_b32_dir(transformers_quiet: Any, clip_files: Path, tmp_path_factory: Any) -> Path:
    """Full-size OpenAI CLIP ViT-B/32, random weights, in Hugging Face layout."""
    folder = tmp_path_factory.mktemp("ckpt") / "clip-vit-base-patch32"
    return save_clip(transformers_quiet, clip_files, folder, seed=0, narrow=False)


@pytest.fixture(scope="session")
def tiny_clip_dir(transformers_quiet: Any, clip_files: Path, tmp_path_factory: Any) -> Path:
    """ViT-B/32's configuration narrowed to two 32-wide layers (same code paths, same
    tokenizer and preprocessing), random weights."""
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-clip"
    return save_clip(transformers_quiet, clip_files, folder, seed=1, narrow=True)


def build_siglip_tokenizer(folder: Path) -> None:
    """A sentencepiece-style (Unigram + Metaspace) tokenizer trained here, offline, with
    SigLIP's special tokens: the real SigLIP vocabulary cannot be had without network."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import UnigramTrainer

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = UnigramTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tokenizer.train_from_iterator(SIGLIP_CORPUS, trainer)
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", eos)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": "</s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 64,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


@pytest.fixture(scope="session")
def tiny_siglip_dir(transformers_quiet: Any, tmp_path_factory: Any) -> Path:
    """A narrow SiglipModel (the real architecture family, random weights) with SigLIP's
    real preprocessing config and an offline-built tokenizer."""
    torch, transformers = transformers_quiet
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-siglip"
    folder.mkdir()
    build_siglip_tokenizer(folder)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
    config = transformers.SiglipConfig(
        text_config={**NARROW, "vocab_size": vocab, "max_position_embeddings": 64},
        vision_config={**NARROW, "image_size": 224, "patch_size": 32},
    )
    random_model(torch, transformers.SiglipModel, config, seed=2).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(SIGLIP_PREPROCESSOR))
    return folder


@pytest.fixture(scope="session")
def cpu_runtime(runtime: RuntimeSettings, tmp_path_factory: Any) -> RuntimeSettings:
    """On the CPU so results compare, with a private cache: the weight digests of this
    session's temporary checkpoints should not pile up in the user's cache."""
    from dataclasses import replace

    return replace(runtime, device="cpu", cache_dir=tmp_path_factory.mktemp("spyglass-cache"))


@pytest.fixture(scope="session")
def export_of(tmp_path_factory: Any) -> Callable[..., Path]:
    """export_of(checkpoint, layout, fixed_batch=None) -> export folder, made once each."""
    from spyglass.encoders.onnx_export import export_onnx

    made: dict[tuple[Path, str, int | None], Path] = {}

    def export(checkpoint: Path, layout: str, fixed_batch: int | None = None) -> Path:
        key = (checkpoint, layout, fixed_batch)
        if key not in made:
            target = tmp_path_factory.mktemp("export") / f"{checkpoint.name}-{layout}"
            made[key] = export_onnx(
                checkpoint,
                target,
                layout=layout,
                fixed_batch=fixed_batch,  # type: ignore[arg-type]
            )
        return made[key]

    return export


@pytest.fixture(scope="session")
def encoder_for(cpu_runtime: RuntimeSettings) -> Callable[[Path], Encoder]:
    """encoder_for(folder) -> the encoder Spyglass loads for it, loaded once each."""
    loaded: dict[Path, Encoder] = {}

    def load(folder: Path) -> Encoder:
        if folder not in loaded:
            loaded[folder] = load_encoder(resolve_spec(str(folder)), cpu_runtime)
        return loaded[folder]

    return load
