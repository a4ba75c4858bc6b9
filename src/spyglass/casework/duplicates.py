"""Near-duplicates: images that show the same picture after a re-encode, a resize, a
crop or a colour change: pairs found by a range search in the image space (each
image's nearest neighbours above a cosine), or among those neighbours confirmed by a
perceptual hash where a resize or a re-encode moves the embedding more than the hash
(:mod:`spyglass.casework.perceptual`); joined into groups (connected components, by
union-find). :class:`DuplicateRule` holds the measured defaults (docs/casework.md).

Exact copies (the same bytes) are one image already: the catalogue keys images by
content hash, so a group's member is an image with all its copies
(:attr:`~spyglass.store.catalogue.ImageRecord.paths`).

Cost, for N images of d dimensions and the bound k on neighbours per image: N
k-bounded searches of the image space's store, in batches (matrix products), plus one
perceptual hash per image not hashed yet (one file read, once). An exact store (the
default below 100,000 images) scores every row per search: O(N² · d); measured on two
busy cores at d = 1280, 4.8 ms per image at 20,000 rows and 16 ms at 40,000. From
100,000 images the store is approximate (IVF): a search visits ``nprobe`` of about √N
lists and re-scores a bounded number of candidates, so the whole pass is about
O(N · √N · d): 5.9 ms per image at 200,000 rows, some 4 hours for 1M images on two
cores where an all-pairs pass would take days (docs/casework.md). Memory holds at most
N · k pairs (those above the candidate floor), never an N x N matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace

import numpy as np

from spyglass.casework.perceptual import PerceptualHashes
from spyglass.errors import InvalidQuery
from spyglass.query.terms import Query
from spyglass.search import SearchResult
from spyglass.store.base import VectorStore
from spyglass.store.index import Index

#: Cosine in the image space from which two images are near-duplicates on that alone:
#: chosen by measurement (docs/casework.md, scripts/bench_duplicates.py).
DEFAULT_THRESHOLD = 0.93
#: Perceptual hashes this many bits apart or fewer (of 64) make two neighbours
#: near-duplicates too: a resize to a quarter or a heavy re-encode moves the embedding
#: more than the hash (measured, docs/casework.md). ``None``: embeddings alone.
DEFAULT_PHASH_DISTANCE: int | None = 4
#: The cosine a neighbour needs before its hash is compared: the embedding proposes,
#: the hash confirms, so no pair of far-apart images is ever compared.
CANDIDATE_FLOOR = 0.5
#: Neighbours looked at per image. An image with more near-duplicates than this still
#: joins all of them through theirs (groups are connected components).
NEIGHBOUR_BOUND = 32
#: Images searched per call to the store (one matrix product each).
BATCH = 256

#: (image id, image id, cosine), the first id the smaller.
Edge = tuple[int, int, float]


@dataclass(frozen=True)
class DuplicateGroup:
    """Images (ids, ascending) that are near-duplicates of each other, directly or
    through other members. ``weakest`` is the lowest cosine among the links that join
    the group (its maximum spanning tree): the group holds together at any threshold
    up to it."""

    members: tuple[int, ...]
    weakest: float

    @property
    def size(self) -> int:
        return len(self.members)


class UnionFind:
    """Disjoint sets over the ids it has seen (sparse: ids never joined cost nothing)."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        parent = self._parent.setdefault(item, item)
        if parent == item:
            return item
        root = self.find(parent)
        self._parent[item] = root  # path compression
        return root

    def union(self, a: int, b: int) -> bool:
        """Join the sets of ``a`` and ``b``; whether they were apart."""
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return False
        # The smaller id becomes the root: the same input always gives the same roots.
        low, high = sorted((root_a, root_b))
        self._parent[high] = low
        return True

    def items(self) -> list[int]:
        return list(self._parent)


