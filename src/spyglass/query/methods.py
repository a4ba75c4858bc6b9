"""How the terms of a query become one ranking: selectable methods.

A method receives the query's terms already embedded (every space an image term has,
the text space for a text term) and ranks the index. Methods register by name;
``default`` is an alias chosen from the evaluation results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spyglass.encoders.base import EncoderInfo
from spyglass.errors import InvalidQuery
from spyglass.store.index import Index


@dataclass(frozen=True)
class EmbeddedTerm:
    """A query term with its unit vectors: {space: (dims,) float32}."""

    kind: str  # "text" or "image"
    weight: float
    vectors: dict[str, np.ndarray]
    label: str = ""


@dataclass
class RankContext:
    """What a method may use: the index, the encoder's spaces, the embedded terms, and
    the vectors of images marked good or bad."""

    index: Index
    info: EncoderInfo
    terms: list[EmbeddedTerm]
    positives: dict[str, np.ndarray] = field(default_factory=dict)  # space -> (p, dims)
    negatives: dict[str, np.ndarray] = field(default_factory=dict)  # space -> (n, dims)

    @property
    def has_text(self) -> bool:
        return any(t.kind == "text" for t in self.terms)

    @property
    def has_image(self) -> bool:
        return any(t.kind == "image" for t in self.terms) or any(
            len(v) for v in self.positives.values()
        )

    def search(self, space: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k best images for one query vector in one space."""
        store = self.index.stores[space]
        neighbours = store.search(vector.reshape(1, -1).astype(np.float32), k)
        return neighbours.row(0)


#: A ranking: (image id, score) pairs, best first.
Ranking = list[tuple[int, float]]
MethodFunction = Callable[[RankContext, int], Ranking]

_METHODS: dict[str, MethodFunction] = {}
_ABOUT: dict[str, str] = {}
#: Which registered method the name "default" means.
DEFAULT_METHOD = "sum"


def register(name: str, about: str) -> Callable[[MethodFunction], MethodFunction]:
    def wrap(function: MethodFunction) -> MethodFunction:
        _METHODS[name] = function
        _ABOUT[name] = about
        return function

    return wrap


def method_names() -> dict[str, str]:
    """Registered method name -> one line about it."""
    return dict(_ABOUT)


def get_method(name: str) -> MethodFunction:
    resolved = DEFAULT_METHOD if name == "default" else name
    if resolved not in _METHODS:
        known = ", ".join(sorted(_METHODS))
        raise InvalidQuery(f"unknown method '{name}': choose one of default, {known}")
    return _METHODS[resolved]


def weighted_sum(terms: list[EmbeddedTerm], space: str) -> np.ndarray:
    """sum_i w_i * v_i over the terms that have a vector in ``space``, unit-normalised.

    With unit v_i this ranks exactly as the weighted average of unit vectors does."""
    parts = [t.weight * t.vectors[space] for t in terms if space in t.vectors]
    if not parts:
        raise InvalidQuery(f"no query term can be embedded in the {space} space")
    total = np.sum(parts, axis=0)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise InvalidQuery("the query's terms cancel each other out")
    return (total / norm).astype(np.float32)


@register("sum", "weighted sum of unit vectors (image-only space for image-only queries)")
def rank_sum(context: RankContext, k: int) -> Ranking:
    """The baseline every tool uses: q = normalize(sum_i w_i v_i).

    Image-only queries search the encoder's image space (for the bundled model, pooled
    CNN features, much better for "more like this"); anything with text searches the
    joint space where text and images meet. Images marked good or bad join the sum
    with weight +1 / -1 (Rocchio with alpha = beta = gamma = 1).
    """
    terms = list(context.terms)
    only_images = not context.has_text
    space = context.info.image_space if only_images else context.info.text_space
    for sign, marked in ((1.0, context.positives), (-1.0, context.negatives)):
        for vector in marked.get(space, np.zeros((0, 1))):
            terms.append(EmbeddedTerm("image", sign, {space: vector}))
    return context.search(space, weighted_sum(terms, space), k)
