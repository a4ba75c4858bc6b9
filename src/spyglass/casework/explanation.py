"""A search result explained: heat over the result image, and over the query image for
image queries, for the very query vector the result's ``score`` is the cosine with
(:func:`~spyglass.query.methods.sum_query` without marks: text in the joint space,
an image alone in the image space, image + text as their weighted sum).

See :mod:`spyglass.casework.explain` for how the heat is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spyglass.casework.explain import (
    Heatmap,
    OcclusionSettings,
    cosine_with,
    occlusion_heatmap,
    query_image_scorer,
)
from spyglass.casework.heat_overlay import render_overlay
from spyglass.errors import ImageNotFound, UnknownImageId
from spyglass.images import crop_region, decode_image, read_image_file
from spyglass.query.methods import sum_query
from spyglass.query.terms import ImageTerm, Query
from spyglass.search import QUERY_MAX_SIDE, Searcher

#: Reads an indexed image's file bytes by id (the server passes its gate's reader).
ReadIndexed = Callable[[int], bytes]
#: What an explanation can hold: heat over the result image, over the query image.
PARTS = ("result", "query")


@dataclass(frozen=True)
class Explanation:
    """Why image ``image_id`` scored ``score`` for a query.

    ``space`` is the space the score is a cosine in; ``result`` the heat over the result
    image (``result_image``, RGB, decoded); ``query`` the heat over the query's first
    positively weighted image (``query_image``, cropped to its region if it had one),
    or None for a query without one; ``seconds`` the time the heat took."""

    image_id: int
    score: float
    space: str
    result: Heatmap
    result_image: Image.Image
    query: Heatmap | None
    query_image: Image.Image | None
    seconds: float

    def overlay(self, max_side: int | None = None) -> Image.Image:
        """The result image with its heat over it (RGB)."""
        return render_overlay(self.result_image, self.result, max_side)

    def query_overlay(self, max_side: int | None = None) -> Image.Image | None:
        """The query image with its heat over it, or None without a query image."""
        if self.query is None or self.query_image is None:
            return None
        return render_overlay(self.query_image, self.query, max_side)


def explain_result(
    searcher: Searcher,
    query: Query,
    image_id: int,
    settings: OcclusionSettings | None = None,
    read_indexed: ReadIndexed | None = None,
    parts: Collection[str] = PARTS,
) -> Explanation:
    """Explain ``image_id``'s score for ``query``: the heat over the result and (for a
    query with an image) over the query image. ``parts`` may ask for only one of
    ``result`` and ``query``, at half the cost: without ``result`` the result's heat is
    all zeros, without ``query`` there is none. Raises :class:`UnknownImageId`,
    :class:`ImageNotFound` (the file is gone), :class:`ImageRejected` and
    :class:`InvalidQuery` as a search would."""
    started = time.perf_counter()
    settings = settings or OcclusionSettings()
    stored = searcher.stored_vectors(image_id)
    context = searcher.context(query)
    space, vector = sum_query(context, marks=False)
    score = float(stored[space] @ vector)
    read = read_indexed or (lambda i: _read_indexed(searcher, i))
    result_image = _decode(searcher, read(image_id))
    result = (
        occlusion_heatmap(searcher.encoder, result_image, cosine_with(space, vector), settings)
        if "result" in parts
        else Heatmap(np.zeros((settings.grid,) * 2, np.float32), score, result_image.size)
    )

    query_heat, query_image = None, None
    term_at = next(
        (
            n
            for n, term in enumerate(query.terms)
            if isinstance(term, ImageTerm) and term.weight > 0
        ),
        None,
    )
    if term_at is not None and "query" in parts:
        term = query.terms[term_at]
        assert isinstance(term, ImageTerm)
        query_image = _query_image(searcher, term, read)
        fixed = [
            (embedded.weight, embedded.vectors[space])
            for n, embedded in enumerate(context.terms)
            if n != term_at and space in embedded.vectors
        ]
        scorer = query_image_scorer(space, fixed, term.weight, stored[space])
        query_heat = occlusion_heatmap(searcher.encoder, query_image, scorer, settings)
    return Explanation(
        image_id=image_id,
        score=score,
        space=space,
        result=result,
        result_image=result_image,
        query=query_heat,
        query_image=query_image,
        seconds=time.perf_counter() - started,
    )


def _decode(searcher: Searcher, data: bytes) -> Image.Image:
    limits = searcher.limits
    return decode_image(data, max_pixels=limits.max_pixels, max_side=QUERY_MAX_SIDE).image


def _read_indexed(searcher: Searcher, image_id: int) -> bytes:
    """The first of the image's files that still exists."""
    record = searcher.index.catalogue.images([image_id]).get(image_id)
    if record is None or not record.paths:
        raise UnknownImageId(f"no indexed image has id {image_id}")
    for path in record.paths:
        if Path(path).is_file():
            return read_image_file(path, searcher.limits.max_file_bytes)
    raise ImageNotFound(f"image #{image_id} is indexed but its file is gone: {record.path}")


def _query_image(searcher: Searcher, term: ImageTerm, read: ReadIndexed) -> Image.Image:
    if term.data is not None:
        data = term.data
    elif term.image_id is not None:
        data = read(term.image_id)
    else:
        path = Path(str(term.path)).expanduser()
        if not path.is_file():
            raise ImageNotFound(f"image not found: {term.path}")
        data = read_image_file(path, searcher.limits.max_file_bytes)
    image = _decode(searcher, data)
    if term.region is not None:
        image = crop_region(image, term.region)
    return image


def heat_grid(heatmap: Heatmap, digits: int = 4) -> list[list[float]]:
    """The heat's cells (rows of floats, top row first), rounded, for JSON."""
    return np.round(heatmap.cells.astype(np.float64), digits).tolist()
