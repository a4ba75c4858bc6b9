"""Random images of a space, drawn without reading every row: what the learned feedback
models take as negatives and late fusion standardises its scores by.

At a million images, listing every visible owner to draw from costs more than the
query it serves; drawing row positions and mapping them to owners costs O(sample). A
sample is drawn once per state of the index and kept by it (:meth:`Index.derived`),
so the same index gives the same sample, and a query reads no rows for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from spyglass.store.base import VectorStore
from spyglass.store.index import Index

#: Rounds of drawing by position before falling back to the list (a collection whose
#: rows are mostly hidden, such as the size study's subsets).
SAMPLE_ROUNDS = 4


@dataclass(frozen=True)
class RandomImages:
    """Visible images of one space drawn at random: ``owners`` (n,) int64 sorted and
    their ``vectors`` (n, dims) float32."""

    owners: np.ndarray
    vectors: np.ndarray


def random_images(index: Index, space: str, size: int, seed: int = 0) -> RandomImages:
    """``size`` visible images of ``space`` (all of them if fewer) with their vectors,
    drawn by row position (:func:`sample_by_position`) or, where the store cannot be
    sampled so, from the list of owners; seeded by the number of rows and ``seed``, and
    kept by the index until the set of searchable images changes.

    Drawn per query instead, feedback's 1,000 scattered rows cost about 25 ms of a
    100 ms ``svm-fusion`` query at 1M images (docs/methods.md); kept, 5 MB per 1,280-d
    space."""

    def draw() -> RandomImages:
        store = index.stores[space]
        nobody = np.zeros(0, np.int64)
        salt = (seed,) if seed else ()
        owners = sample_by_position(store, size, nobody, salt=salt)
        if owners is None:
            owners = sample_from_list(store, size, nobody, salt=salt)
        if not len(owners):
            return RandomImages(owners, np.zeros((0, store.dims), np.float32))
        return RandomImages(owners, store.fetch(owners).astype(np.float32))

    return index.derived(("random images", space, size, seed), draw)


def sample_from_list(
    store: VectorStore, count: int, marked: np.ndarray, salt: Sequence[int] = ()
) -> np.ndarray:
    """(m,) int64 sorted: ``count`` distinct visible owners of ``store`` (all of them if
    fewer), none of ``marked``, drawn from the list of every visible owner. O(N) in the
    rows of the store; what every collection got before sampling by position."""
    owners = store.visible_owners()
    if len(marked):
        owners = owners[~np.isin(owners, marked)]
    if len(owners) == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng([len(owners), *salt, *sorted(int(i) for i in marked)])
    return np.sort(rng.choice(owners, size=min(count, len(owners)), replace=False))


@runtime_checkable
class OwnersByRow(Protocol):
    """A store that can say which owner each of its rows belongs to, in O(1) per query
    (the local and approximate stores keep that array in memory once read)."""

    def owners(self) -> np.ndarray:
        """(rows,) int64: the owner of every row, in row order."""
        ...

    def hidden_owners(self) -> AbstractSet[int]:
        """The owners hidden now (O(1) membership tests)."""
        ...


def sample_by_position(
    store: VectorStore, count: int, marked: np.ndarray, salt: Sequence[int] = ()
) -> np.ndarray | None:
    """(count,) int64 sorted: distinct visible owners of ``store``, none of ``marked``,
    drawn by row position; ``None`` where the store cannot be sampled so, or when
    ``SAMPLE_ROUNDS`` rounds of drawing found fewer than ``count`` (a store whose rows
    are nearly all hidden; the caller then draws from the whole list).

    Each round draws row positions uniformly with replacement, maps them to owners and
    keeps, in the order drawn, the first occurrence of each owner that is visible, not
    marked and not kept already: a uniform draw without replacement among the visible
    unmarked owners (with one row per owner, as in the spaces sampled here). A round
    draws what is still wanted divided by the share of draws the last round kept (at
    least 1/16), so work per call is at most about ``SAMPLE_ROUNDS`` x 16 x ``count``
    positions and set look-ups, whatever the number of rows. Seeded by the number of
    rows, ``salt`` and the marked ids."""
    # The store protocol cannot say whether an owner is hidden without listing every
    # visible owner; the local stores (exact and approximate) can. Other stores are
    # sampled from the list.
    if not isinstance(store, OwnersByRow):
        return None
    hidden = store.hidden_owners()
    row_owners = store.owners()
    rows = len(row_owners)
    if rows == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng([rows, *salt, *sorted(int(i) for i in marked)])
    leave_out = {int(i) for i in marked.tolist()}
    kept: list[int] = []
    share = 1.0
    for _ in range(SAMPLE_ROUNDS):
        wanted = count - len(kept)
        # A little more than needed, so that one round nearly always suffices.
        size = int(wanted / max(share, 1 / 16) * 1.125) + 8
        before = len(kept)
        for owner in row_owners[rng.integers(0, rows, size=size)].tolist():
            if owner in leave_out or owner in hidden:
                continue
            leave_out.add(owner)
            kept.append(owner)
            if len(kept) == count:
                return np.sort(np.array(kept, np.int64))
        share = (len(kept) - before) / size
    return None
