"""``image``: each image (or a seeded sample) queries the rest; same class is relevant.

The query image is its indexed vectors (never embedded again) and is left out of its own
ranking. An image alone in its class has nothing relevant: counted, not scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
from spyglass.query.terms import ImageTerm, Query

METRICS = MetricSet(precision=(1, 10, 100), recall=(100,), r_precision=True)
COLUMNS = ["mAP", "P@1", "P@10", "P@100", "R-prec"]


def run_image(
    collection: IndexedCollection,
    variants: Sequence[Variant],
    *,
    sample: int | None = None,
    settings: RunSettings | None = None,
    progress: ProgressFunction | None = None,
) -> ProtocolResult:
    settings = settings or RunSettings()
    label_column, labels = collection.class_labels()
    _, codes = np.unique(labels.astype(str), return_inverse=True)
    chosen = sample_positions(len(collection), sample, np.random.default_rng(settings.seed))
    queries = [
        JudgedQuery(
            collection.rows[p]["path"],
            codes == codes[p],
            leave_out=(int(p),),
            parts={"image_id": int(collection.ids[p])},
        )
        for p in chosen
    ]

    def build(query: JudgedQuery, variant: Variant) -> Query:
        term = ImageTerm(image_id=query.parts["image_id"])
        return Query((term,), method=variant.method, rerank=variant.rerank)

    methods, notes = compare(
        collection, queries, variant_approaches(variants, build), METRICS, settings, progress
    )
    details = {"label_column": label_column, "sample": sample, "query_images": len(queries)}
    return protocol_result("image", collection, settings, details, methods, COLUMNS, notes)
