"""Pic2Word: an image as a word the text encoder can read.

Saito, Sohn, Zhang, Li, Lee, Saenko and Pfister, "Pic2Word: Mapping Pictures to Words
for Zero-shot Composed Image Retrieval", CVPR 2023. A small network f maps an image's
embedding v to a pseudo word s = f(v), a vector in the text encoder's token-input
space. Trained on unlabelled images only, with both encoders frozen: for a batch of
images, the prompt "a photo of *" is encoded with s_i as the input vector of ``*``,
giving t_i = T("a photo of", s_i), and a symmetric contrastive loss pulls t_i toward the
image's own joint embedding u_i and away from the others':

    L = -1/2B sum_i [ log softmax_j(t_i . u_j / tau)_i + log softmax_j(u_i . t_j / tau)_i ]

At query time "a photo of * as a sketch" is then a sentence about *this* image.

The network is the paper's three-layer MLP (hidden width 512, ReLU, dropout 0.1). Its
input is the image's unit vectors in the chosen spaces, concatenated (for the bundled
model: the 1,280-d pooled CNN features and the 384-d joint vector), read from the index:
nothing is re-embedded. The trained mapping lives in the index directory
(``DIR/models/pic2word.npz``: weights plus a JSON record of how it was trained) and
runs in NumPy; the text encoder runs in onnxruntime.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from spyglass.encoders.base import Encoder, EncoderInfo
from spyglass.errors import IndexEmpty, InvalidQuery, ModelError

if TYPE_CHECKING:
    from spyglass.query.methods import RankContext
    from spyglass.store.index import Index

MAPPING_FILE = Path("models") / "pic2word.npz"
#: The prompt the mapping is trained with (Pic2Word's).
TRAINING_PROMPT = "a photo of *"
#: How a query's text joins the pseudo word when the text holds no ``*`` itself.
QUERY_PROMPT = "a photo of * {text}"


class PseudoWordText(Protocol):
    """A text encoder that reads prompts holding one ``placeholder`` whose input vector
    is given instead of looked up (see :mod:`spyglass.encoders.bundled.text_embeds`)."""

    placeholder: str
    word_dims: int

    def tokenize(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> ids (n, L) int64, attention mask (n, L) int64, placeholder positions (n,)."""
        ...

    def embed(self, prompts: Sequence[str], words: np.ndarray) -> np.ndarray:
        """Prompts (n) and pseudo words (n, word_dims) float32 -> (n, dims) unit rows."""
        ...

    def token_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Token ids (...) -> (..., word_dims) float32 input vectors."""
        ...

    def torch_model(self) -> Any:
        """A frozen torch module: (inputs_embeds (n, L, word_dims), attention_mask
        (n, L)) -> (n, dims) unit embeddings."""
        ...


@runtime_checkable
class PseudoWordEncoder(Protocol):
    """An encoder whose text model can take a pseudo word (needed by Pic2Word)."""

    def pseudo_word_text(self) -> PseudoWordText: ...


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    #: Softmax temperature tau of the contrastive loss.
    temperature: float = 0.05
    hidden: int = 512
    dropout: float = 0.1
    #: Train on at most this many images (a random sample); ``None``: all.
    max_images: int | None = None
    seed: int = 0
    #: Spaces whose vectors feed the network; ``None``: the encoder's image space and
    #: text space.
    input_spaces: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Pic2WordMapping:
    """f(x) = W3 relu(W2 relu(W1 x + b1) + b2) + b3, x = the image's unit vectors in
    ``input_spaces`` concatenated. Weights W (out, in) float32, biases (out,) float32."""

    input_spaces: tuple[str, ...]
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    #: How it was trained: encoder name and version, images, epochs, losses, seconds.
    record: dict[str, Any] = field(default_factory=dict)

    def words(self, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
        """{space: (n, dims) float32} -> (n, word_dims) float32 pseudo words."""
        missing = [s for s in self.input_spaces if s not in vectors]
        if missing:
            raise InvalidQuery(f"the query image has no vector in the {missing[0]} space")
        x = np.concatenate(
            [np.atleast_2d(np.asarray(vectors[s], np.float32)) for s in self.input_spaces], axis=1
        )
        for depth, (weight, bias) in enumerate(self.layers):
            x = x @ weight.T + bias
            if depth < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        return x.astype(np.float32)

    def save(self, path: Path) -> None:
        """Write atomically: a search never reads half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for i, (weight, bias) in enumerate(self.layers):
            arrays[f"weight{i}"] = weight
            arrays[f"bias{i}"] = bias
        record = {**self.record, "input_spaces": list(self.input_spaces)}
        arrays["record"] = np.array(json.dumps(record))
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(temporary, **arrays)  # type: ignore[arg-type]
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> Pic2WordMapping:
        with np.load(path, allow_pickle=False) as data:
            record = json.loads(str(data["record"]))
            count = sum(1 for name in data.files if name.startswith("weight"))
            layers = tuple(
                (data[f"weight{i}"].astype(np.float32), data[f"bias{i}"].astype(np.float32))
                for i in range(count)
            )
        return cls(tuple(record["input_spaces"]), layers, record)


