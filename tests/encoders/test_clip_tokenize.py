"""The `tokenizers`-based tokenizer of the ONNX encoders against transformers'
CLIPTokenizer built from the original vocab.json + merges.txt (not from tokenizer.json)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spyglass.encoders.tokenize import TextTokenizer, canonicalize_text, pad_token_of
from spyglass.errors import ModelError

TRICKY = [
    "a photo of a cat",
    "",
    "   ",
    "\t\n",
    ".",
    "A  Photo\tOF\na   DOG",
    "Ünïcödé café — naïve façade, 日本語のテキスト, emoji 🐱🚀👩‍👩‍👧",
    "e\u0301te\u0301 (decomposed accents) vs été",
    "zero\u200bwidth and non\u00a0breaking spaces",
    "don't you're it's we'll I'd",
    "numbers 1234567890 and 3.14159",
    "<|startoftext|> a literal special token <|endoftext|>",
    "word " * 200,  # far past 77 tokens: truncated, end token kept
    "x" * 1000,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


@pytest.fixture(scope="module")
def reference(clip_files: Path, transformers_quiet: Any, tmp_path_factory: Any) -> Any:
    """CLIPTokenizer from a folder without tokenizer.json, so that transformers builds it
    from the original BPE files rather than from the file under test."""
    folder = tmp_path_factory.mktemp("clip-bpe-only")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(clip_files / name, folder / name)
    tokenizer = transformers_quiet[1].CLIPTokenizer.from_pretrained(folder)
    assert not (folder / "tokenizer.json").exists()
    return tokenizer


@pytest.fixture(scope="module")
def ours(clip_files: Path) -> TextTokenizer:
    return TextTokenizer(clip_files / "tokenizer.json", 77, "<|endoftext|>")


def reference_ids(reference: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = reference(texts, padding="max_length", max_length=77, truncation=True)
    return np.array(encoded["input_ids"]), np.array(encoded["attention_mask"])


def test_tricky_texts_tokenize_exactly_as_clip_tokenizer(
    reference: Any, ours: TextTokenizer
) -> None:
    ids, mask = ours(TRICKY)
    expected_ids, expected_mask = reference_ids(reference, TRICKY)
    assert ids.shape == (len(TRICKY), 77) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)


def test_long_text_is_cut_to_77_tokens_ending_with_the_end_token(ours: TextTokenizer) -> None:
    ids, mask = ours(["word " * 200])
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407
    assert mask.sum() == 77
    empty_ids, empty_mask = ours([""])
    assert list(empty_ids[0, :2]) == [49406, 49407] and empty_mask.sum() == 2


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=120))
def test_any_text_tokenizes_as_clip_tokenizer(
    reference: Any, ours: TextTokenizer, text: str
) -> None:
    ids, mask = ours([text])
    expected_ids, expected_mask = reference_ids(reference, [text])
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)


def test_canonicalize_follows_each_library() -> None:
    text = "  A_Photo, of   a CAT!!  "
    assert canonicalize_text(text, "transformers-siglip") == "aphoto of a cat"
    assert canonicalize_text(text, "open_clip-canonicalize") == "a photo of a cat"


def test_pad_token_and_unknown_pad(clip_files: Path) -> None:
    assert pad_token_of({"pad_token": {"content": "<pad>"}}) == "<pad>"
    assert pad_token_of({"eos_token": "</s>"}) == "</s>"
    assert pad_token_of({}) is None
    with pytest.raises(ModelError, match="not in the vocabulary"):
        TextTokenizer(clip_files / "tokenizer.json", 77, "<no such token>")
