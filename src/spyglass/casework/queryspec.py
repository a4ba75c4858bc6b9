"""A query as case files and saved searches keep it: enough to run it again and get
the same ranking, and to say what was searched.

Each image term is kept the way the search used it: an indexed image by id (its stored
vectors were searched) with its file's SHA-256; any other image (a file outside the
index, an upload, or an indexed image cut to a region) by a copy of the bytes that
were embedded, with their SHA-256, so that re-running it embeds the same pixels even
when the original file is gone.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spyglass.casework.digests import bytes_sha256, file_digests
from spyglass.casework.duplicates import DuplicateRule
from spyglass.errors import InvalidQuery
from spyglass.images import Region, read_image_file
from spyglass.query.filters import Filters
from spyglass.query.terms import BROWSE_ORDERS, ImageTerm, Query, Term, TextTerm, check_region
from spyglass.store.index import Index

ImageKind = Literal["indexed", "file", "upload"]

#: The most results a recorded search may ask for (`spyglass search -k` goes up to this)
#: and its furthest offset (the HTTP API's paging limit).
MAX_RECORDED_K = 100_000
MAX_RECORDED_OFFSET = 1_000_000


@dataclass(frozen=True)
class RecordedText:
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class RecordedImage:
    """An image term: ``kind`` says where the image came from; ``data`` is a copy of
    the bytes embedded (None for an indexed image searched whole, by its vectors)."""

    kind: ImageKind
    weight: float = 1.0
    sha256: str | None = None
    image_id: int | None = None
    path: str | None = None
    region: Region | None = None
    data: bytes | None = field(default=None, repr=False)

    def to_term(self) -> ImageTerm:
        if self.data is not None:
            return ImageTerm(data=self.data, weight=self.weight, region=self.region)
        if self.image_id is not None:
            return ImageTerm(image_id=self.image_id, weight=self.weight, region=self.region)
        if self.path is not None:
            return ImageTerm(path=self.path, weight=self.weight, region=self.region)
        raise InvalidQuery("a recorded query image has neither a copy, an id nor a path")

    def describe(self) -> str:
        if self.kind == "indexed":
            where = f"image #{self.image_id}" + (f" ({self.path})" if self.path else "")
        elif self.kind == "file":
            where = str(self.path)
        else:
            where = f"uploaded image (sha256 {str(self.sha256)[:12]}…)"
        if self.region is not None:
            where += ", region " + ",".join(f"{v:.3f}" for v in self.region)
        return where


RecordedTerm = RecordedText | RecordedImage


@dataclass(frozen=True)
class SearchSpec:
    """Everything that decides a ranking. ``filters`` is the metadata filters as
    :meth:`~spyglass.query.filters.Filters.to_json` writes them (``{}``: none)."""

    terms: tuple[RecordedTerm, ...]
    k: int = 10
    offset: int = 0
    min_score: float | None = None
    method: str = "default"
    rerank: str = "default"
    positives: tuple[int, ...] = ()
    negatives: tuple[int, ...] = ()
    #: Near-duplicates collapsed to their best member, by this rule (None: not).
    collapse: DuplicateRule | None = None
    filters: dict[str, Any] = field(default_factory=dict)
    #: A browse's order by date (``newest`` or ``oldest``); None: the default, newest.
    sort: str | None = None

    def to_query(self) -> Query:
        terms: list[Term] = [
            TextTerm(t.text, t.weight) if isinstance(t, RecordedText) else t.to_term()
            for t in self.terms
        ]
        return Query(
            tuple(terms),
            k=self.k,
            offset=self.offset,
            min_score=self.min_score,
            method=self.method,
            positives=self.positives,
            negatives=self.negatives,
            rerank=self.rerank,
            filters=Filters.from_json(self.filters),
            sort=self.sort,
        )

    def marks(self) -> dict[int, str]:
        """Image id -> "good" or "bad"."""
        marks = {i: "good" for i in self.positives}
        marks.update({i: "bad" for i in self.negatives})
        return marks

    def describe(self) -> str:
        """The query in words, as the server's summary line says it."""
        words = []
        for term in self.terms:
            if isinstance(term, RecordedText):
                text = f'"{term.text}"'
                if term.weight < 0:
                    words.append(f"not {text}" + _times(-term.weight, 0.5))
                else:
                    words.append(text + _times(term.weight, 1.0))
            else:
                words.append(term.describe() + _times(term.weight, 1.0))
        if self.positives or self.negatives:
            words.append(f"marked good {list(self.positives)}, bad {list(self.negatives)}")
        if self.method != "default":
            words.append(f"method {self.method}")
        if self.rerank not in ("none", "default"):
            words.append(f"re-ranked by {self.rerank}")
        if self.collapse is not None:
            words.append("near-duplicates collapsed")
        if self.filters:
            words.append("filtered: " + Filters.from_json(self.filters).describe())
        if self.sort == "oldest":
            words.append("oldest first")
        return " · ".join(words) or "feedback only"

    def to_json(self, *, copies: bool = True) -> dict[str, Any]:
        """JSON-ready; without ``copies`` the query images' bytes are left out (their
        SHA-256 stays): for CSV cells and audit entries."""
        return {
            "terms": [_term_json(t, copies) for t in self.terms],
            "k": self.k,
            "offset": self.offset,
            "min_score": self.min_score,
            "method": self.method,
            "rerank": self.rerank,
            "marks": {"good": list(self.positives), "bad": list(self.negatives)},
            "collapse_duplicates": None if self.collapse is None else _rule_json(self.collapse),
            "filters": dict(self.filters),
            "sort": self.sort,
        }

    @classmethod
    def from_json(cls, document: Any) -> SearchSpec:
        """Raises :class:`InvalidQuery` for anything that is not a recorded search, and
        for one holding a field (or a filter) this version does not know: run without
        it, the search would not be the one recorded."""
        if not isinstance(document, dict):
            raise InvalidQuery("not a recorded search: it is not a JSON object")
        _refuse_unknown(document, _SPEC_FIELDS, "the recorded search")
        try:
            marks = document.get("marks") or {}
            collapse = document.get("collapse_duplicates")
            min_score = document.get("min_score")
            spec = cls(
                terms=tuple(_term_from_json(t) for t in document["terms"]),
                k=int(document["k"]),
                offset=int(document.get("offset", 0)),
                min_score=None if min_score is None else float(min_score),
                method=str(document.get("method", "default")),
                rerank=str(document.get("rerank", "default")),
                positives=tuple(int(i) for i in marks.get("good", ())),
                negatives=tuple(int(i) for i in marks.get("bad", ())),
                collapse=None if collapse is None else DuplicateRule(**collapse),
                filters=dict(document.get("filters") or {}),
                sort=None if document.get("sort") is None else str(document["sort"]),
            )
            _refuse_unknown(marks, _MARK_FIELDS, "the recorded search's marks")
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as error:
            raise InvalidQuery(f"not a recorded search: {error}") from error
        Filters.from_json(spec.filters)  # an unknown filter is refused here, not ignored
        if spec.sort is not None and spec.sort not in BROWSE_ORDERS:
            raise InvalidQuery(
                f"the recorded search sorts by {spec.sort!r}, which this version of Spyglass "
                f"does not know (known: {', '.join(BROWSE_ORDERS)})"
            )
        if not (1 <= spec.k <= MAX_RECORDED_K and 0 <= spec.offset <= MAX_RECORDED_OFFSET):
            # A search allocates k rows before it looks at the index: a forged k of 10^12
            # would ask for terabytes.
            raise InvalidQuery(
                f"not a recorded search: it asks for results {spec.offset + 1:,} to "
                f"{spec.offset + spec.k:,}; a recorded search holds at most "
                f"{MAX_RECORDED_K:,} results, from an offset up to {MAX_RECORDED_OFFSET:,}"
            )
        return spec


