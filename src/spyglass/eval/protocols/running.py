"""What every protocol does the same way: ask the engine each judged query under each
compared approach, judge the rankings, and summarise them per approach."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import IndexedCollection, Ranked
from spyglass.eval.metrics import Judged
from spyglass.eval.results import MethodResult, MetricSet, ProtocolResult, QueryOutcome, summarise
from spyglass.eval.variants import Variant
from spyglass.query.terms import Query

#: (done, total) steps of a run; a step is one query under one approach.
ProgressFunction = Callable[[int, int], None]


@dataclass(frozen=True)
class RunSettings:
    """Settings every protocol shares."""

    #: Seeds every random choice (samples, exemplars, negatives) and the bootstrap.
    seed: int = 0
    #: Bootstrap resamples for the 95% interval of mAP.
    resamples: int = 1000


@dataclass(frozen=True)
class JudgedQuery:
    """A protocol's query: a name, what to ask, and which members are relevant.

    ``relevant`` (m,) bool over the collection's members; ``leave_out`` member positions
    removed from the ranking (the query image itself, the exemplars) and never relevant.
    ``parts`` carries what the approaches build their engine query from.
    """

    name: str
    relevant: np.ndarray
    leave_out: tuple[int, ...] = ()
    parts: dict[str, Any] = field(default_factory=dict)


#: Builds the engine query of one approach for one judged query.
QueryBuilder = Callable[[JudgedQuery], Query]


@dataclass(frozen=True)
class Approach:
    """One row of a protocol's table: a name and how it builds engine queries."""

    name: str
    build: QueryBuilder


def variant_approaches(
    variants: Sequence[Variant], build: Callable[[JudgedQuery, Variant], Query]
) -> list[Approach]:
    """One approach per variant, each building its query with ``build``."""
    return [Approach(v.name, _bind(build, v)) for v in variants]


def _bind(build: Callable[[JudgedQuery, Variant], Query], variant: Variant) -> QueryBuilder:
    return lambda query: build(query, variant)


def judge(relevant: np.ndarray, ranked: Ranked, leave_out: Sequence[int] = ()) -> Judged | None:
    """Judge a ranking of members; None when no member (left-out ones aside) is relevant."""
    wanted = np.asarray(relevant, dtype=bool).copy()
    if leave_out:
        wanted[list(leave_out)] = False
    total = int(wanted.sum())
    if total == 0:
        return None
    return Judged.of(wanted[ranked.positions], ranked.scores, total)


class Steps:
    """Counts steps for a progress function."""

    def __init__(self, total: int, progress: ProgressFunction | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress

    def step(self, count: int = 1) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)


def run_approach(
    collection: IndexedCollection,
    queries: Sequence[JudgedQuery],
    approach: Approach,
    steps: Steps,
) -> list[QueryOutcome]:
    """Rank every query with one approach. Queries with nothing relevant are not asked."""
    outcomes = []
    for query in queries:
        relevant = np.asarray(query.relevant, dtype=bool)
        remaining = int(relevant.sum()) - int(relevant[list(query.leave_out)].sum())
        if remaining == 0:
            outcomes.append(QueryOutcome(query.name, None, 0.0, engine_calls=0))
        else:
            ranked = collection.rank(approach.build(query), query.leave_out)
            outcomes.append(
                QueryOutcome(query.name, judge(relevant, ranked, query.leave_out), ranked.seconds)
            )
        steps.step()
    return outcomes


def compare(
    collection: IndexedCollection,
    queries: Sequence[JudgedQuery],
    approaches: Sequence[Approach],
    metric_set: MetricSet,
    settings: RunSettings,
    progress: ProgressFunction | None = None,
) -> tuple[list[MethodResult], list[str]]:
    """Every approach over the same queries. An approach the engine refuses (a method
    that cannot answer this kind of query) is left out with a note, not a failure."""
    steps = Steps(len(queries) * len(approaches), progress)
    results: list[MethodResult] = []
    notes: list[str] = []
    for approach in approaches:
        try:
            outcomes = run_approach(collection, queries, approach, steps)
        except InvalidQuery as error:
            notes.append(f"{approach.name}: not applicable here ({error})")
            continue
        results.append(
            summarise(
                approach.name,
                outcomes,
                metric_set,
                seed=settings.seed,
                resamples=settings.resamples,
                collection_size=len(collection),
            )
        )
    return results, notes


def protocol_result(
    protocol: str,
    collection: IndexedCollection,
    settings: RunSettings,
    details: dict[str, Any],
    methods: list[MethodResult],
    columns: list[str],
    notes: list[str],
) -> ProtocolResult:
    """Wrap a protocol's rows with what is needed to read and re-run them."""
    info = collection.engine.encoder.info
    facts = {
        "images": len(collection),
        "rows_left_out": collection.collection.excluded,
        "duplicate_rows": collection.duplicates,
        "missing_rows": collection.missing,
    }
    if collection.missing:
        notes = [
            *notes,
            f"{collection.missing} labelled files are not in the index (skipped when "
            f"indexing), e.g. {', '.join(collection.missing_examples)}",
        ]
    return ProtocolResult(
        protocol=protocol,
        data=str(collection.collection.folder),
        model=info.name,
        index=str(collection.engine.index.folder),
        settings={
            "seed": settings.seed,
            "bootstrap_resamples": settings.resamples,
            "model_version": info.version,
            **details,
        },
        collection=facts,
        methods=methods,
        columns=columns,
        notes=notes,
    )


def sample_positions(count: int, sample: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``sample`` members drawn without replacement (all if None or
    not fewer than ``count``)."""
    if sample is None or sample >= count:
        return np.arange(count)
    return np.sort(rng.choice(count, size=sample, replace=False))
