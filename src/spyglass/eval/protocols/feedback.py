"""``feedback``: simulated relevance feedback, as in SeeSaw (Moll et al., VLDB 2023).

Per class, a user starts from the class's text. Each round they look at the top
``per_round`` results they have not seen yet and mark each good or bad, which the
labels decide; the marks go into the next query (``positives`` / ``negatives``).

After round r, the user faces a *session ranking*: the images already shown, in the
order shown, then the current ranking of everything unseen. ``mAP rN`` is the mean AP
of that ranking after N rounds (``mAP r0`` = the text query alone), so rounds are
comparable: the shown images count where the user saw them. ``mAP`` (with its CI) is the
last round's; ``P@shown`` is the share of good images among all those shown.

Every method registered for the ``feedback`` task is compared. A round without any good
image yet that a method refuses (it needs positives) is answered by ``sum`` instead,
and counted in the notes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import IndexedCollection, Ranked
from spyglass.eval.metrics import Judged, average_precision
from spyglass.eval.protocols.running import (
    JudgedQuery,
    ProgressFunction,
    RunSettings,
    Steps,
    protocol_result,
)
from spyglass.eval.protocols.text import DEFAULT_TEMPLATE, class_queries, class_texts, text_terms
from spyglass.eval.results import MetricSet, ProtocolResult, QueryOutcome, summarise
from spyglass.eval.variants import Variant
from spyglass.query.terms import Query

METRICS = MetricSet()
FALLBACK = "sum"


class Session:
    """One simulated user refining one query with one variant."""

    def __init__(self, collection: IndexedCollection, query: JudgedQuery, variant: Variant):
        self.collection = collection
        self.query = query
        self.variant = variant
        self.relevant = np.asarray(query.relevant, dtype=bool)
        self.shown: list[int] = []
        self.seconds = 0.0
        self.calls = 0
        self.fallbacks = 0

    def rank(self) -> Ranked:
        ids = self.collection.ids
        good = tuple(int(ids[p]) for p in self.shown if self.relevant[p])
        bad = tuple(int(ids[p]) for p in self.shown if not self.relevant[p])
        terms = text_terms(self.query.parts["texts"])
        query = Query(
            terms,
            positives=good,
            negatives=bad,
            method=self.variant.method,
            rerank=self.variant.rerank,
        )
        try:
            ranked = self.collection.rank(query, self.shown)
        except InvalidQuery:
            if good:
                raise
            self.fallbacks += 1
            fallback = Query(terms, negatives=bad, method=FALLBACK, rerank="none")
            ranked = self.collection.rank(fallback, self.shown)
        self.seconds += ranked.seconds
        self.calls += 1
        return ranked

    def judged(self, ranked: Ranked) -> Judged:
        """The session ranking: shown images in the order shown, then ``ranked``."""
        seen = self.relevant[self.shown] if self.shown else np.zeros(0, bool)
        total = int(self.relevant.sum())
        rest = Judged.of(self.relevant[ranked.positions], ranked.scores, total - int(seen.sum()))
        return Judged(np.concatenate([seen, rest.hits]), total)

    def run(self, rounds: int, per_round: int) -> QueryOutcome:
        aps: list[float] = []
        for round_number in range(rounds + 1):
            ranked = self.rank()
            judged = self.judged(ranked)
            aps.append(average_precision(judged))
            if round_number < rounds:
                self.shown.extend(int(p) for p in ranked.positions[:per_round])
        extra = {f"mAP r{r}": ap for r, ap in enumerate(aps)}
        extra["P@shown"] = float(self.relevant[self.shown].mean()) if self.shown else 0.0
        return QueryOutcome(self.query.name, judged, self.seconds, self.calls, extra)


def run_feedback(
    collection: IndexedCollection,
    variants: Sequence[Variant],
    *,
    rounds: int = 5,
    per_round: int = 10,
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    settings: RunSettings | None = None,
    progress: ProgressFunction | None = None,
) -> ProtocolResult:
    settings = settings or RunSettings()
    label_column, column = collection.class_labels()
    labels = sorted(set(column) - {""})
    queries = class_queries(collection, class_texts(labels, templates))
    steps = Steps(len(queries) * len(variants), progress)
    methods = []
    notes = []
    for variant in variants:
        outcomes = []
        fallbacks = 0
        try:
            for query in queries:
                session = Session(collection, query, variant)
                outcomes.append(session.run(rounds, per_round))
                fallbacks += session.fallbacks
                steps.step()
        except InvalidQuery as error:
            notes.append(f"{variant.name}: not applicable here ({error})")
            continue
        if fallbacks:
            notes.append(
                f"{variant.name}: {fallbacks} rounds without a good image were answered "
                f"by {FALLBACK} (the method needs one)"
            )
        methods.append(
            summarise(
                variant.name,
                outcomes,
                METRICS,
                seed=settings.seed,
                resamples=settings.resamples,
                collection_size=len(collection),
            )
        )
    columns = [f"mAP r{r}" for r in range(rounds + 1)] + ["P@shown"]
    details = {
        "label_column": label_column,
        "classes": len(queries),
        "rounds": rounds,
        "per_round": per_round,
        "templates": list(templates),
    }
    return protocol_result("feedback", collection, settings, details, methods, columns, notes)