def record_query(
    index: Index, query: Query, collapse: DuplicateRule | None = None, max_bytes: int = 1 << 30
) -> SearchSpec:
    """The :class:`SearchSpec` of ``query`` as ``index`` answers it: image terms are
    resolved as the searcher resolves them, and copies taken of the bytes it embeds
    (files are read up to ``max_bytes``, the limit the search read them with)."""
    terms: list[RecordedTerm] = []
    for term in query.terms:
        if isinstance(term, TextTerm):
            terms.append(RecordedText(term.text.strip(), term.weight))
        else:
            terms.append(_record_image(index, term, max_bytes))
    return SearchSpec(
        terms=tuple(terms),
        k=query.k,
        offset=query.offset,
        min_score=query.min_score,
        method=query.method,
        rerank=query.rerank,
        positives=query.positives,
        negatives=query.negatives,
        collapse=collapse,
        filters=query.filters.to_json(),
        sort=query.sort,
    )


def _record_image(index: Index, term: ImageTerm, max_bytes: int) -> RecordedImage:
    if term.data is not None:
        return RecordedImage(
            "upload", term.weight, bytes_sha256(term.data), region=term.region, data=term.data
        )
    image_id = term.image_id
    path = term.path
    if path is not None:
        state = index.catalogue.file(str(Path(path).expanduser().absolute()))
        if state is None:
            data = read_image_file(Path(path).expanduser(), max_bytes)
            return RecordedImage(
                "file",
                term.weight,
                bytes_sha256(data),
                path=str(Path(path).expanduser().absolute()),
                region=term.region,
                data=data,
            )
        image_id = state.image_id
    record = index.catalogue.images([int(image_id or 0)]).get(int(image_id or 0))
    where = record.path if record else None
    if term.region is not None and where:
        # A region is cut from the file's bytes: keep those bytes.
        data = read_image_file(where, max_bytes)
        return RecordedImage(
            "indexed", term.weight, bytes_sha256(data), image_id, where, term.region, data
        )
    digest = file_digests(where).sha256 if where else None
    return RecordedImage("indexed", term.weight, digest, image_id, where, term.region)


