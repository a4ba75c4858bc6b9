"""How the terms of a query become one ranking: selectable methods.

A method receives the query's terms already embedded (every space an image term has,
the text space for a text term) and ranks the index. Methods register by name;
``default`` is an alias chosen from the evaluation results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from spyglass.encoders.base import Encoder, EncoderInfo
from spyglass.errors import InvalidQuery
from spyglass.store.base import FilterableStore, Neighbours, VectorStore
from spyglass.store.index import Index, crop_space

if TYPE_CHECKING:
    from spyglass.query.filters import Filters


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
    #: Ids of the images marked good / bad (their vectors are above).
    positive_ids: tuple[int, ...] = ()
    negative_ids: tuple[int, ...] = ()
    #: Score an image by its best crop too, where the index has crop vectors.
    use_crops: bool = True
    #: The encoder that built the index, for methods that embed more text (PDV,
    #: Pic2Word) or ask it for optional capabilities; ``None`` where none is at hand.
    encoder: Encoder | None = None
    #: The metadata filters of the query (``None``: none). Every search goes through
    #: :meth:`search`, which hands them to a store that applies them itself
    #: (:class:`~spyglass.store.base.FilterableStore`), and otherwise searches among the
    #: ids they keep (:attr:`among`).
    filters: Filters | None = None
    #: Computes the ids the filters keep, when first asked for (:attr:`among`).
    allowed: Callable[[], np.ndarray | None] | None = None
    _among: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def among(self) -> np.ndarray | None:
        """(n,) int64 sorted ids of the images the filters keep; ``None``: every image.
        Read from the catalogue when first asked for: a store that applies the filters
        itself never needs them (feedback's random negatives do)."""
        if self._among is None and self.allowed is not None:
            self._among = self.allowed()
        return self._among

    @property
    def has_text(self) -> bool:
        return any(t.kind == "text" for t in self.terms)

    @property
    def has_image(self) -> bool:
        return any(t.kind == "image" for t in self.terms) or any(
            len(v) for v in self.positives.values()
        )

    def search(self, space: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k best images for one query vector in one space.

        Where the index holds crop vectors for the space (``spyglass index --crops``) and
        ``use_crops`` is on, an image scores max(whole image, best crop)."""
        query = vector.reshape(1, -1).astype(np.float32)
        ranking = self._filtered_search(self.index.stores[space], query, k).row(0)
        crops = self.index.stores.get(crop_space(space))
        if not self.use_crops or crops is None:
            return ranking
        best = dict(ranking)
        for owner, score in self._filtered_search(crops, query, k).row(0):
            if score > best.get(owner, -np.inf):
                best[owner] = score
        return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]

    def _filtered_search(self, store: VectorStore, query: np.ndarray, k: int) -> Neighbours:
        filters = self.filters
        if (
            filters is None
            or filters.empty
            or not isinstance(store, FilterableStore)
            or not store.filters_inside(filters)
        ):
            return store.search(query, k, among=self.among)
        return store.search(query, k, where=filters)


def filters_inside(store: VectorStore, filters: Filters) -> bool:
    """Whether ``store`` applies ``filters`` inside its own search."""
    return isinstance(store, FilterableStore) and store.filters_inside(filters)


#: A ranking: (image id, score) pairs, best first.
Ranking = list[tuple[int, float]]
MethodFunction = Callable[[RankContext, int], Ranking]

#: The kinds of query a method can answer; the evaluation picks methods by these.
TASKS = ("text", "image", "image+text", "feedback")

_METHODS: dict[str, MethodFunction] = {}
_ABOUT: dict[str, str] = {}
_TASKS: dict[str, tuple[str, ...]] = {}
#: The baseline every tool uses, and the default for text-only and image-only queries.
DEFAULT_METHOD = "sum"
#: What the method name "default" means for each kind of query: the winners of the
#: evaluations in docs/methods.md (composed: sum; marks: SVM + score fusion).
DEFAULT_METHODS = {
    "text": DEFAULT_METHOD,
    "image": DEFAULT_METHOD,
    "image+text": "sum",
    "feedback": "svm-fusion",
}


def register(
    name: str, about: str, tasks: tuple[str, ...] = TASKS
) -> Callable[[MethodFunction], MethodFunction]:
    """Register a ranking method under ``name`` for the given query ``tasks``."""
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {TASKS}")

    def wrap(function: MethodFunction) -> MethodFunction:
        _METHODS[name] = function
        _ABOUT[name] = about
        _TASKS[name] = tuple(tasks)
        return function

    return wrap


def method_names(task: str | None = None) -> dict[str, str]:
    """Registered method name -> one line about it (only those for ``task`` if given)."""
    _load_method_modules()
    return {n: a for n, a in _ABOUT.items() if task is None or task in _TASKS[n]}


#: Modules that register more methods; imported on first use so that importing the
#: engine stays light. A module listed here that does not exist yet is passed over.
METHOD_MODULES = (
    "spyglass.query.compose",
    "spyglass.query.feedback",
)


def _load_method_modules() -> None:
    import importlib

    for module in METHOD_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def resolve_method(name: str, task: str) -> str:
    """The registered method a name stands for: ``default`` means the task's winner."""
    return DEFAULT_METHODS.get(task, DEFAULT_METHOD) if name == "default" else name


def get_method(name: str, task: str = "text") -> MethodFunction:
    _load_method_modules()
    resolved = resolve_method(name, task)
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


def sum_query(context: RankContext, marks: bool = True) -> tuple[str, np.ndarray]:
    """The space and (dims,) float32 unit vector of q = normalize(sum_i w_i v_i).

    Image-only queries live in the encoder's image space, anything with text in the
    joint space. With ``marks``, images marked good or bad join the sum with weight
    +1 / -1 (what ``sum`` searches with). Without, only the query's own terms count
    (the images marked good stand in when there are no terms): the query every
    result's ``score`` is the cosine with, whatever method ranked it and whatever was
    marked."""
    terms = list(context.terms)
    space = context.info.text_space if context.has_text else context.info.image_space
    for sign, marked in ((1.0, context.positives), (-1.0, context.negatives)):
        if not marks and (context.terms or sign < 0):
            continue
        for vector in marked.get(space, np.zeros((0, 1))):
            terms.append(EmbeddedTerm("image", sign, {space: vector}))
    return space, weighted_sum(terms, space)


@register("sum", "weighted sum of unit vectors (image-only space for image-only queries)")
def rank_sum(context: RankContext, k: int) -> Ranking:
    """The baseline every tool uses: q = normalize(sum_i w_i v_i) (:func:`sum_query`).

    Image-only queries search the encoder's image space (for the bundled model, pooled
    CNN features, much better for "more like this"); anything with text searches the
    joint space where text and images meet. Images marked good or bad join the sum
    with weight +1 / -1 (Rocchio with alpha = beta = gamma = 1).
    """
    space, query = sum_query(context)
    return context.search(space, query, k)
