"""Metadata filters: which images a search may return, decided by the catalogue.

A :class:`Filters` value is parsed from the CLI's or the API's strings (bad input is
one :class:`~spyglass.errors.InvalidQuery` line) and becomes the sorted ids of the
images it keeps by one SQL query (:func:`allowed_ids`); the vector stores then search
among those ids only (``VectorStore.search(..., among=ids)``), so a narrow filter still
returns k results. With no query at all, :func:`browse` lists the kept images by date.

An image's *date* is its EXIF capture time (DateTimeOriginal, else DateTimeDigitized,
else DateTime; EXIF writes wall-clock time with no zone, read here as UTC), else the
modification time of its oldest file. ``after`` and ``before`` are inclusive at the
precision given: ``--after 2020-03 --before 2020-05`` keeps March 1st 00:00 up to the
end of May 31st (UTC).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spyglass.errors import InvalidQuery
from spyglass.images import DECODED_FORMATS

if TYPE_CHECKING:
    from spyglass.store.catalogue import Catalogue

#: What users type for a format -> Pillow's name, as the catalogue records it.
FORMAT_NAMES = {name.lower(): name for name in DECODED_FORMATS} | {
    "jpg": "JPEG",
    "tif": "TIFF",
    "jp2": "JPEG2000",
}

#: The keys :meth:`Filters.to_json` writes; :meth:`Filters.from_json` refuses any other.
RECORDED_FILTER_KEYS = frozenset(
    {"under", "after", "before_exclusive", "camera", "has_gps", "formats", "min_size"}
)

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{1,2})(?:-(?P<d>\d{1,2})"
    r"(?:[T ](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?)?)?)?Z?$"
)


@dataclass(frozen=True)
class Filters:
    """What an image must be to be searched.

    ``under``: absolute folders; an image with a file under any of them. ``after`` /
    ``before``: seconds since 1970 (UTC), the image's date >= after and < before.
    ``camera``: a case-insensitive part of "make model". ``has_gps``: True (a position
    recorded), False (none), None (either). ``formats``: Pillow format names (JPEG,
    PNG...). ``min_width`` / ``min_height``: pixels, as displayed (EXIF orientation
    applied). Empty filters keep every image.
    """

    under: tuple[str, ...] = ()
    after: float | None = None
    before: float | None = None
    camera: str | None = None
    has_gps: bool | None = None
    formats: tuple[str, ...] = ()
    min_width: int = 0
    min_height: int = 0

    @property
    def empty(self) -> bool:
        return self == Filters()

    @classmethod
    def parse(
        cls,
        *,
        under: tuple[str, ...] | list[str] = (),
        after: str | None = None,
        before: str | None = None,
        camera: str | None = None,
        has_gps: bool | None = None,
        formats: tuple[str, ...] | list[str] = (),
        min_size: str | None = None,
        cwd: Path | None = None,
    ) -> Filters:
        """Filters from strings as users type them. ``under`` paths are made absolute
        against ``cwd``; without one, a relative path is refused (the API's rule)."""
        folders = []
        for path in under:
            if not str(path).strip():
                continue
            given = Path(str(path)).expanduser()
            if not given.is_absolute():
                if cwd is None:
                    raise InvalidQuery(f"under: {path!r} is not an absolute folder path")
                given = cwd / given
            folders.append(str(Path(_normalised(given))))
        start = None if not after else parse_date(after, "after")[0]
        end = None if not before else parse_date(before, "before")[1]
        if start is not None and end is not None and start >= end:
            raise InvalidQuery(f"after {after} and before {before} leave no date")
        width, height = (0, 0) if not min_size else parse_size(min_size)
        camera_text = (camera or "").strip() or None
        return cls(
            under=tuple(sorted(set(folders))),
            after=start,
            before=end,
            camera=camera_text,
            has_gps=has_gps,
            formats=tuple(sorted({parse_format(f) for f in formats if str(f).strip()})),
            min_width=width,
            min_height=height,
        )

    def to_json(self) -> dict[str, Any]:
        """The filters set, as case files, saved searches and the API write them (dates
        as ISO 8601 instants: ``after`` the first second kept, ``before`` the first
        one left out); ``{}`` for none."""
        document: dict[str, Any] = {}
        if self.under:
            document["under"] = list(self.under)
        if self.after is not None:
            document["after"] = _iso(self.after)
        if self.before is not None:
            document["before_exclusive"] = _iso(self.before)
        if self.camera is not None:
            document["camera"] = self.camera
        if self.has_gps is not None:
            document["has_gps"] = self.has_gps
        if self.formats:
            document["formats"] = list(self.formats)
        if self.min_width or self.min_height:
            document["min_size"] = f"{self.min_width}x{self.min_height}"
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any] | None) -> Filters:
        """What :meth:`to_json` wrote. Raises :class:`InvalidQuery`."""
        if not document:
            return cls()
        if not isinstance(document, dict):
            raise InvalidQuery("filters must be an object")
        unknown = sorted(set(document) - RECORDED_FILTER_KEYS)
        if unknown:
            # A search recorded by a newer version, or edited: run without the filter,
            # it would return images the filter was there to keep out.
            raise InvalidQuery(
                f"the recorded filters hold {', '.join(map(repr, unknown))}, which this "
                "version of Spyglass does not know: the search is not run without it "
                f"(known: {', '.join(sorted(RECORDED_FILTER_KEYS))})"
            )
        try:
            before = document.get("before_exclusive")
            width, height = parse_size(document["min_size"]) if "min_size" in document else (0, 0)
            return cls(
                under=tuple(str(p) for p in document.get("under", ())),
                after=None if document.get("after") is None else _instant(document["after"]),
                before=None if before is None else _instant(before),
                camera=document.get("camera"),
                has_gps=document.get("has_gps"),
                formats=tuple(parse_format(f) for f in document.get("formats", ())),
                min_width=width,
                min_height=height,
            )
        except (TypeError, ValueError, KeyError) as error:
            raise InvalidQuery(f"not recorded filters: {error}") from error

    def describe(self) -> str:
        """The filters in words, for summaries and case files."""
        words = []
        if self.under:
            words.append("under " + " or ".join(self.under))
        if self.after is not None:
            words.append(f"from {_iso(self.after)}")
        if self.before is not None:
            words.append(f"before {_iso(self.before)}")
        if self.camera:
            words.append(f"camera ~ {self.camera!r}")
        if self.has_gps is not None:
            words.append("with GPS" if self.has_gps else "without GPS")
        if self.formats:
            words.append("format " + "/".join(self.formats))
        if self.min_width or self.min_height:
            words.append(f"at least {self.min_width}x{self.min_height}")
        return ", ".join(words)


