"""Scores over a union of candidate lists: what late fusion needs from each list.

A late-fusion method searches several spaces, takes the union of the lists and needs
every candidate's score in every space: from the list that found it, else the cosine of
its stored vector. With 1,000-deep lists that is up to 2,000 candidates per space and
query, so the bookkeeping is done with sorted arrays, not per-candidate Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spyglass.store.base import VectorStore


def union_of(*lists: Sequence[tuple[int, float]]) -> np.ndarray:
    """(n,) int64: the ids found by any of the (id, score) lists, sorted, each once."""
    ids = [np.fromiter((i for i, _ in found), np.int64, len(found)) for found in lists]
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)


def scores_over(
    store: VectorStore,
    query: np.ndarray,
    candidates: np.ndarray,
    found: Sequence[tuple[int, float]],
) -> np.ndarray:
    """(n,) float64: each of ``candidates`` (n,) sorted int64 ids scored for ``query``
    (dims,) float32: its score in ``found`` (the (id, score) list the search returned)
    where it is there, else its stored vector's inner product with ``query``."""
    ids = np.fromiter((i for i, _ in found), np.int64, len(found))
    listed = np.fromiter((s for _, s in found), np.float64, len(found))
    order = np.argsort(ids, kind="stable")
    ids, listed = ids[order], listed[order]
    scores = np.empty(len(candidates), np.float64)
    at = np.searchsorted(ids, candidates)
    known = at < len(ids)
    known[known] = ids[at[known]] == candidates[known]
    scores[known] = listed[at[known]]
    missing = candidates[~known]
    if len(missing):
        scores[~known] = store.fetch(missing) @ query
    return scores
