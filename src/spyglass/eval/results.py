"""What a protocol run produces: per-query outcomes summarised per method, ready for a
table, JSON or a plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spyglass.eval.metrics import (
    RECALL_LEVELS,
    Estimate,
    Judged,
    average_precision,
    bootstrap_mean,
    hit_at,
    interpolated_precision,
    precision_at,
    r_precision,
    recall_at,
    recall_curve,
    reciprocal_rank,
)

#: Cut-offs of the Recall@K curve (those beyond the collection size are dropped).
CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass(frozen=True)
class MetricSet:
    """Which metrics a protocol reports besides mAP (always reported, with its CI)."""

    precision: tuple[int, ...] = ()
    recall: tuple[int, ...] = ()
    hit: tuple[int, ...] = ()
    r_precision: bool = False
    mrr: bool = False

    def compute(self, judged: Judged) -> dict[str, float]:
        values = {"mAP": average_precision(judged)}
        values.update({f"P@{k}": precision_at(judged, k) for k in self.precision})
        values.update({f"recall@{k}": recall_at(judged, k) for k in self.recall})
        values.update({f"hit@{k}": hit_at(judged, k) for k in self.hit})
        if self.r_precision:
            values["R-prec"] = r_precision(judged)
        if self.mrr:
            values["MRR"] = reciprocal_rank(judged)
        return values


@dataclass
class QueryOutcome:
    """One query under one method: its judged ranking (None when nothing in the
    collection is relevant to it), the engine's seconds, and protocol-specific values."""

    name: str
    judged: Judged | None
    seconds: float
    engine_calls: int = 1
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class MethodResult:
    """One row of a results table."""

    method: str
    metrics: dict[str, float]
    map_ci: Estimate
    #: Queries scored, and queries left out because nothing was relevant to them.
    queries: int
    excluded: int
    #: Mean seconds of one engine ranking call (the whole collection ranked).
    seconds_per_query: float
    query_names: list[str]
    per_query_ap: list[float]
    #: Interpolated precision at RECALL_LEVELS, averaged over queries.
    pr_curve: list[float]
    curve_ks: list[int]
    recall_curve: list[float]
    note: str = ""

    def to_json(self, per_query: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "method": self.method,
            "metrics": {k: _round(v) for k, v in self.metrics.items()},
            "mAP_ci95": [_round(self.map_ci.low), _round(self.map_ci.high)],
            "queries": self.queries,
            "excluded_queries": self.excluded,
            "seconds_per_query": round(self.seconds_per_query, 6),
        }
        if self.note:
            data["note"] = self.note
        if per_query:
            data["per_query_ap"] = {
                n: _round(a) for n, a in zip(self.query_names, self.per_query_ap, strict=True)
            }
        return data


def summarise(
    method: str,
    outcomes: Sequence[QueryOutcome],
    metric_set: MetricSet,
    *,
    seed: int,
    resamples: int = 1000,
    collection_size: int | None = None,
    note: str = "",
) -> MethodResult:
    """Means over the queries that have a relevant item; the others are counted."""
    scored = [o for o in outcomes if o.judged is not None]
    rows = [metric_set.compute(o.judged) for o in scored if o.judged is not None]
    names = list(rows[0]) if rows else ["mAP"]
    metrics = {n: float(np.mean([r[n] for r in rows])) if rows else float("nan") for n in names}
    extra_names = list(scored[0].extra) if scored else []
    for name in extra_names:
        metrics[name] = float(np.mean([o.extra[name] for o in scored]))
    aps = [r["mAP"] for r in rows]
    size = collection_size or max((len(o.judged.hits) for o in scored if o.judged), default=1)
    ks = [k for k in CURVE_KS if k <= max(size, 1)]
    judged = [o.judged for o in scored if o.judged is not None]
    calls = sum(o.engine_calls for o in outcomes)
    return MethodResult(
        method=method,
        metrics=metrics,
        map_ci=bootstrap_mean(aps, seed=seed, resamples=resamples),
        queries=len(scored),
        excluded=len(outcomes) - len(scored),
        seconds_per_query=sum(o.seconds for o in outcomes) / calls if calls else 0.0,
        query_names=[o.name for o in scored],
        per_query_ap=aps,
        pr_curve=_mean_rows([interpolated_precision(j) for j in judged], len(RECALL_LEVELS)),
        curve_ks=ks,
        recall_curve=_mean_rows([recall_curve(j, ks) for j in judged], len(ks)),
        note=note,
    )


def _mean_rows(rows: list[np.ndarray], width: int) -> list[float]:
    if not rows:
        return [float("nan")] * width
    return [float(v) for v in np.mean(np.stack(rows), axis=0)]


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


@dataclass
class ProtocolResult:
    """A protocol's run on one collection: a row per method, and how it was run."""

    protocol: str
    data: str
    model: str
    index: str
    #: How the run was set up (seed, sample sizes, templates, ...): enough to re-run it.
    settings: dict[str, Any]
    #: Collection facts: images, rows left out, duplicates, missing files.
    collection: dict[str, int]
    methods: list[MethodResult]
    #: Metric names shown in tables, in order ("mAP" is always first).
    columns: list[str]
    notes: list[str] = field(default_factory=list)

    def to_json(self, per_query: bool = False) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "data": self.data,
            "model": self.model,
            "index": self.index,
            "settings": self.settings,
            "collection": self.collection,
            "results": [m.to_json(per_query) for m in self.methods],
            "notes": self.notes,
        }

    def method(self, name: str) -> MethodResult:
        for result in self.methods:
            if result.method == name:
                return result
        raise KeyError(name)