def parse_date(text: str, what: str) -> tuple[float, float]:
    """``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]`` (UTC) ->
    (first second of that period, first second after it), seconds since 1970."""
    match = _DATE.match(str(text).strip())
    if match is None:
        raise InvalidQuery(
            f"{what}: {text!r} is not a date: use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        )
    parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    try:
        start = datetime(
            parts["y"],
            parts.get("m", 1),
            parts.get("d", 1),
            parts.get("H", 0),
            parts.get("M", 0),
            parts.get("S", 0),
            tzinfo=UTC,
        )
    except ValueError as error:
        raise InvalidQuery(f"{what}: {text!r} is not a date: {error}") from error
    first = float(calendar.timegm(start.timetuple()))
    if "S" in parts:
        step = 1.0
    elif "M" in parts:
        step = 60.0
    elif "d" in parts:
        step = 86400.0
    elif "m" in parts:
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return first, float(calendar.timegm((year, month, 1, 0, 0, 0)))
    else:
        return first, float(calendar.timegm((start.year + 1, 1, 1, 0, 0, 0)))
    return first, first + step


def parse_size(text: str) -> tuple[int, int]:
    """``"800x600"`` -> (800, 600)."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*", str(text))
    if match is None:
        raise InvalidQuery(f"min size: {text!r} is not WIDTHxHEIGHT in pixels (e.g. 800x600)")
    return int(match.group(1)), int(match.group(2))


def parse_format(text: str) -> str:
    """``"jpg"`` -> ``"JPEG"``; an unknown format is refused, naming the known ones."""
    name = FORMAT_NAMES.get(str(text).strip().lower())
    if name is None:
        known = ", ".join(sorted(n.lower() for n in DECODED_FORMATS))
        raise InvalidQuery(f"format: {text!r} is not one Spyglass indexes ({known})")
    return name


def _normalised(path: Path) -> str:
    """The absolute path without ``..`` or a trailing slash (symlinks are not resolved:
    the catalogue keeps the paths as they were walked)."""
    import os

    return os.path.normpath(str(path))


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _instant(text: str) -> float:
    moment = datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return float(calendar.timegm(moment.timetuple()))


# -- the catalogue side ---------------------------------------------------------------

#: Header metadata as a row source: the table, or for a catalogue that predates it
#: (opened read-only, schema version 1) a source no image joins.
_META_TABLE = "image_meta"
_NO_META = (
    "(SELECT NULL AS image_id, NULL AS taken_at, NULL AS make, NULL AS model, "
    "NULL AS latitude, NULL AS longitude, NULL AS orientation)"
)
#: The date rule in SQL: EXIF capture time, else the oldest file's modification time.
DATE_SQL = (
    "COALESCE(m.taken_at, (SELECT MIN(f.mtime_ns) FROM files f WHERE f.image_id = i.id) / 1e9)"
)


def images_with_meta(catalogue: Catalogue) -> str:
    """The SQL source every filter reads: ``images i`` joined with its header
    metadata ``m`` (an empty stand-in where the catalogue predates that table)."""
    meta = _META_TABLE if catalogue.has_table(_META_TABLE) else _NO_META
    return f"images i LEFT JOIN {meta} m ON m.image_id = i.id"


def _where(filters: Filters) -> tuple[str, list[Any]]:
    """The SQL condition on ``images i`` joined with its metadata ``m``."""
    clauses = ["i.alive = 1"]
    args: list[Any] = []
    if filters.under:
        # '/' + 1 == '0': every path under "folder/" sorts in ["folder/", "folder0").
        ranges = " OR ".join("(f.path >= ? AND f.path < ?)" for _ in filters.under)
        clauses.append(f"EXISTS (SELECT 1 FROM files f WHERE f.image_id = i.id AND ({ranges}))")
        for folder in filters.under:
            prefix = folder.rstrip("/") + "/"
            args += [prefix, prefix[:-1] + "0"]
    if filters.after is not None:
        clauses.append(f"{DATE_SQL} >= ?")
        args.append(filters.after)
    if filters.before is not None:
        clauses.append(f"{DATE_SQL} < ?")
        args.append(filters.before)
    if filters.camera:
        escaped = filters.camera.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("(COALESCE(m.make, '') || ' ' || COALESCE(m.model, '')) LIKE ? ESCAPE '\\'")
        args.append(f"%{escaped}%")
    if filters.has_gps is not None:
        clauses.append("m.latitude IS NOT NULL" if filters.has_gps else "m.latitude IS NULL")
    if filters.formats:
        clauses.append(f"i.format IN ({','.join('?' * len(filters.formats))})")
        args += list(filters.formats)
    if filters.min_width:
        clauses.append("i.width >= ?")
        args.append(filters.min_width)
    if filters.min_height:
        clauses.append("i.height >= ?")
        args.append(filters.min_height)
    return " AND ".join(clauses), args


def allowed_ids(catalogue: Catalogue, filters: Filters) -> np.ndarray:
    """(n,) int64 sorted: the live images the filters keep, by one SQL query."""
    where, args = _where(filters)
    rows = catalogue.execute(f"SELECT i.id FROM {images_with_meta(catalogue)} WHERE {where}", args)
    ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    ids.sort()
    return ids


def browse(
    catalogue: Catalogue, filters: Filters, k: int, offset: int = 0, *, oldest_first: bool = False
) -> list[tuple[int, float]]:
    """(image id, date in seconds since 1970) of the kept images ``offset`` ..
    ``offset + k``, newest first (or oldest), ties by id."""
    where, args = _where(filters)
    order = "ASC" if oldest_first else "DESC"
    rows = catalogue.execute(
        f"SELECT i.id, {DATE_SQL} AS d FROM {images_with_meta(catalogue)} WHERE {where} "
        f"ORDER BY d {order}, i.id ASC LIMIT ? OFFSET ?",
        [*args, int(k), int(offset)],
    )
    return [(int(i), float(d) if d is not None else 0.0) for i, d in rows]


def image_dates(catalogue: Catalogue, ids: list[int]) -> dict[int, float]:
    """Image id -> its date (seconds since 1970), by the date rule."""
    found: dict[int, float] = {}
    for start in range(0, len(ids), 500):
        chunk = [int(i) for i in ids[start : start + 500]]
        marks = ",".join("?" * len(chunk))
        for image_id, date in catalogue.execute(
            f"SELECT i.id, {DATE_SQL} FROM {images_with_meta(catalogue)} WHERE i.id IN ({marks})",
            chunk,
        ):
            if date is not None:
                found[int(image_id)] = float(date)
    return found


@dataclass(frozen=True)
class Facets:
    """Counts of images per value, for a filter panel: ``folders`` (the folders just
    inside each indexed root, absolute), ``formats``, ``cameras`` ("make model"),
    ``years`` (by the date rule), ``gps`` ({"yes": n, "no": n}); ``total`` images."""

    total: int
    folders: dict[str, int]
    formats: dict[str, int]
    cameras: dict[str, int]
    years: dict[str, int]
    gps: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "folders": self.folders,
            "formats": self.formats,
            "cameras": self.cameras,
            "years": self.years,
            "gps": self.gps,
        }


def count_facets(catalogue: Catalogue, filters: Filters | None = None) -> Facets:
    """Counts over the images ``filters`` keep (all live images without). Without
    filters, the counts the catalogue stores (``facet_counts``, kept by every commit:
    see :mod:`spyglass.store.facet_counts`): O(facet values), a few milliseconds at a
    million images; where they are not stored yet (a catalogue made by an older
    version, until its writer recounts), counted as with filters. With filters, by SQL
    (:func:`recount_facets`): the folder counts read every kept file's path,
    O(files), about 4 s at a million (shared machine; all five facets about 10 s)."""
    kept = filters or Filters()
    if kept.empty:
        # Imported here: the stored counts are kept with this module's SQL.
        from spyglass.store.facet_counts import stored_facets

        stored = stored_facets(catalogue)
        if stored is not None:
            return stored
    return recount_facets(catalogue, kept)


def recount_facets(
    catalogue: Catalogue, filters: Filters | None = None, among: Sequence[int] | None = None
) -> Facets:
    """Counts over the images ``filters`` keep, by SQL over the catalogue's rows (the
    definition the stored counts follow). ``among``: only these image ids (at most a
    few hundred: they become one ``IN`` list), as the stored counts' upkeep asks."""
    kept = filters or Filters()
    where, args = _where(kept)
    if among is not None:
        where, args = _among(where, args, among)
    total = int(
        catalogue.execute(
            f"SELECT COUNT(*) FROM {images_with_meta(catalogue)} WHERE {where}", args
        )[0][0]
    )
    return Facets(
        total,
        **{facet: _facet_counts(catalogue, kept, facet, among) for facet in FACET_OWN},
    )


