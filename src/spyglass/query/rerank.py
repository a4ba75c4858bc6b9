"""Re-ranking the top of a ranking: selectable by name (``Query.rerank``)."""

from __future__ import annotations

from collections.abc import Callable

from spyglass.errors import InvalidQuery
from spyglass.query.methods import RankContext, Ranking

#: (context, ranking of the top results) -> new ranking of the same results.
Reranker = Callable[[RankContext, Ranking], Ranking]

_RERANKERS: dict[str, Reranker] = {"none": lambda context, ranking: ranking}
_ABOUT: dict[str, str] = {"none": "keep the method's order"}
#: How many of the top results a re-ranker sees (it re-orders those only).
RERANK_DEPTH = 300


def register_reranker(name: str, about: str) -> Callable[[Reranker], Reranker]:
    def wrap(function: Reranker) -> Reranker:
        _RERANKERS[name] = function
        _ABOUT[name] = about
        return function

    return wrap


def reranker_names() -> dict[str, str]:
    return dict(_ABOUT)


def get_reranker(name: str) -> Reranker:
    if name not in _RERANKERS:
        known = ", ".join(sorted(_RERANKERS))
        raise InvalidQuery(f"unknown re-ranking '{name}': choose one of {known}")
    return _RERANKERS[name]