def mapping_path(index_folder: Path) -> Path:
    return Path(index_folder) / MAPPING_FILE


def load_mapping(index_folder: Path, info: EncoderInfo) -> Pic2WordMapping:
    """The mapping trained for this index. Raises :class:`InvalidQuery` (with the
    command that fixes it) when there is none or it was trained for another model."""
    path = mapping_path(index_folder)
    train = f"spyglass train pic2word --index {index_folder}"
    if not path.is_file():
        raise InvalidQuery(
            f"method pic2word needs a mapping trained for this index; train it with: {train}"
        )
    try:
        mapping = Pic2WordMapping.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidQuery(
            f"the Pic2Word mapping {path} cannot be read ({exc}); retrain it with: {train}"
        ) from exc
    if (mapping.record.get("model"), mapping.record.get("model_version")) != (
        info.name,
        info.version,
    ):
        raise InvalidQuery(
            f"the Pic2Word mapping in {path.parent} was trained for another model; "
            f"retrain it with: {train}"
        )
    return mapping


def _text_of(encoder: Encoder | None, name: str) -> PseudoWordText:
    if not isinstance(encoder, PseudoWordEncoder):
        raise InvalidQuery(
            f"method pic2word needs a model whose text encoder can read a pseudo word; "
            f"'{name}' cannot: use --method slerp or late-fusion"
        )
    return encoder.pseudo_word_text()


def pic2word_prompt(words: str, placeholder: str = "*") -> str:
    """The prompt for a query text: the text itself when it holds the placeholder, else
    "a photo of * <text>"."""
    if placeholder in words:
        return words
    return QUERY_PROMPT.replace("*", placeholder).format(text=words.strip())


def pic2word_query(
    context: RankContext, reference: Mapping[str, np.ndarray], words: str
) -> np.ndarray:
    """The (dims,) unit query vector of Pic2Word for a reference image {space: (dims,)}
    and the modifying text ``words``."""
    text = _text_of(context.encoder, context.info.name)
    mapping = load_mapping(context.index.folder, context.info)
    word = mapping.words({s: np.asarray(v).reshape(1, -1) for s, v in reference.items()})
    (query,) = text.embed([pic2word_prompt(words, text.placeholder)], word)
    return np.asarray(query, np.float32)


# -- training ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingReport:
    path: Path
    images: int
    epochs: int
    #: Mean training loss of each epoch.
    losses: list[float]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "images": self.images,
            "epochs": self.epochs,
            "losses": [round(x, 5) for x in self.losses],
            "seconds": round(self.seconds, 2),
        }


#: Called after each epoch with (epoch number from 1, mean loss).
EpochCallback = Callable[[int, float], None]


