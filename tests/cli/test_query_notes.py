"""A query longer than the text model reads is cut by the model; the person hears of it
(one note on stderr), from an engine check that the HTTP API can share."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.cli import main
from spyglass.encoders.base import CountsTokens
from spyglass.encoders.tokenize import TextTokenizer
from spyglass.engine import Spyglass
from spyglass.query.terms import Query, TextTerm
from spyglass.settings import RuntimeSettings

#: About 100 KB: 20,000 words of one token each.
LONG_QUERY = "dog " * 25_000


def test_a_100_kb_query_gets_one_note_on_stderr(photo_index: Path) -> None:
    result = CliRunner().invoke(
        main, ["search", LONG_QUERY, "--index", str(photo_index), "--json", "-k", "2"]
    )
    assert result.exit_code == 0, result.output
    # [CLS] + 25,000 words + [SEP]
    assert result.stderr == "note: the query was cut at 256 tokens (it has 25,002)\n"
    assert len(json.loads(result.stdout)) == 2


def test_a_short_query_gets_no_note(photo_index: Path) -> None:
    result = CliRunner().invoke(main, ["search", "a dog", "--index", str(photo_index)])
    assert result.exit_code == 0 and result.stderr == ""


def test_the_bundled_model_counts_as_it_cuts(bundled: object) -> None:
    assert isinstance(bundled, CountsTokens)
    assert bundled.max_text_tokens == 256
    assert bundled.count_tokens("a dog") == 4  # [CLS] a dog [SEP]
    # The vector of a long text is that of its first 256 tokens: the count is of the cut.
    words = "alpha beta gamma " * 200
    assert bundled.count_tokens(words) == 602  # uncut: [CLS] + 600 words + [SEP]
    cut = bundled.embed_texts([words])[0]
    kept = bundled.embed_texts([" ".join(words.split()[:254])])[0]
    assert float(cut @ kept) > 0.9999


def test_engine_notes_name_the_text_when_there_are_several(
    photo_index: Path, runtime: RuntimeSettings
) -> None:
    query = Query((TextTerm("a dog"), TextTerm("word " * 300, 0.5), TextTerm("cat " * 2, -0.5)))
    with Spyglass.open(photo_index, runtime=runtime) as engine:
        assert engine.query_notes(query) == [
            'the text "word word word word word word word word…" was cut at 256 tokens (it has 302)'
        ]
        assert engine.query_notes(Query((TextTerm("word " * 300),))) == [
            "the query was cut at 256 tokens (it has 302)"
        ]


@pytest.fixture(scope="module")
def clip_tokenizer_file(data_root: Path) -> Path:
    """The real OpenAI CLIP ViT-B/32 tokenizer.json (the test models folder holds it)."""
    root = os.environ.get("SPYGLASS_TEST_MODELS")
    folder = (Path(root) if root else data_root.parent / "models") / (
        "clip-vit-base-patch32-noweights"
    )
    return folder / "tokenizer.json"


def test_the_clip_tokenizer_counts_past_its_77(clip_tokenizer_file: Path) -> None:
    tokenizer = TextTokenizer(clip_tokenizer_file, 77, "<|endoftext|>")
    assert tokenizer.count_tokens("word " * 200) == 202  # start + 200 + end
    assert tokenizer.count_tokens("a photo") == 4
    _, mask = tokenizer(["word " * 200])
    assert mask.sum() == 77  # what it encodes is still cut


def test_the_siglip_cleaning_is_applied_before_counting(clip_tokenizer_file: Path) -> None:
    tokenizer = TextTokenizer(
        clip_tokenizer_file, 77, "<|endoftext|>", cleaning="transformers-siglip"
    )
    assert tokenizer.count_tokens("!!! ... ,,,") == 2  # punctuation cleaned away


def test_hf_and_onnx_encoders_count_tokens(
    tmp_path_factory: pytest.TempPathFactory, clip_tokenizer_file: Path, runtime: RuntimeSettings
) -> None:
    """A narrow CLIP (the real ViT-B/32 config and tokenizer, random weights) loaded by
    transformers and, exported, by onnxruntime: both count as their tokenizer cuts."""
    import shutil
    from dataclasses import replace

    import torch
    import transformers

    from spyglass.encoders import load_encoder
    from spyglass.encoders.onnx_export import export_onnx

    files = clip_tokenizer_file.parent
    config = transformers.CLIPConfig.from_pretrained(files).to_dict()
    narrow = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    config["text_config"].update(narrow, num_attention_heads=2)
    config["vision_config"].update(narrow, num_attention_heads=2)
    config["projection_dim"] = 16
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "narrow-clip"
    transformers.CLIPModel(transformers.CLIPConfig(**config)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.json", "merges.txt", "preprocessor_config.json"):  # fmt: skip
        shutil.copy(files / name, folder / name)
    cpu = replace(runtime, device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    hf = load_encoder(str(folder), cpu)
    exported = export_onnx(folder, tmp_path_factory.mktemp("onnx") / "narrow", layout="xenova")
    onnx = load_encoder(str(exported), cpu)
    for encoder in (hf, onnx):
        assert isinstance(encoder, CountsTokens)
        assert encoder.max_text_tokens == 77
        assert encoder.count_tokens("word " * 200) == 202
        assert encoder.count_tokens("a photo of a dog") == 7