def _among(where: str, args: list[Any], among: Sequence[int]) -> tuple[str, list[Any]]:
    """The condition ``where`` restricted to the image ids ``among``."""
    ids = [int(i) for i in among]
    return f"{where} AND i.id IN ({','.join('?' * len(ids))})", [*args, *ids]


#: Each facet, and the fields of :class:`Filters` that choosing its values sets.
FACET_OWN: dict[str, tuple[str, ...]] = {
    "folders": ("under",),
    "formats": ("formats",),
    "cameras": ("camera",),
    "years": ("after", "before"),
    "gps": ("has_gps",),
}


def narrowed_facets(catalogue: Catalogue, filters: Filters) -> Facets:
    """Counts for a filter panel with ``filters`` set, by the usual faceted-search
    rule: each facet's counts are over the images the *other* filters keep (what
    choosing one of its values would give), so a facet's own choice never zeroes its
    siblings; ``total`` is over the images all of them keep. Without filters, the
    same as :func:`count_facets`."""
    if filters.empty:
        return count_facets(catalogue)
    where, args = _where(filters)
    total = int(
        catalogue.execute(
            f"SELECT COUNT(*) FROM {images_with_meta(catalogue)} WHERE {where}", args
        )[0][0]
    )
    unset = Filters()
    counts = {}
    for facet, own in FACET_OWN.items():
        others = replace(filters, **{name: getattr(unset, name) for name in own})
        counts[facet] = _facet_counts(catalogue, others, facet)
    return Facets(total, **counts)


