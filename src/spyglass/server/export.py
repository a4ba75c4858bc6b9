"""Result lists as files for case notes: CSV (one row per result) and JSON.

Both say what was searched, when (UTC, ISO 8601), in which index and with which model,
next to each result's rank, score, path and mark: ``good`` or ``bad`` for the images
the query marked (its ``positives`` and ``negatives``), empty for the others. CSV
cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``,
``@``, tab or carriage return) are prefixed with ``'``: a file name or a query can be
crafted to run one.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spyglass.search import SearchResult

CSV_COLUMNS = (
    "rank",
    "score",
    "mark",
    "path",
    "id",
    "width",
    "height",
    "copies",
    "query",
    "searched_at",
    "index",
    "model",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ExportHeader:
    query: str
    searched_at: datetime
    index: str
    model: str
    request: dict[str, Any]


def searched_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def file_name(header: ExportHeader, extension: str) -> str:
    return f"spyglass-results-{header.searched_at.strftime('%Y%m%d-%H%M%S')}.{extension}"


def marks_of(request: dict[str, Any]) -> dict[int, str]:
    """Image id -> "good" or "bad", from a search request's positives and negatives.
    An id in both (the engine refuses such a query) would count as bad."""
    marks = {int(i): "good" for i in request.get("positives") or []}
    marks.update({int(i): "bad" for i in request.get("negatives") or []})
    return marks


def safe_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def to_csv(header: ExportHeader, results: list[SearchResult], first_rank: int = 1) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    when = header.searched_at.isoformat()
    marks = marks_of(header.request)
    for rank, result in enumerate(results, start=first_rank):
        writer.writerow(
            [
                rank,
                f"{result.score:.6f}",
                marks.get(result.image_id, ""),
                safe_cell(result.path),
                result.image_id,
                result.width,
                result.height,
                len(result.paths),
                safe_cell(header.query),
                when,
                safe_cell(header.index),
                header.model,
            ]
        )
    return buffer.getvalue()


def to_json(header: ExportHeader, results: list[SearchResult], first_rank: int = 1) -> str:
    marks = marks_of(header.request)
    document = {
        "query": header.query,
        "request": header.request,
        "searched_at": header.searched_at.isoformat(),
        "index": header.index,
        "model": header.model,
        "count": len(results),
        "results": [
            {
                "rank": rank,
                "score": round(result.score, 6),
                "mark": marks.get(result.image_id),
                "path": result.path,
                "paths": list(result.paths),
                "id": result.image_id,
                "width": result.width,
                "height": result.height,
            }
            for rank, result in enumerate(results, start=first_rank)
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
