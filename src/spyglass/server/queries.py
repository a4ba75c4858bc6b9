"""A search request (JSON or form) -> an engine :class:`~spyglass.query.terms.Query`.

The rules match the CLI's: with an image and a text, the image gets ``image_weight``
and the text the rest; each excluded phrase gets ``-exclude_weight``. Images come
through the :class:`~spyglass.server.gate.ImageGate` (indexed ids and paths) or the
:class:`~spyglass.server.uploads.UploadStore`; a client path never reaches the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from spyglass.errors import InvalidQuery
from spyglass.query.filters import Filters
from spyglass.query.methods import get_method
from spyglass.query.rerank import get_reranker
from spyglass.query.terms import ImageTerm, Query, Term, TextTerm, check_region
from spyglass.server.gate import ImageGate
from spyglass.server.schemas import SearchRequest
from spyglass.server.uploads import UploadStore


@dataclass(frozen=True)
class BuiltQuery:
    query: Query
    #: The query in words, for people and for exported case files.
    description: str


def build_query(
    request: SearchRequest, gate: ImageGate, uploads: UploadStore, *, limit: int | None = None
) -> BuiltQuery:
    """Resolve the request's image, weigh its terms and check names; raises 4xx errors
    (unknown ids or uploads, paths outside the index, bad regions, unknown methods)."""
    get_method(request.method)
    get_reranker(request.rerank)
    region = None
    if request.region is not None:
        region = check_region(request.region.as_tuple())

    image: ImageTerm | None = None
    image_words = ""
    if request.upload_id is not None:
        upload = uploads.get(request.upload_id)
        image = ImageTerm(data=upload.data, region=region)
        image_words = "uploaded image"
    elif request.image_id is not None or request.image_path is not None:
        if request.image_path is not None:
            record = gate.lookup(request.image_path)
        else:
            record = gate.record(int(request.image_id or 0))
        if region is None:
            image = ImageTerm(image_id=record.id)
        else:
            # The crop is cut from the file's bytes, read through the gate.
            image = ImageTerm(data=gate.read(record.id).data, region=region)
        image_words = f"image #{record.id} ({record.path})"
    elif region is not None:
        raise InvalidQuery("a region needs a query image (image_id, image_path or upload_id)")

    text = (request.text or "").strip()
    terms: list[Term] = []
    words: list[str] = []
    if image is not None and text:
        terms += [
            _weighted(image, request.image_weight),
            TextTerm(text, 1.0 - request.image_weight),
        ]
        words.append(f"{image_words} × {request.image_weight:.2f}")
        words.append(f'"{text}" × {1.0 - request.image_weight:.2f}')
    elif image is not None:
        terms.append(image)
        words.append(image_words)
    elif text:
        terms.append(TextTerm(text))
        words.append(f'"{text}"')
    if region is not None:
        words.append("region " + ",".join(f"{v:.3f}" for v in region))
    if request.exclude_weight > 0:
        for phrase in (p.strip() for p in request.exclude):
            if phrase:
                terms.append(TextTerm(phrase, -request.exclude_weight))
                words.append(f'not "{phrase}"')
    if request.positives or request.negatives:
        words.append(f"marked good {list(request.positives)}, bad {list(request.negatives)}")
    if request.method != "default":
        words.append(f"method {request.method}")
    if request.rerank not in ("none", "default"):
        words.append(f"re-ranked by {request.rerank}")
    filters = Filters() if request.filters is None else request.filters.to_filters()
    if not filters.empty:
        words.append(("" if terms or request.positives else "browsing ") + filters.describe())
    if request.sort == "oldest":
        words.append("oldest first")

    query = Query(
        tuple(terms),
        k=limit or request.limit,
        offset=request.offset,
        min_score=request.min_score,
        method=request.method,
        positives=tuple(dict.fromkeys(request.positives)),
        negatives=tuple(dict.fromkeys(request.negatives)),
        rerank=request.rerank,
        filters=filters,
        sort=request.sort,
    )
    return BuiltQuery(query, " · ".join(words) or "feedback only")


def _weighted(term: ImageTerm, weight: float) -> ImageTerm:
    return replace(term, weight=weight)
