"""Each image's filter fields, read from the catalogue by the same SQL the filters use.

A store that evaluates filters itself (Milvus, see
:class:`~spyglass.store.base.FilterableStore`) keeps these values beside the image's
rows; reading them through ``DATE_SQL`` and the same join as
:func:`~spyglass.query.filters.allowed_ids` is what makes its answers the catalogue's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from spyglass.query.filters import DATE_SQL, images_with_meta
from spyglass.store.base import FilterFields

if TYPE_CHECKING:
    from spyglass.store.catalogue import Catalogue

#: Image ids per SQL query (SQLite's bound on host parameters is far above).
_CHUNK = 500


def filter_fields(catalogue: Catalogue, image_ids: Iterable[int]) -> dict[int, FilterFields]:
    """Image id -> its :class:`FilterFields`, for the ids the catalogue holds (dead
    images too: their fields matter again if they come back)."""
    ids = sorted({int(i) for i in image_ids})
    found: dict[int, FilterFields] = {}
    source = images_with_meta(catalogue)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        paths: dict[int, list[str]] = {}
        for image_id, path in catalogue.execute(
            f"SELECT image_id, path FROM files WHERE image_id IN ({marks})", chunk
        ):
            paths.setdefault(int(image_id), []).append(str(path))
        for image_id, date, format_, width, height, camera, has_gps in catalogue.execute(
            f"SELECT i.id, {DATE_SQL}, i.format, i.width, i.height, "
            "COALESCE(m.make, '') || ' ' || COALESCE(m.model, ''), m.latitude IS NOT NULL "
            f"FROM {source} WHERE i.id IN ({marks})",
            chunk,
        ):
            found[int(image_id)] = FilterFields(
                paths=tuple(sorted(paths.get(int(image_id), ()))),
                date=None if date is None else float(date),
                format=str(format_ or ""),
                width=int(width or 0),
                height=int(height or 0),
                camera=str(camera),
                has_gps=bool(has_gps),
            )
    return found
