"""``caption``: each image's caption finds that image.

Every distinct caption (compared lower-cased, spaces collapsed) is one query; relevant
are the images with that caption, usually one. Reported: ``hit@1/5/10`` (the caption
-> image Recall@K of retrieval papers), MRR and mAP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import IndexedCollection
from spyglass.eval.protocols.running import (
    JudgedQuery,
    ProgressFunction,
    RunSettings,
    compare,
    protocol_result,
    sample_positions,
    variant_approaches,
)
from spyglass.eval.results import MetricSet, ProtocolResult
from spyglass.eval.variants import Variant
from spyglass.query.terms import Query, TextTerm

METRICS = MetricSet(hit=(1, 5, 10), mrr=True)
COLUMNS = ["mAP", "hit@1", "hit@5", "hit@10", "MRR"]


def normalise_caption(text: str) -> str:
    return " ".join(text.lower().split())


def run_caption(
    collection: IndexedCollection,
    variants: Sequence[Variant],
    *,
    caption_column: str | None = None,
    sample: int | None = None,
    settings: RunSettings | None = None,
    progress: ProgressFunction | None = None,
) -> ProtocolResult:
    settings = settings or RunSettings()
    column = caption_column or collection.collection.rules.caption or "caption"
    collection.collection.require_column(column, "one caption per image")
    raw = collection.column(column).astype(str)
    captions = np.array([normalise_caption(c) for c in raw], dtype=object)
    distinct = sorted(set(captions) - {""})
    if not distinct:
        raise InvalidQuery(f"the column '{column}' holds no caption")
    first_wording: dict[str, str] = {}
    for original, normal in zip(raw, captions, strict=True):
        first_wording.setdefault(normal, original.strip())
    chosen = sample_positions(len(distinct), sample, np.random.default_rng(settings.seed))
    queries = [
        JudgedQuery(
            distinct[i], captions == distinct[i], parts={"text": first_wording[distinct[i]]}
        )
        for i in chosen
    ]

    def build(query: JudgedQuery, variant: Variant) -> Query:
        return Query((TextTerm(query.parts["text"]),), method=variant.method, rerank=variant.rerank)

    methods, notes = compare(
        collection, queries, variant_approaches(variants, build), METRICS, settings, progress
    )
    details = {
        "caption_column": column,
        "sample": sample,
        "captions": len(queries),
        "distinct_captions": len(distinct),
    }
    return protocol_result("caption", collection, settings, details, methods, COLUMNS, notes)