def _facet_counts(
    catalogue: Catalogue, filters: Filters, facet: str, among: Sequence[int] | None = None
) -> dict[str, int]:
    """One facet's counts over the images ``filters`` keep (and among these ids, if
    given), most first (``years`` in order, ``gps`` as yes/no)."""
    where, args = _where(filters)
    if among is not None:
        where, args = _among(where, args, among)
    source = images_with_meta(catalogue)

    def grouped(expression: str) -> dict[str, int]:
        rows = catalogue.execute(
            f"SELECT {expression} AS v, COUNT(*) FROM {source} WHERE {where} "
            "GROUP BY v HAVING v IS NOT NULL ORDER BY COUNT(*) DESC, v",
            args,
        )
        return {str(v): int(n) for v, n in rows}

    if facet == "formats":
        return grouped("i.format")
    if facet == "cameras":
        return grouped("NULLIF(TRIM(COALESCE(m.make, '') || ' ' || COALESCE(m.model, '')), '')")
    if facet == "years":
        return dict(sorted(grouped(f"strftime('%Y', {DATE_SQL}, 'unixepoch')").items()))
    if facet == "gps":
        with_gps = grouped("CASE WHEN m.latitude IS NULL THEN 'no' ELSE 'yes' END")
        return {"yes": with_gps.get("yes", 0), "no": with_gps.get("no", 0)}
    # Each image counts once per top folder among its paths, all in SQL: read into
    # Python path by path, this facet took 15 s at a million images.
    top, top_args = top_folder_sql("fp.path", catalogue.roots())
    rows = catalogue.execute(
        f"SELECT t, COUNT(*) FROM (SELECT DISTINCT i.id, {top} AS t FROM {source} "
        f"JOIN files fp ON fp.image_id = i.id WHERE {where}) GROUP BY t",
        [*top_args, *args],
    )
    return dict(sorted(((str(t), int(n)) for t, n in rows), key=lambda item: (-item[1], item[0])))


def top_folder_sql(path: str, roots: Sequence[str]) -> tuple[str, list[Any]]:
    """An SQL expression (and its arguments, which come before the query's own) giving
    the folder just inside the indexed root that holds ``path``: the root itself for a
    file directly in it; the file's own folder when no root holds it. The innermost
    root wins."""
    cases: list[str] = []
    args: list[Any] = []
    for root in sorted(roots, key=len, reverse=True):
        prefix = root.rstrip("/") + "/"
        # '/' + 1 == '0': every path under "root/" sorts in ["root/", "root0").
        rest = f"substr({path}, {len(prefix) + 1})"
        cases.append(
            f"WHEN {path} >= ? AND {path} < ? THEN CASE WHEN instr({rest}, '/') > 0 "
            f"THEN substr({path}, 1, {len(prefix)} + instr({rest}, '/') - 1) ELSE ? END"
        )
        args += [prefix, prefix[:-1] + "0", root]
    # Outside every root: the path up to its last '/' (rtrim by the path's other
    # characters), without that '/', or '/' for a file at the top.
    parent = f"COALESCE(NULLIF(rtrim(rtrim({path}, replace({path}, '/', '')), '/'), ''), '/')"
    if not cases:
        return parent, args
    return f"CASE {' '.join(cases)} ELSE {parent} END", args