@dataclass(frozen=True)
class DuplicateRule:
    """When two images are near-duplicates: one is among the other's
    :data:`NEIGHBOUR_BOUND` nearest in the image space, and their cosine reaches
    ``threshold``, or it reaches ``candidate_floor`` and their perceptual hashes differ
    in at most ``phash_distance`` bits (``None``: cosine alone)."""

    threshold: float = DEFAULT_THRESHOLD
    phash_distance: int | None = DEFAULT_PHASH_DISTANCE
    candidate_floor: float = CANDIDATE_FLOOR
    neighbours: int = NEIGHBOUR_BOUND

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise InvalidQuery(
                f"the near-duplicate threshold is a cosine in (0, 1], not {self.threshold}"
            )
        if self.phash_distance is not None and not 0 <= self.phash_distance <= 32:
            raise InvalidQuery(
                f"the pHash distance is a number of bits from 0 to 32, not {self.phash_distance}"
            )
        if self.neighbours < 1:
            raise InvalidQuery("near-duplicates need at least one neighbour per image")

    @property
    def uses_hashes(self) -> bool:
        return self.phash_distance is not None

    @property
    def lowest_cosine(self) -> float:
        """The cosine below which no pair is a near-duplicate."""
        return min(self.threshold, self.candidate_floor) if self.uses_hashes else self.threshold

    def joins(self, cosine: float, bits_apart: int | None) -> bool:
        if cosine >= self.threshold:
            return True
        return (
            self.phash_distance is not None
            and cosine >= self.candidate_floor
            and bits_apart is not None
            and bits_apart <= self.phash_distance
        )

    def describe(self) -> str:
        words = f"cosine >= {self.threshold:g}"
        if self.phash_distance is not None:
            words += (
                f", or cosine >= {self.candidate_floor:g} and pHash within "
                f"{self.phash_distance} bits"
            )
        return words + f" (among each image's {self.neighbours} nearest)"


def neighbour_edges(
    store: VectorStore,
    image_ids: Sequence[int],
    rule: DuplicateRule,
    hashes: PerceptualHashes | None = None,
    *,
    batch: int = BATCH,
) -> list[Edge]:
    """Pairs (a, b, cosine), a < b, that ``rule`` joins, between each of ``image_ids``
    and its nearest visible images in ``store``."""
    edges: dict[tuple[int, int], float] = {}
    ids = np.asarray(image_ids, np.int64)
    lowest = rule.lowest_cosine
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        found = store.search(store.fetch(chunk), rule.neighbours + 1)  # +1: the image itself
        # Most neighbours are far below the floor: only the few above it reach Python.
        near = (found.scores >= lowest) & (found.owners >= 0) & (found.owners != chunk[:, None])
        rows, columns = np.nonzero(near)
        for image_id, other, score in zip(
            chunk[rows].tolist(),
            found.owners[rows, columns].tolist(),
            found.scores[rows, columns].tolist(),
            strict=True,
        ):
            bits = hashes.distance(image_id, other) if hashes is not None else None
            if not rule.joins(score, bits):
                continue
            pair = (min(image_id, other), max(image_id, other))
            edges[pair] = max(edges.get(pair, -1.0), float(score))
    return [(a, b, s) for (a, b), s in edges.items()]


def group_edges(edges: Iterable[Edge]) -> list[DuplicateGroup]:
    """Connected components of the graph the edges draw (Kruskal's order, so that each
    group knows its weakest link), largest first, then by smallest member."""
    joined = UnionFind()
    weakest: dict[int, float] = {}
    for a, b, score in sorted(edges, key=lambda e: (-e[2], e[0], e[1])):
        root_a, root_b = joined.find(a), joined.find(b)
        if root_a == root_b:
            continue
        low = min(weakest.get(root_a, 1.0), weakest.get(root_b, 1.0), score)
        joined.union(a, b)
        weakest[joined.find(a)] = low
    members: dict[int, list[int]] = {}
    for item in joined.items():
        members.setdefault(joined.find(item), []).append(item)
    groups = [
        DuplicateGroup(tuple(sorted(ids)), round(weakest[root], 6))
        for root, ids in members.items()
        if len(ids) > 1
    ]
    return sorted(groups, key=lambda g: (-g.size, g.members[0]))


