"""An exact in-memory vector store: the brute-force reference every store must match."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from spyglass.store.base import Neighbours, empty_neighbours, selected


class MemoryVectorStore:
    """Exact search by a full matrix product; nothing is written to disk."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self._owners = np.zeros(0, np.int64)
        self._vectors = np.zeros((0, dims), np.float32)
        self._hidden: set[int] = set()

    def __len__(self) -> int:
        return len(self._owners)

    def add(self, owners: np.ndarray, vectors: np.ndarray) -> None:
        owners, vectors = _checked(owners, vectors, self.dims)
        self._owners = np.concatenate([self._owners, owners])
        self._vectors = np.concatenate([self._vectors, vectors])

    def flush(self) -> int:
        return len(self)

    def set_hidden(self, owners: Iterable[int], hidden: bool = True) -> None:
        ids = {int(o) for o in owners}
        if hidden:
            self._hidden |= ids
        else:
            self._hidden -= ids

    def search(self, queries: np.ndarray, k: int, among: np.ndarray | None = None) -> Neighbours:
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        result = empty_neighbours(len(queries), k)
        visible = ~np.isin(self._owners, list(self._hidden)) if self._hidden else None
        among = selected(among)
        if among is not None:
            inside = np.isin(self._owners, among)
            visible = inside if visible is None else visible & inside
        owners = self._owners if visible is None else self._owners[visible]
        vectors = self._vectors if visible is None else self._vectors[visible]
        if len(owners) == 0 or k <= 0:
            return result
        scores = queries @ vectors.T
        for i, row in enumerate(scores):
            best: dict[int, float] = {}
            for owner, score in zip(owners.tolist(), row.tolist(), strict=True):
                if owner not in best or score > best[owner]:
                    best[owner] = score
            # Ties broken by owner id so that every store agrees on the order.
            ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
            for j, (owner, score) in enumerate(ranked):
                result.owners[i, j] = owner
                result.scores[i, j] = score
        return result

    def fetch(self, owners: np.ndarray) -> np.ndarray:
        first: dict[int, int] = {}
        for row, owner in enumerate(self._owners.tolist()):
            first.setdefault(owner, row)
        rows = [first[int(o)] for o in np.asarray(owners).ravel()]
        return self._vectors[rows].copy()

    def visible_owners(self) -> np.ndarray:
        unique = np.unique(self._owners)
        return np.array([o for o in unique.tolist() if o not in self._hidden], np.int64)


def _checked(owners: np.ndarray, vectors: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    owners = np.asarray(owners, np.int64).ravel()
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dims or len(vectors) != len(owners):
        raise ValueError(
            f"expected {len(owners)} vectors of {dims} dims, got array of shape {vectors.shape}"
        )
    return owners, vectors
