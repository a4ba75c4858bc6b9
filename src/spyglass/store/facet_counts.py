"""The filter panel's unfiltered counts, stored in the catalogue and kept by every commit.

Counting the facets of the whole catalogue reads every image and file row (about 10 s
at a million images), and a reader's answer lasts only until the next commit. So the
catalogue stores the unfiltered counts (table ``facet_counts``: facet, value, images;
facet ``total`` holds the number of live images) and every change that can move them
adds what it moved, in the same SQLite transaction as the change: a crash never leaves
the counts out of step with the rows, and a reader sees the counts of the rows it sees.

What a change moved is counted by the reference SQL itself
(:func:`~spyglass.query.filters.recount_facets`) over the images it touches, before
and after: the counts then follow that definition exactly (live images only, an image
once per top folder among its paths, years by the date rule...) at the cost of what
the commit touched, never of what the index holds. The touched images:

- a commit: the new images and those whose files were added, removed or repointed;
- removed files: the images they showed;
- header metadata read later: those images;
- a new root: the images with a file under it (their top folder may change).

A catalogue made before the table (schema version 2) gets it marked not kept
(``meta.facet_counts_kept = '0'``): readers count in SQL as before, writers skip the
upkeep, and the writer counts everything once when it closes, after which the counts
are kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from spyglass.query.filters import FACET_OWN, Facets, recount_facets
from spyglass.store.catalogue import FACET_COUNTS_KEPT, Catalogue

#: The stored facet holding the number of live images (its value is "").
TOTAL = "total"
#: Image ids per counting query (one ``IN`` list each).
_CHUNK = 500


def counts_are_kept(catalogue: Catalogue) -> bool:
    """Whether ``facet_counts`` holds the counts of the rows (O(1))."""
    return catalogue.has_table("facet_counts") and catalogue.meta(FACET_COUNTS_KEPT) == "1"


def stored_facets(catalogue: Catalogue) -> Facets | None:
    """The unfiltered counts as stored, ordered as the SQL orders them (most first,
    ties by value; years by year; gps yes then no); ``None`` when they are not kept."""
    if not counts_are_kept(catalogue):
        return None
    by_facet: dict[str, dict[str, int]] = {facet: {} for facet in (*FACET_OWN, TOTAL)}
    for facet, value, n in catalogue.facet_count_rows():
        by_facet.setdefault(facet, {})[value] = n

    def most_first(counts: dict[str, int]) -> dict[str, int]:
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    gps = by_facet["gps"]
    return Facets(
        total=by_facet[TOTAL].get("", 0),
        folders=most_first(by_facet["folders"]),
        formats=most_first(by_facet["formats"]),
        cameras=most_first(by_facet["cameras"]),
        years=dict(sorted(by_facet["years"].items())),
        gps={"yes": gps.get("yes", 0), "no": gps.get("no", 0)},
    )


@dataclass
class FacetCountsChange:
    """The upkeep of one change: :meth:`before` counts the touched images' facets
    inside the transaction, before the change; :meth:`after` counts them again once it
    is made and adds the difference to the stored counts. Nothing happens where the
    counts are not kept (they are counted in full later)."""

    catalogue: Catalogue
    image_ids: list[int]
    counted: Counter[tuple[str, str]] | None

    @classmethod
    def before(cls, catalogue: Catalogue, image_ids: Iterable[int]) -> FacetCountsChange:
        """Call inside the transaction, before changing the rows of ``image_ids``."""
        ids = sorted({int(i) for i in image_ids})
        if not ids or not counts_are_kept(catalogue):
            return cls(catalogue, ids, None)
        return cls(catalogue, ids, _counts_among(catalogue, ids))

    def after(self) -> None:
        """Call inside the same transaction, once the change is made."""
        if self.counted is None:
            return
        now = _counts_among(self.catalogue, self.image_ids)
        keys = set(now) | set(self.counted)
        self.catalogue.add_to_facet_counts(
            (facet, value, now[facet, value] - self.counted[facet, value])
            for facet, value in sorted(keys)
        )


def store_full_count(catalogue: Catalogue) -> None:
    """Count every facet by SQL and store the counts as kept, in one transaction:
    O(N), for a catalogue whose counts are not kept yet (a writer calls it)."""
    with catalogue.transaction():
        counted = _as_counter(recount_facets(catalogue))
        catalogue.replace_facet_counts((f, v, n) for (f, v), n in sorted(counted.items()))


def _counts_among(catalogue: Catalogue, ids: list[int]) -> Counter[tuple[str, str]]:
    """(facet, value) -> images among ``ids``, by the reference SQL, 500 ids a query
    (disjoint chunks of images: their counts add up)."""
    counted: Counter[tuple[str, str]] = Counter()
    for start in range(0, len(ids), _CHUNK):
        counted.update(_as_counter(recount_facets(catalogue, among=ids[start : start + _CHUNK])))
    return counted


def _as_counter(facets: Facets) -> Counter[tuple[str, str]]:
    counted: Counter[tuple[str, str]] = Counter()
    if facets.total:
        counted[TOTAL, ""] = facets.total
    for facet in FACET_OWN:
        for value, n in getattr(facets, facet).items():
            if n:
                counted[facet, value] = n
    return counted
