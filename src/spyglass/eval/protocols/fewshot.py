"""``fewshot``: a few exemplar images per class, with or without the class's text.

The protocol of O. Moll, "Combining images with text for better CLIP-based image search"
(2024): per class, ``shots`` exemplars drawn at random (seeded) are the query's positives
and leave the ranking. The learned methods (exemplar SVM, SVM + text, SeeSaw) train them
against 1,000 random images of the index as pseudo-negatives, which they draw themselves
(``spyglass.query.feedback.PSEUDO_NEGATIVES``, seeded by the exemplars' ids), exactly as
they do for a user who marks a few images good; the protocol passes no negatives, since
``Query.negatives`` means images a user marked bad, which those methods weigh more.
Compared, per class:

* ``image kNN``: method ``sum`` with the exemplars only (their mean, image space);
* ``text``: method ``sum`` with the class's text only;
* ``sum + text``: method ``sum`` with text and exemplars;
* every other method registered for the ``feedback`` task (exemplar SVM, SVM + text,
  ...), given the exemplars, once without and once with the text.

Reported: mAP, and ``wins``, the share of classes where an approach has the best AP
(a tie splits the class's credit between the tied approaches).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spyglass.eval.datasets import IndexedCollection
from spyglass.eval.protocols.running import (
    Approach,
    JudgedQuery,
    ProgressFunction,
    QueryBuilder,
    RunSettings,
    compare,
    protocol_result,
)
from spyglass.eval.protocols.text import DEFAULT_TEMPLATE, class_texts, text_terms
from spyglass.eval.results import MethodResult, MetricSet, ProtocolResult
from spyglass.eval.variants import Variant
from spyglass.query.terms import Query

METRICS = MetricSet(precision=(10,))
COLUMNS = ["mAP", "wins", "P@10"]
BASELINE = "sum"


def fewshot_approaches(variants: Sequence[Variant]) -> list[Approach]:
    """The baselines, then each non-baseline variant without and with text."""

    def positives(query: JudgedQuery) -> tuple[int, ...]:
        return tuple(query.parts["exemplars"])

    approaches = [
        Approach(
            "image kNN", lambda q: Query(positives=positives(q), method=BASELINE, rerank="none")
        ),
        Approach(
            "text", lambda q: Query(text_terms(q.parts["texts"]), method=BASELINE, rerank="none")
        ),
        Approach(
            "sum + text",
            lambda q: Query(
                text_terms(q.parts["texts"]), positives=positives(q), method=BASELINE, rerank="none"
            ),
        ),
    ]
    for variant in variants:
        if variant.method == BASELINE and variant.rerank == "none":
            continue
        approaches.append(Approach(variant.name, _marked(variant, with_text=False)))
        approaches.append(Approach(f"{variant.name} + text", _marked(variant, with_text=True)))
    return approaches


def _marked(variant: Variant, *, with_text: bool) -> QueryBuilder:
    def build(query: JudgedQuery) -> Query:
        return Query(
            text_terms(query.parts["texts"]) if with_text else (),
            positives=tuple(query.parts["exemplars"]),
            method=variant.method,
            rerank=variant.rerank,
        )

    return build


def add_wins(results: list[MethodResult]) -> None:
    """Set ``metrics['wins']``: the share of queries where each result has the best AP."""
    if not results:
        return
    names = results[0].query_names
    aligned = [r for r in results if r.query_names == names]
    if len(aligned) != len(results) or not names:
        for result in results:
            result.metrics["wins"] = float("nan")
        return
    table = np.array([r.per_query_ap for r in results])  # (approaches, queries)
    best = table.max(axis=0)
    winners = np.isclose(table, best, rtol=0.0, atol=1e-12)
    credit = winners / winners.sum(axis=0)
    for result, share in zip(results, credit.sum(axis=1) / len(names), strict=True):
        result.metrics["wins"] = float(share)


def run_fewshot(
    collection: IndexedCollection,
    variants: Sequence[Variant],
    *,
    shots: int = 5,
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    settings: RunSettings | None = None,
    progress: ProgressFunction | None = None,
) -> ProtocolResult:
    settings = settings or RunSettings()
    label_column, labels = collection.class_labels()
    classes = sorted(
        c for c in set(labels) - {""} if int((labels == c).sum()) > shots
    )  # at least one relevant image besides the exemplars
    texts = class_texts(classes, templates)
    rng = np.random.default_rng(settings.seed)
    queries = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        exemplars = np.sort(rng.choice(members, size=shots, replace=False))
        queries.append(
            JudgedQuery(
                label,
                labels == label,
                leave_out=tuple(int(p) for p in exemplars),
                parts={
                    "texts": texts[label],
                    "exemplars": [int(i) for i in collection.ids[exemplars]],
                },
            )
        )
    methods, notes = compare(
        collection, queries, fewshot_approaches(variants), METRICS, settings, progress
    )
    add_wins(methods)
    details = {
        "label_column": label_column,
        "classes": len(queries),
        "shots": shots,
        "templates": list(templates),
    }
    return protocol_result("fewshot", collection, settings, details, methods, COLUMNS, notes)
