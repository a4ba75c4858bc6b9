"""``composed``: a reference image plus a text that changes one attribute.

Queries are built from the labels, in the spirit of FashionIQ and CIRR: take an image
whose object is O and whose attribute is A, and a value B != A that some other image of
object O has; the query is (the image, the modifier text for B, e.g. "in red" or "as a
sketch"), and the relevant images are those of object O with attribute B. The reference
image leaves its own ranking.

Besides every method registered for the ``image+text`` task, two baselines show what
each half alone achieves: ``image only`` and ``text only`` (method ``sum``).

Reported: ``hit@K`` (what composed-retrieval papers call Recall@K: the share of queries
with a relevant image in the top K) for K = 1, 5, 10, 50, and mAP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import IndexedCollection
from spyglass.eval.protocols.running import (
    Approach,
    JudgedQuery,
    ProgressFunction,
    RunSettings,
    compare,
    protocol_result,
    variant_approaches,
)
from spyglass.eval.results import MetricSet, ProtocolResult
from spyglass.eval.variants import Variant
from spyglass.query.terms import ImageTerm, Query, TextTerm

METRICS = MetricSet(precision=(10,), hit=(1, 5, 10, 50))
COLUMNS = ["mAP", "hit@1", "hit@5", "hit@10", "hit@50"]
BASELINE = "sum"


def composed_queries(
    collection: IndexedCollection,
    *,
    attribute: str,
    object_column: str,
    modifier: str,
    count: int,
    rng: np.random.Generator,
) -> list[JudgedQuery]:
    """Up to ``count`` queries: reference images in a seeded random order, each with a
    target value drawn among those its object has elsewhere."""
    if "{}" not in modifier:
        raise InvalidQuery(f"modifier '{modifier}' needs a {{}} where the new value goes")
    objects = collection.column(object_column).astype(str)
    values = collection.column(attribute).astype(str)
    usable = (objects != "") & (values != "")
    values_of: dict[str, list[str]] = {}
    for obj, value in sorted(set(zip(objects[usable], values[usable], strict=True))):
        values_of.setdefault(obj, []).append(value)
    queries: list[JudgedQuery] = []
    for position in rng.permutation(np.flatnonzero(usable)):
        if len(queries) >= count:
            break
        obj, current = objects[position], values[position]
        targets = [v for v in values_of[obj] if v != current]
        if not targets:
            continue
        target = targets[int(rng.integers(len(targets)))]
        queries.append(
            JudgedQuery(
                f"{collection.rows[position]['path']} -> {target}",
                (objects == obj) & (values == target),
                leave_out=(int(position),),
                parts={
                    "image_id": int(collection.ids[position]),
                    "text": modifier.format(target.lower()),
                },
            )
        )
    return queries


def run_composed(
    collection: IndexedCollection,
    variants: Sequence[Variant],
    *,
    attribute: str | None = None,
    object_column: str | None = None,
    modifier: str | None = None,
    queries: int = 500,
    image_weight: float = 0.5,
    settings: RunSettings | None = None,
    progress: ProgressFunction | None = None,
) -> ProtocolResult:
    settings = settings or RunSettings()
    attribute, object_column = collection.collection.attribute_and_object(
        attribute, object_column, ("the attribute a query changes", "the object a query keeps")
    )
    modifier = modifier or collection.collection.rules.modifier
    judged = composed_queries(
        collection,
        attribute=attribute,
        object_column=object_column,
        modifier=modifier,
        count=queries,
        rng=np.random.default_rng(settings.seed),
    )
    if not judged:
        raise InvalidQuery(
            f"no object in {collection.collection.folder} has two values of '{attribute}'"
        )

    def image(query: JudgedQuery, weight: float = 1.0) -> ImageTerm:
        return ImageTerm(image_id=query.parts["image_id"], weight=weight)

    def text(query: JudgedQuery, weight: float = 1.0) -> TextTerm:
        return TextTerm(query.parts["text"], weight)

    def build(query: JudgedQuery, variant: Variant) -> Query:
        terms = (image(query, image_weight), text(query, 1.0 - image_weight))
        return Query(terms, method=variant.method, rerank=variant.rerank)

    approaches = [
        Approach("image only", lambda q: Query((image(q),), method=BASELINE, rerank="none")),
        Approach("text only", lambda q: Query((text(q),), method=BASELINE, rerank="none")),
        *variant_approaches(variants, build),
    ]
    methods, notes = compare(collection, judged, approaches, METRICS, settings, progress)
    details = {
        "attribute": attribute,
        "object_column": object_column,
        "modifier": modifier,
        "queries": len(judged),
        "image_weight": image_weight,
    }
    return protocol_result("composed", collection, settings, details, methods, COLUMNS, notes)
