"""Search: embed a query's terms, rank the index with the chosen method, describe hits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spyglass.encoders.base import Encoder, embed_images
from spyglass.errors import ImageNotFound, ImageRejected, IndexEmpty, UnknownImageId
from spyglass.images import crop_region, decode_image, read_image_file
from spyglass.query.filters import Filters, allowed_ids, browse
from spyglass.query.methods import (
    EmbeddedTerm,
    RankContext,
    filters_inside,
    get_method,
    sum_query,
)
from spyglass.query.rerank import (
    RERANK_DEPTH,
    collection_size,
    get_reranker,
    resolve_reranker,
)
from spyglass.query.terms import ImageTerm, Query, Term, TextTerm
from spyglass.settings import IngestSettings
from spyglass.store.index import Index

#: A query image is reduced to about this longer side before use: the model sees 224
#: pixels, and a region of a tenth of the image still gets 200.
QUERY_MAX_SIDE = 2048


@dataclass(frozen=True)
class SearchResult:
    """One hit. ``path`` is the first of ``paths`` (all files with this content).

    ``score`` is the cosine similarity between the image and the query: the weighted
    sum of the query's terms (:func:`~spyglass.query.methods.sum_query`), in the joint
    space when the query has text, else in the image space; images marked good stand in
    for the terms of a query made of marks alone. It is the same whatever method ranked
    the image and whatever was marked, and it is what ``min_score`` filters on.
    ``rank_score`` is the ranking method's own value (fused z-scores, an SVM margin,
    1 - d*/2 after k-reciprocal re-ranking...): results are ordered by it, best first,
    ties broken by id.
    """

    image_id: int
    path: str
    paths: tuple[str, ...]
    score: float
    width: int
    height: int
    rank_score: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.image_id,
            "path": self.path,
            "paths": list(self.paths),
            "score": round(self.score, 6),
            "rank_score": round(self.rank_score, 6),
            "width": self.width,
            "height": self.height,
        }


class Searcher:
    """Answers queries against one index with the encoder that built it."""

    def __init__(self, encoder: Encoder, index: Index, limits: IngestSettings | None = None):
        self.encoder = encoder
        self.index = index
        self.limits = limits or IngestSettings()

    # -- terms -> vectors ------------------------------------------------------------

    def embed_term(self, term: Term) -> EmbeddedTerm:
        if isinstance(term, TextTerm):
            text = term.text.strip()
            vector = self.encoder.embed_texts([text])[0]
            return EmbeddedTerm("text", term.weight, {self.encoder.info.text_space: vector}, text)
        return EmbeddedTerm("image", term.weight, self.image_vectors(term), term.describe())

    def image_vectors(self, term: ImageTerm) -> dict[str, np.ndarray]:
        """{space: (dims,) float32} for an image term; indexed images are not re-embedded
        unless a region asks for a crop."""
        image_id = term.image_id
        if term.path is not None and term.region is None:
            state = self.index.catalogue.file(str(Path(term.path).expanduser().absolute()))
            image_id = state.image_id if state else None
        if image_id is not None and term.region is None:
            return self.stored_vectors(image_id)
        if term.data is not None:
            data = term.data
        elif term.path is not None:
            data = self._read_query_file(term.path)
        else:
            data = self._read_indexed(image_id)
        decoded = decode_image(data, max_pixels=self.limits.max_pixels, max_side=QUERY_MAX_SIDE)
        image = decoded.image
        if term.region is not None:
            image = crop_region(image, term.region)
        vectors = embed_images(self.encoder, [image])
        return {space: rows[0] for space, rows in vectors.items()}

    def stored_vectors(self, image_id: int) -> dict[str, np.ndarray]:
        """Space -> the image's stored vector (dims,) float32."""
        return {space: rows[0] for space, rows in self.stored_rows([image_id]).items()}

    def stored_rows(self, image_ids: Sequence[int]) -> dict[str, np.ndarray]:
        """Space -> (n, dims) float32: the stored vectors of ``image_ids``, in their
        order, with one catalogue look-up and one read per space for all of them (read
        one by one, ten marks cost 4 ms of a 50 ms feedback query at 1M images)."""
        ids = [int(i) for i in image_ids]
        known = self.index.catalogue.images(ids)
        for image_id in ids:
            if image_id not in known:
                raise UnknownImageId(f"no indexed image has id {image_id}")
        owners = np.array(ids, np.int64)
        return {space: self.index.stores[space].fetch(owners) for space in self.encoder.info.spaces}

    def _read_query_file(self, path: str) -> bytes:
        resolved = Path(path).expanduser()
        if not resolved.exists():
            raise ImageNotFound(f"image not found: {path}")
        try:
            return read_image_file(resolved, self.limits.max_file_bytes)
        except ImageRejected as error:
            raise ImageRejected(error.reason, f"cannot use {path} as a query: {error}") from error

    def _read_indexed(self, image_id: int | None) -> bytes:
        record = self.index.catalogue.images([int(image_id or 0)]).get(int(image_id or 0))
        if record is None or not record.paths:
            raise UnknownImageId(f"no indexed image has id {image_id}")
        return read_image_file(record.path, self.limits.max_file_bytes)

    # -- search -------------------------------------------------------------------------

    def context(self, query: Query) -> RankContext:
        if self.index.count() == 0:
            raise IndexEmpty(
                f"the index at {self.index.folder} has no images yet; "
                f"add some with: spyglass index PATH --index {self.index.folder}"
            )
        terms = [self.embed_term(t) for t in query.terms]
        context = RankContext(
            self.index,
            self.encoder.info,
            terms,
            positive_ids=query.positives,
            negative_ids=query.negatives,
            encoder=self.encoder,
            filters=None if query.filters.empty else query.filters,
            allowed=None if query.filters.empty else lambda: self.allowed(query.filters),
        )
        for ids, target in (
            (query.positives, context.positives),
            (query.negatives, context.negatives),
        ):
            if ids:
                target.update(self.stored_rows(ids))
        return context

    def allowed(self, filters: Filters) -> np.ndarray | None:
        """(n,) int64 sorted ids of the images ``filters`` keep; ``None`` for no
        filters (every image)."""
        if filters.empty:
            return None
        return allowed_ids(self.index.catalogue, filters)

    def filters_inside(self, filters: Filters) -> bool:
        """Whether every store of the index applies ``filters`` inside its own search
        (Milvus with its filter fields), so that no list of the ids they keep is made."""
        return all(filters_inside(store, filters) for store in self.index.stores.values())

    def rank(self, query: Query) -> list[tuple[int, float]]:
        """The whole ranking down to ``offset + k``: (image id, rank score), best first."""
        return self._ranked(query)[1]

    def _ranked(self, query: Query) -> tuple[RankContext, list[tuple[int, float]]]:
        if query.browsing:
            context = RankContext(self.index, self.encoder.info, [])
            # Dates stand as rank scores: newest first (or oldest), as browsing lists them.
            listed = browse(
                self.index.catalogue,
                query.filters,
                query.offset + query.k,
                oldest_first=query.oldest_first,
            )
            return context, listed
        task = query.task
        method = get_method(query.method, task)
        size = collection_size(self.index)  # O(1): the default re-ranking depends on it
        reranker = get_reranker(query.rerank, task, size)
        context = self.context(query)
        wanted = query.offset + query.k
        filtered = context.filters is not None and not self.filters_inside(context.filters)
        if filtered and context.among is not None and len(context.among) == 0:
            return context, []  # the filters keep no image
        if resolve_reranker(query.rerank, task, size) == "none":
            return context, method(context, wanted)
        ranking = method(context, max(wanted, RERANK_DEPTH))
        # Only the top RERANK_DEPTH are re-ordered (the re-rankers' contract); a longer
        # ranking (an evaluation asks for all) keeps the method's order below them, its
        # scores shifted down by one constant so that scores still fall down the list
        # (and stay distinct: evaluation breaks ties pessimistically).
        top = reranker(context, ranking[:RERANK_DEPTH])
        tail = ranking[RERANK_DEPTH:wanted]
        if top and tail:
            shift = max(0.0, tail[0][1] - min(score for _, score in top)) + 1e-6
            tail = [(i, score - shift) for i, score in tail]
        return context, (top + tail)[:wanted]

    def search(self, query: Query) -> list[SearchResult]:
        """Results ``offset .. offset + k`` of the ranking, best first; with
        ``min_score``, only those whose cosine with the query reaches it."""
        context, ranking = self._ranked(query)
        ranking = ranking[query.offset :]
        if query.browsing:
            # No query to be similar to: score 0, the date as the rank score.
            return self.describe([(image_id, date, 0.0) for image_id, date in ranking])
        cosines = query_cosines(context, [image_id for image_id, _ in ranking])
        hits = [
            (image_id, rank_score, cosine)
            for (image_id, rank_score), cosine in zip(ranking, cosines, strict=True)
            if query.min_score is None or cosine >= query.min_score
        ]
        return self.describe(hits)

    def describe(self, hits: list[tuple[int, float, float]]) -> list[SearchResult]:
        """(image id, rank score, cosine) triples -> results, skipping images removed
        while we searched."""
        records = self.index.catalogue.images([i for i, _, _ in hits])
        results = []
        for image_id, rank_score, cosine in hits:
            record = records.get(image_id)
            if record is None or not record.paths:
                continue
            results.append(
                SearchResult(
                    image_id=image_id,
                    path=record.path,
                    paths=record.paths,
                    score=float(cosine),
                    width=record.width,
                    height=record.height,
                    rank_score=float(rank_score),
                )
            )
        return results


def query_cosines(context: RankContext, image_ids: list[int]) -> np.ndarray:
    """(n,) float32: each image's whole-image cosine with the query's own terms summed
    (:func:`~spyglass.query.methods.sum_query` without marks): the ``score`` of a
    result, which marks re-rank but do not redefine."""
    if not image_ids:
        return np.zeros(0, np.float32)
    space, vector = sum_query(context, marks=False)
    rows = context.index.stores[space].fetch(np.asarray(image_ids, np.int64))
    return np.asarray(rows @ vector, np.float32)
