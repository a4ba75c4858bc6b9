"""What a query is made of, and how people write one.

A query is a list of weighted terms, each a text or an image; a negative weight pushes
results away from a term. The written form follows rclip's, with ``+`` and ``-`` as
stand-alone operators and an optional ``weight:`` prefix::

    "2:golden retriever" + ./pool.jpg - fruit
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from spyglass.errors import InvalidQuery
from spyglass.images import IMAGE_EXTENSIONS, Region
from spyglass.query.filters import Filters


@dataclass(frozen=True)
class TextTerm:
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class ImageTerm:
    """An image by file path, indexed image id, or raw bytes (an upload): exactly one."""

    path: str | None = None
    image_id: int | None = None
    data: bytes | None = field(default=None, repr=False)
    weight: float = 1.0
    region: Region | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.path, self.image_id, self.data))
        if given != 1:
            raise InvalidQuery("an image term needs exactly one of a path, an id or image data")
        if self.region is not None:
            check_region(self.region)

    def describe(self) -> str:
        if self.path is not None:
            return self.path
        if self.image_id is not None:
            return f"image #{self.image_id}"
        return "uploaded image"


Term = TextTerm | ImageTerm
#: How a browse may be ordered (by date), the default first.
BROWSE_ORDERS = ("newest", "oldest")


@dataclass(frozen=True)
class Query:
    """A search: weighted terms, how many results, and optional relevance feedback.

    ``positives`` and ``negatives`` are indexed image ids the user marked good or bad;
    ``method`` names how terms are combined (see :mod:`spyglass.query.methods`);
    ``rerank`` names a re-ranking of the top results. ``default`` for either means
    the winner of the evaluations for the query's :attr:`task`.
    """

    terms: tuple[Term, ...] = ()
    k: int = 20
    offset: int = 0
    min_score: float | None = None
    method: str = "default"
    positives: tuple[int, ...] = ()
    negatives: tuple[int, ...] = ()
    rerank: str = "default"
    #: Metadata filters: only images they keep are searched. With filters and no terms
    #: or marks, the query browses the kept images by date (:attr:`browsing`).
    filters: Filters = field(default_factory=Filters)
    #: The order of a browse (:attr:`browsing`): ``newest`` (None: the default) or
    #: ``oldest`` first by date, ties by id. A search by terms or marks is ordered by
    #: similarity: a sort given with one is refused, not ignored.
    sort: str | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InvalidQuery(f"the number of results must be at least 1, not {self.k}")
        if self.offset < 0:
            raise InvalidQuery(f"offset must be 0 or more, not {self.offset}")
        if not self.terms and not self.positives and self.filters.empty:
            raise InvalidQuery(
                "empty query: give a text, an image, images marked good, or filters to browse"
            )
        if self.terms and not any(t.weight > 0 for t in self.terms) and not self.positives:
            raise InvalidQuery("a query needs at least one term with a positive weight")
        if self.sort is not None:
            if self.sort not in BROWSE_ORDERS:
                raise InvalidQuery(f"sort: {self.sort!r} is not one of {', '.join(BROWSE_ORDERS)}")
            if not self.browsing:
                raise InvalidQuery(
                    "sort orders filters-only browsing by date: a search by text, image or "
                    "marks is ordered by similarity (leave sort out)"
                )
        both = sorted(set(self.positives) & set(self.negatives))
        if both:
            listed = ", ".join(f"#{i}" for i in both[:5]) + (" ..." if len(both) > 5 else "")
            raise InvalidQuery(f"an image cannot be marked both good and bad: {listed}")

    @property
    def browsing(self) -> bool:
        """Filters alone: the kept images listed by date, newest first (or oldest,
        :attr:`sort`)."""
        return not self.terms and not self.positives and not self.negatives

    @property
    def oldest_first(self) -> bool:
        return self.sort == "oldest"

    @property
    def texts(self) -> list[TextTerm]:
        return [t for t in self.terms if isinstance(t, TextTerm)]

    @property
    def images(self) -> list[ImageTerm]:
        return [t for t in self.terms if isinstance(t, ImageTerm)]

    def with_terms(self, terms: Sequence[Term]) -> Query:
        return replace(self, terms=tuple(terms))

    @property
    def task(self) -> str:
        """The kind of query, which decides what ``default`` method and re-ranking mean:
        ``feedback`` (images marked good or bad), ``image+text``, ``image`` or ``text``."""
        if self.positives or self.negatives:
            return "feedback"
        has_image = any(isinstance(t, ImageTerm) and t.weight > 0 for t in self.terms)
        has_text = any(isinstance(t, TextTerm) and t.weight > 0 for t in self.terms)
        if has_image and has_text:
            return "image+text"
        return "image" if has_image else "text"


def check_region(region: Sequence[float]) -> Region:
    """Validate a (left, top, right, bottom) region in fractions of the image."""
    if len(region) != 4:
        raise InvalidQuery("a region is four numbers: left, top, right, bottom")
    left, top, right, bottom = (float(v) for v in region)
    if not all(0.0 <= v <= 1.0 for v in (left, top, right, bottom)):
        raise InvalidQuery(
            "a region must lie inside the image: each of left, top, right, bottom "
            "is a fraction between 0 and 1"
        )
    if right - left < 0.01 or bottom - top < 0.01:
        raise InvalidQuery("a region must have left < right and top < bottom")
    return (left, top, right, bottom)


_OPERATOR = re.compile(r"(?:^|\s)([+-])(?=\s|$)")
_WEIGHT = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+):(?!\d)")


def parse_terms(text: str, *, cwd: Path | None = None) -> list[Term]:
    """``"2:golden retriever" + ./pool.jpg - fruit`` -> weighted text and image terms.

    ``+`` and ``-`` are operators only when they stand alone, so "t-shirt" is one word.
    A term is an image when it names an existing image file (or looks like a path to
    one: starts with ``./``, ``../``, ``/`` or ``~`` and ends in an image extension).
    """
    pieces: list[tuple[str, str]] = []
    sign = "+"
    position = 0
    for match in _OPERATOR.finditer(text):
        pieces.append((sign, text[position : match.start()]))
        sign = match.group(1)
        position = match.end()
    pieces.append((sign, text[position:]))

    terms: list[Term] = []
    for sign, raw in pieces:
        body = raw.strip().strip('"').strip("'").strip()
        if not body:
            continue
        weight = 1.0
        prefix = _WEIGHT.match(body)
        if prefix:
            weight = float(prefix.group(1))
            body = body[prefix.end() :].strip().strip('"').strip("'").strip()
            if not body:
                raise InvalidQuery(f"weight {prefix.group(1)} is not followed by a term")
        if sign == "-":
            weight = -weight
        if _looks_like_image_path(body, cwd):
            terms.append(ImageTerm(path=body, weight=weight))
        else:
            terms.append(TextTerm(text=body, weight=weight))
    return terms


def _looks_like_image_path(body: str, cwd: Path | None) -> bool:
    suffix = Path(body).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        return False
    if body.startswith(("./", "../", "/", "~")):
        return True
    candidate = Path(body).expanduser()
    if cwd is not None and not candidate.is_absolute():
        candidate = cwd / candidate
    return candidate.is_file()
