"""Text to fixed-length token ids with the `tokenizers` library (fast, no PyTorch).

Every text is truncated and padded to the model's context length (77 for CLIP, 64 for
SigLIP): SigLIP pools the last position so it must see full-length input, exports with
a static sequence axis need it, and for CLIP the padding after the end token changes
nothing (its attention is causal).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spyglass.encoders.checkpoint import first_line
from spyglass.errors import ModelError

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPACES = re.compile(r"\s+")


#: Text cleanings a checkpoint may ask for before tokenizing (SigLIP's "canonicalize").
CLEANINGS = ("transformers-siglip", "open_clip-canonicalize")


def canonicalize_text(text: str, cleaning: str) -> str:
    """SigLIP's text cleaning: lower case, ASCII punctuation removed, runs of white space
    collapsed, ends stripped. open_clip first turns underscores into spaces;
    transformers' SiglipTokenizer removes them with the other punctuation."""
    if cleaning == "open_clip-canonicalize":
        text = text.replace("_", " ")
    text = text.lower().translate(_PUNCTUATION)
    return _SPACES.sub(" ", text).strip()


class TextTokenizer:
    """A ``tokenizer.json`` set to truncate and pad to ``context_length`` tokens."""

    def __init__(
        self,
        tokenizer_file: Path,
        context_length: int,
        pad_token: str | None,
        cleaning: str | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise ModelError(
                f"could not read tokenizer {tokenizer_file}: {first_line(exc)}"
            ) from exc
        pad_id = tokenizer.token_to_id(pad_token) if pad_token else None
        if pad_id is None:
            raise ModelError(
                f"pad token {pad_token!r} is not in the vocabulary of {tokenizer_file}"
            )
        # An uncut, unpadded copy made before the cut is set, to count what a text holds.
        counter = Tokenizer.from_str(tokenizer.to_str())
        counter.no_truncation()
        counter.no_padding()
        self._counter = counter
        tokenizer.enable_truncation(max_length=context_length)
        tokenizer.enable_padding(length=context_length, pad_id=pad_id, pad_token=str(pad_token))
        # Configured once here: encode_batch then only reads the tokenizer, so concurrent
        # callers are safe (changing padding per call is what makes tokenizers unsafe).
        self._tokenizer = tokenizer
        self.context_length = context_length
        self.pad_id = pad_id
        if cleaning is not None and cleaning not in CLEANINGS:
            raise ModelError(f"unknown text cleaning {cleaning!r}")
        self.cleaning = cleaning

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """n texts -> (ids, attention mask), both (n, context_length) int64. The mask is 0
        on padding only (CLIP pads with its end token, so ids alone cannot tell)."""
        if self.cleaning:
            texts = [canonicalize_text(t, self.cleaning) for t in texts]
        encodings = self._tokenizer.encode_batch(list(texts))
        shape = (len(encodings), self.context_length)
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(shape)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(shape)
        return ids, mask

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` before the cut at ``context_length`` (start and end tokens
        included, after the same cleaning as :meth:`__call__`)."""
        if self.cleaning:
            text = canonicalize_text(text, self.cleaning)
        return len(self._counter.encode(text).ids)


def token_content(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or ``{"content": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def pad_token_of(tokenizer_config: Mapping[str, Any]) -> str | None:
    """The pad token a tokenizer_config.json names (falling back to its end token)."""
    for key in ("pad_token", "eos_token"):
        token = token_content(tokenizer_config.get(key))
        if token:
            return token
    return None