def _times(weight: float, usual: float) -> str:
    return "" if abs(weight - usual) < 1e-9 else f" × {weight:.2f}"


def _term_json(term: RecordedTerm, copies: bool) -> dict[str, Any]:
    if isinstance(term, RecordedText):
        return {"text": term.text, "weight": term.weight}
    image: dict[str, Any] = {
        "kind": term.kind,
        "sha256": term.sha256,
        "image_id": term.image_id,
        "path": term.path,
        "region": None if term.region is None else list(term.region),
    }
    if copies and term.data is not None:
        image["copy"] = base64.b64encode(term.data).decode("ascii")
    elif term.data is not None:
        image["copy_bytes"] = len(term.data)
    return {"image": image, "weight": term.weight}


def _term_from_json(document: dict[str, Any]) -> RecordedTerm:
    weight = float(document.get("weight", 1.0))
    if "text" in document:
        _refuse_unknown(document, _TEXT_TERM_FIELDS, "a recorded text term")
        return RecordedText(str(document["text"]), weight)
    _refuse_unknown(document, _IMAGE_TERM_FIELDS, "a recorded image term")
    image = document["image"]
    _refuse_unknown(image, _IMAGE_FIELDS, "a recorded query image")
    kind = image["kind"]
    if kind not in ("indexed", "file", "upload"):
        raise ValueError(f"unknown image kind {kind!r}")
    region = image.get("region")
    copy = image.get("copy")
    image_id = image.get("image_id")
    return RecordedImage(
        kind=kind,
        weight=weight,
        sha256=image.get("sha256"),
        image_id=None if image_id is None else int(image_id),
        path=image.get("path"),
        region=None if region is None else check_region(region),
        data=None if copy is None else base64.b64decode(copy, validate=True),
    )


#: The fields :meth:`SearchSpec.to_json` writes, at each level; a reader refuses others.
_SPEC_FIELDS = frozenset(
    {
        "terms",
        "k",
        "offset",
        "min_score",
        "method",
        "rerank",
        "marks",
        "collapse_duplicates",
        "filters",
        "sort",
    }
)
_MARK_FIELDS = frozenset({"good", "bad"})
_TEXT_TERM_FIELDS = frozenset({"text", "weight"})
_IMAGE_TERM_FIELDS = frozenset({"image", "weight"})
_IMAGE_FIELDS = frozenset({"kind", "sha256", "image_id", "path", "region", "copy", "copy_bytes"})


def _refuse_unknown(document: Any, known: frozenset[str], what: str) -> None:
    if not isinstance(document, dict):
        raise InvalidQuery(f"not a recorded search: {what} is not a JSON object")
    unknown = sorted(set(document) - known)
    if unknown:
        raise InvalidQuery(
            f"{what} holds {', '.join(map(repr, unknown))}, which this version of Spyglass "
            f"does not know: the search is not run without it (known: {', '.join(sorted(known))})"
        )


def _rule_json(rule: DuplicateRule) -> dict[str, Any]:
    return {
        "threshold": rule.threshold,
        "phash_distance": rule.phash_distance,
        "candidate_floor": rule.candidate_floor,
        "neighbours": rule.neighbours,
    }
