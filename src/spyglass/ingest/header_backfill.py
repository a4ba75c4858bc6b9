"""Read the headers of images indexed before the catalogue kept header metadata.

A catalogue of schema version 1 has images with no ``image_meta`` row. Their vectors
are fine, so they are not embedded again: ``spyglass index`` opens each one's file once
more for its header only (Pillow parses the header, no pixel is decoded; about a
millisecond a file) and records what it says, so that date, camera and GPS filters
see them too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from PIL import Image

from spyglass.image_meta import HeaderMeta, read_header_meta
from spyglass.store.catalogue import HEADERS_BACKFILLED, Catalogue
from spyglass.store.facet_counts import FacetCountsChange

#: Images read per catalogue transaction.
_BATCH = 500


def backfill_header_meta(
    catalogue: Catalogue, recorded: Callable[[list[int]], None] | None = None
) -> int:
    """Record header metadata for every live image that has none; returns how many.
    A file that cannot be opened now gets an empty record (its header says nothing we
    can read), so it is not tried at every run. ``recorded`` is told each batch's image
    ids inside the transaction that records them (a store keeping filter fields
    rewrites theirs there)."""
    # Set once every image has its header: images added since get theirs when they
    # are inserted, so later runs skip the look over every image.
    if catalogue.meta(HEADERS_BACKFILLED) == "1":
        return 0
    done = 0
    while True:
        missing = catalogue.images_without_header_meta(_BATCH)
        if not missing:
            catalogue.set_meta(HEADERS_BACKFILLED, "1")
            return done
        entries = [(image_id, _header_of(path)) for image_id, path in missing]
        with catalogue.transaction():
            # A date, camera or position recorded moves these images' facet counts.
            facet_change = FacetCountsChange.before(catalogue, [i for i, _ in entries])
            catalogue.insert_header_meta(entries)
            facet_change.after()
            if recorded is not None:
                recorded([image_id for image_id, _ in entries])
        done += len(entries)


def _header_of(path: str) -> HeaderMeta:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                return read_header_meta(image)
    except Exception:  # unreadable now: nothing to record but that it was tried
        return HeaderMeta()