def _training_vectors(
    index: Index, spaces: Sequence[str], target_space: str, settings: TrainingSettings
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Inputs (n, sum of dims) and targets (n, dims) float32 for the indexed images."""
    owners = index.stores[target_space].visible_owners()
    if len(owners) < 2:
        raise IndexEmpty(
            f"the index at {index.folder} has {len(owners)} image(s); "
            "Pic2Word needs at least 2 to train"
        )
    if settings.max_images is not None and len(owners) > settings.max_images:
        owners = np.sort(
            np.random.default_rng(settings.seed).choice(owners, settings.max_images, replace=False)
        )
    parts = []
    for space in spaces:
        if space not in index.stores:
            raise InvalidQuery(f"the index has no {space} space to train Pic2Word on")
        parts.append(index.stores[space].fetch(owners).astype(np.float32))
    targets = index.stores[target_space].fetch(owners).astype(np.float32)
    return np.concatenate(parts, axis=1), targets, [p.shape[1] for p in parts]


def train_pic2word(
    index: Index,
    encoder: Encoder,
    settings: TrainingSettings | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainingReport:
    """Train the mapping on the images of ``index`` and save it in the index directory.

    Cost with the bundled model: about 16 s of CPU time per thousand images per epoch
    (3,000 Fashion images x 5 epochs took 3 min 55 s of CPU time), nearly all of it
    in the text model's backward pass."""
    from spyglass.encoders.bundled.prepare import _require_torch

    settings = settings or TrainingSettings()
    if settings.epochs < 1 or settings.batch_size < 2:
        raise InvalidQuery("Pic2Word training needs at least 1 epoch and a batch of 2 or more")
    if not isinstance(encoder, PseudoWordEncoder):
        raise ModelError(
            f"model '{encoder.info.name}' has no text encoder that can read a pseudo word; "
            "Pic2Word cannot be trained for it"
        )
    torch = _require_torch()
    started = time.perf_counter()
    info = encoder.info
    spaces = settings.input_spaces or tuple(dict.fromkeys((info.image_space, info.text_space)))
    inputs, targets, widths = _training_vectors(index, spaces, info.text_space, settings)

    torch.manual_seed(settings.seed)
    text = encoder.pseudo_word_text()
    text_model = text.torch_model()
    ids, mask, slots = text.tokenize([TRAINING_PROMPT])
    slot = int(slots[0])
    prompt = torch.from_numpy(text.token_vectors(ids))  # (1, L, word_dims)
    mask_row = torch.from_numpy(mask)
    network = torch.nn.Sequential(
        torch.nn.Linear(inputs.shape[1], settings.hidden),
        torch.nn.Dropout(settings.dropout),
        torch.nn.ReLU(),
        torch.nn.Linear(settings.hidden, settings.hidden),
        torch.nn.Dropout(settings.dropout),
        torch.nn.ReLU(),
        torch.nn.Linear(settings.hidden, text.word_dims),
    )
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    x_all = torch.from_numpy(inputs)
    u_all = torch.from_numpy(targets)
    generator = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    for epoch in range(1, settings.epochs + 1):
        network.train()
        order = torch.randperm(len(x_all), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            if len(batch) < 2:
                continue  # a contrastive loss needs a negative
            words = network(x_all[batch]).unsqueeze(1)  # (B, 1, word_dims)
            expanded = prompt.expand(len(batch), -1, -1)
            embeds = torch.cat([expanded[:, :slot], words, expanded[:, slot + 1 :]], dim=1)
            t = text_model(embeds, mask_row.expand(len(batch), -1))
            logits = t @ u_all[batch].T / settings.temperature
            labels = torch.arange(len(batch))
            loss = (
                torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)
            ) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        losses.append(total / max(batches, 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])

    linear = [m for m in network if isinstance(m, torch.nn.Linear)]
    layers = tuple(
        (m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in linear
    )
    seconds = time.perf_counter() - started
    record = {
        "model": info.name,
        "model_version": info.version,
        "input_widths": widths,
        "prompt": TRAINING_PROMPT,
        "images": len(inputs),
        "epochs": settings.epochs,
        "losses": losses,
        "seconds": round(seconds, 2),
        "settings": {k: v for k, v in settings.__dict__.items() if k not in ("input_spaces",)},
        "trained_at": time.time(),
    }
    path = mapping_path(index.folder)
    Pic2WordMapping(tuple(spaces), layers, record).save(path)
    return TrainingReport(path, len(inputs), settings.epochs, losses, seconds)