def find_duplicate_groups(
    index: Index,
    rule: DuplicateRule | None = None,
    hashes: PerceptualHashes | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[DuplicateGroup]:
    """Every group of two or more near-duplicate images in ``index`` (searchable
    images only), largest first, then by smallest member id.

    ``hashes``: the perceptual hashes to compare (a rule with a pHash distance and no
    hashes joins by cosine alone); :func:`hash_index` makes them.
    ``progress(done, total)`` is called after each batch."""
    rule = rule or DuplicateRule()
    store = index.stores.get(index.info.image_space)
    if store is None:
        return []
    owners = store.visible_owners()
    edges: list[Edge] = []
    for start in range(0, len(owners), BATCH * 8):
        chunk = owners[start : start + BATCH * 8]
        edges += neighbour_edges(store, chunk.tolist(), rule, hashes)
        if progress is not None:
            progress(min(start + len(chunk), len(owners)), len(owners))
    return group_edges(edges)


def hash_index(
    index: Index, *, save: bool = True, progress: Callable[[int, int], None] | None = None
) -> PerceptualHashes:
    """The perceptual hashes of every searchable image of ``index``: those cached in
    the index folder, plus the images hashed now (saved back unless ``save`` is False:
    a reader that may not write keeps them in memory)."""
    hashes = PerceptualHashes.load(index)
    store = index.stores.get(index.info.image_space)
    if store is None:
        return hashes
    added = hashes.add_missing(index, store.visible_owners().tolist(), progress)
    if added and save:
        with suppress(OSError):  # an index folder we may not write: hash again next time
            hashes.save(index)
    return hashes


def groups_around(
    index: Index,
    image_ids: Sequence[int],
    rule: DuplicateRule,
    hashes: PerceptualHashes | None = None,
    *,
    most: int = 10_000,
) -> UnionFind:
    """The near-duplicate groups that hold ``image_ids``, followed from member to
    member until closed (or until ``most`` images were searched): the same groups
    :func:`find_duplicate_groups` finds for them, at the cost of their size."""
    joined = UnionFind()
    store = index.stores[index.info.image_space]
    searched: set[int] = set()
    frontier = list(dict.fromkeys(int(i) for i in image_ids))
    while frontier and len(searched) < most:
        frontier = frontier[: most - len(searched)]
        searched.update(frontier)
        reached: list[int] = []
        for a, b, _ in neighbour_edges(store, frontier, rule, hashes):
            joined.union(a, b)
            reached += [a, b]
        frontier = [i for i in dict.fromkeys(reached) if i not in searched]
    for image_id in image_ids:
        joined.find(int(image_id))
    return joined


@dataclass(frozen=True)
class CollapsedResult:
    """A result standing for its near-duplicate group: the group's best-ranked member.

    ``duplicates`` are the other members' ids (those in the ranking first, in rank
    order, then the rest by id); ``group_size`` counts the result too."""

    result: SearchResult
    duplicates: tuple[int, ...] = ()

    @property
    def group_size(self) -> int:
        return 1 + len(self.duplicates)

    @property
    def image_id(self) -> int:
        return self.result.image_id


def collapse_duplicates(
    search: Callable[[Query], list[SearchResult]],
    index: Index,
    query: Query,
    rule: DuplicateRule | None = None,
    hashes: PerceptualHashes | None = None,
) -> list[CollapsedResult]:
    """Results ``offset .. offset + k`` of ``query``'s ranking with each near-duplicate
    group collapsed to its best-ranked member. ``search`` is the engine's search; the
    ranking is read deeper (doubling) until ``offset + k`` groups are found or it
    ends. ``hashes``: those cached by ``spyglass duplicates`` (images without one are
    joined by cosine alone)."""
    rule = rule or DuplicateRule()
    wanted = query.offset + query.k
    available = index.count()
    depth = min(max(wanted * 2, wanted + 20), max(available, 1))
    # With filters, a group shows only the members the filters keep (its size too):
    # the groups are the collection's, what is shown of them is what was searched.
    among = None
    if not query.filters.empty:
        from spyglass.query.filters import allowed_ids

        among = set(allowed_ids(index.catalogue, query.filters).tolist())
    while True:
        ranked = search(replace(query, offset=0, k=depth))
        kept = collapse_ranking(index, ranked, rule, hashes, among)
        exhausted = len(ranked) < depth or depth >= available
        if len(kept) >= wanted or exhausted:
            return kept[query.offset : wanted]
        depth = min(depth * 2, available)


def collapse_ranking(
    index: Index,
    ranked: list[SearchResult],
    rule: DuplicateRule,
    hashes: PerceptualHashes | None = None,
    among: set[int] | None = None,
) -> list[CollapsedResult]:
    """A ranking with each group's members after its first folded into it; with
    ``among`` (the ids metadata filters keep), only those members are listed."""
    joined = groups_around(index, [r.image_id for r in ranked], rule, hashes)
    rank_of = {r.image_id: n for n, r in enumerate(ranked)}
    members: dict[int, list[int]] = {}
    for item in joined.items():
        members.setdefault(joined.find(item), []).append(item)
    kept: list[CollapsedResult] = []
    seen: set[int] = set()
    for result in ranked:
        root = joined.find(result.image_id)
        if root in seen:
            continue
        seen.add(root)
        others = [
            i
            for i in members.get(root, [])
            if i != result.image_id and (among is None or i in among)
        ]
        others.sort(key=lambda i: (rank_of.get(i, len(ranked)), i))
        kept.append(CollapsedResult(result, tuple(others)))
    return kept
