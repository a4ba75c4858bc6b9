r"""Metadata filters as Milvus fields and boolean expressions.

Every row of a Milvus space carries its image's filter fields (the same on each row of
an image, crops included):

=========  =====================  ====================================================
field      Milvus type            value
=========  =====================  ====================================================
paths      VARCHAR                the image's paths, each after a :data:`SEPARATOR`
                                  (U+FDD1), swapped as ``camera`` is
date       DOUBLE                 the date rule's seconds since 1970 (0 when unknown)
dated      BOOL                   the image has a date
format     VARCHAR                Pillow's format name
width      INT64                  pixels as displayed
height     INT64
camera     VARCHAR                "make model", ASCII letters lower-cased, ``\``, ``%``
                                  and ``_`` swapped with noncharacters (see
                                  :func:`camera_key`)
gps        BOOL                   a position is recorded
=========  =====================  ====================================================

:func:`expression` writes :class:`~spyglass.query.filters.Filters` as one expression on
them that keeps exactly the images :func:`~spyglass.query.filters.allowed_ids` keeps
(the tests check it against the SQL on generated images):

- ``--under F``: ``paths like "%<U+FDD1>F/%"`` (F without its trailing slash): some path
  starts with ``F/``, the SQL's prefix test ``path >= "F/" AND path < "F0"``, since the
  separator starts each path and is in none. Several folders: ``(... or ...)``. An ARRAY
  of every folder above the paths with ``array_contains_any`` was exact too, but costs
  Milvus Lite 3.2 ~20 us a row (400 ms a search at 20,000 rows), ten times a LIKE.
- dates: ``dated and date >= A`` / ``date < B`` with the float written by ``repr``
  (read back to the same double).
- ``--camera T``: ``camera like "%t%"``, as SQLite's LIKE: ASCII case-insensitive.

No pattern holds an escape: Milvus Lite 3.2 honours ``\%`` in a LIKE alone but not in
one joined with ``array_contains_any`` (there ``"%\%%"`` matched a backslash: found by
the generated tests), and has no escape for a backslash. So both fields and their
patterns swap ``\``, ``%`` and ``_`` with the noncharacters U+FFFF, U+FFFE and U+FDD0 (a
swap of characters keeps "is a substring of" and "starts with"): a pattern then holds a
wildcard or a backslash only when the text asked for holds one of those noncharacters
(or the separator), and that filter goes back to the id list.
- ``--has-gps``, ``--format``, ``--min-size``: ``gps == true``, ``format in [...]``,
  ``width >= W and height >= H``.

A value Milvus cannot hold (paths or camera over :data:`MAX_TEXT` bytes, a path holding
the separator) is stored cut, and the collection is marked (``CUT_PROPERTY`` in
:mod:`spyglass.store.milvus`): filters on that field then go back to the id list, which
stays exact.
"""

from __future__ import annotations

from typing import Any

from spyglass.query.filters import Filters
from spyglass.store.base import FilterFields

#: The filter fields, in the order the schema lists them.
FIELD_NAMES = ("paths", "date", "dated", "format", "width", "height", "camera", "gps")
#: What starts each path in ``paths`` (a noncharacter: no path holds one).
SEPARATOR = "\ufdd1"
#: Bytes of a VARCHAR (Milvus's largest).
MAX_TEXT = 65_535
#: Bytes of ``format`` (Pillow's names are a few letters).
MAX_FORMAT = 64
#: What stands in ``camera`` for the characters Milvus's LIKE reads specially (and the
#: other way round): noncharacters, which no camera name holds.
STAND_INS = {"\\": "\uffff", "%": "\ufffe", "_": "\ufdd0"}
_SWAP = str.maketrans(STAND_INS | {v: k for k, v in STAND_INS.items()})
#: SQLite's LIKE folds ASCII letters only.
_ASCII_LOWER = str.maketrans({chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)})


def add_fields(schema: Any, data_type: Any) -> None:
    """Add the filter fields to a ``pymilvus`` collection schema (``data_type``:
    ``pymilvus.DataType``)."""
    schema.add_field("paths", data_type.VARCHAR, max_length=MAX_TEXT)
    schema.add_field("date", data_type.DOUBLE)
    schema.add_field("dated", data_type.BOOL)
    schema.add_field("format", data_type.VARCHAR, max_length=MAX_FORMAT)
    schema.add_field("width", data_type.INT64)
    schema.add_field("height", data_type.INT64)
    schema.add_field("camera", data_type.VARCHAR, max_length=MAX_TEXT)
    schema.add_field("gps", data_type.BOOL)


def paths_key(paths: tuple[str, ...] | list[str]) -> str:
    """The ``paths`` field: each path after a :data:`SEPARATOR`, swapped (see
    :func:`camera_key`)."""
    return "".join(SEPARATOR + path.translate(_SWAP) for path in paths)


def camera_key(text: str) -> str:
    """``text`` as the ``camera`` field and its patterns hold it: ASCII letters
    lower-cased (as SQLite's LIKE compares them), ``\\ % _`` swapped with their
    :data:`STAND_INS`."""
    return text.translate(_ASCII_LOWER).translate(_SWAP)


def row_values(fields: FilterFields | None) -> tuple[dict[str, Any], set[str]]:
    """The filter fields of one row, and the filter kinds its values are cut for
    (``"under"``, ``"camera"``, ``"format"``; ``"all"`` without ``fields``)."""
    if fields is None:
        values: dict[str, Any] = {
            "paths": "",
            "date": 0.0,
            "dated": False,
            "format": "",
            "width": 0,
            "height": 0,
            "camera": "",
            "gps": False,
        }
        return values, {"all"}
    cut: set[str] = set()
    paths = paths_key(fields.paths)
    if _too_long(paths, MAX_TEXT) or any(SEPARATOR in path for path in fields.paths):
        cut.add("under")
        paths = ""
    camera = camera_key(fields.camera)
    if _too_long(camera, MAX_TEXT):
        cut.add("camera")
        camera = ""
    format_ = fields.format
    if _too_long(format_, MAX_FORMAT):
        cut.add("format")
        format_ = ""
    values = {
        "paths": paths,
        "date": 0.0 if fields.date is None else float(fields.date),
        "dated": fields.date is not None,
        "format": format_,
        "width": int(fields.width),
        "height": int(fields.height),
        "camera": camera,
        "gps": bool(fields.has_gps),
    }
    return values, cut


def kinds(filters: Filters) -> set[str]:
    """The filter kinds ``filters`` use, as :func:`row_values` names them."""
    used = set()
    if filters.under:
        used.add("under")
    if filters.camera:
        used.add("camera")
    if filters.formats:
        used.add("format")
    if not filters.empty:
        used.add("all")
    return used


def expression(filters: Filters) -> str | None:
    """A Milvus boolean expression keeping the images ``filters`` keep (``""`` for no
    filters), or ``None`` where none is exact (a folder or camera text holding one of
    the :data:`STAND_INS` or the separator, a text holding NUL)."""
    try:
        return _expression(filters)
    except ValueError:
        return None


def _expression(filters: Filters) -> str | None:
    clauses = []
    if filters.under:
        tests = []
        for folder in filters.under:
            key = paths_key([folder.rstrip("/")])
            if any(c in key[1:] for c in (*STAND_INS, SEPARATOR)):
                return None
            tests.append(f"paths like {literal('%' + key + '/%')}")
        clauses.append(tests[0] if len(tests) == 1 else f"({' or '.join(tests)})")
    if filters.after is not None:
        clauses.append(f"(dated and date >= {float(filters.after)!r})")
    if filters.before is not None:
        clauses.append(f"(dated and date < {float(filters.before)!r})")
    if filters.camera:
        key = camera_key(filters.camera)
        if any(c in key for c in STAND_INS):
            return None
        clauses.append(f"camera like {literal('%' + key + '%')}")
    if filters.has_gps is not None:
        clauses.append("gps == true" if filters.has_gps else "gps == false")
    if filters.formats:
        clauses.append(f"format in [{', '.join(literal(f) for f in filters.formats)}]")
    if filters.min_width:
        clauses.append(f"width >= {int(filters.min_width)}")
    if filters.min_height:
        clauses.append(f"height >= {int(filters.min_height)}")
    return " and ".join(clauses)


def literal(text: str) -> str:
    """A Milvus string literal: in double quotes, backslash, double quote, line feed and
    carriage return escaped (Milvus refuses those two raw and reads other characters as
    they are). Raises ``ValueError`` for a NUL, which no literal can hold."""
    if "\x00" in text:
        raise ValueError("a Milvus string literal cannot hold NUL")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


def _too_long(text: str, limit: int) -> bool:
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit
