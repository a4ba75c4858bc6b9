"""Case files: a search's results written so that an investigator can defend them.

A case file holds the query as it was run (texts, weights, each query image's SHA-256
and a copy of its bytes, the region, method, re-ranking, marks, filters), the model's
name and version, the index's state (its counts and a digest of every indexed path's
content), the time (UTC, ISO 8601), the tool's version, and every result with its
rank, score, mark (``good``, ``bad`` or none), path and the SHA-256 and MD5 of its file
as read at export. ``spyglass verify`` runs it again (:mod:`spyglass.casework.verify`).

Two forms: JSON is complete, and carries ``digest``, the SHA-256 of its own canonical
form (RFC 8785, :mod:`spyglass.casework.canonical`: a client that parses the file and
writes it again, as JavaScript does, keeps it), so that an edit made without
recomputing it shows; a file sealed by the first form of the digest (Python's own
canonical JSON, where ``1.0`` and ``1`` differ) still verifies, as seal format 1.
CSV is flat, one row per result with the case's fields repeated, for spreadsheets.
CSV cells that a spreadsheet would run as a formula (starting with ``=``, ``+``,
``-``, ``@``, tab or carriage return) are prefixed with ``'``: a file name or a query
can be crafted to run one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spyglass.casework.canonical import canonical_json, legacy_canonical_json
from spyglass.casework.digests import FileDigests, IndexState, file_digests, index_state
from spyglass.casework.duplicates import CollapsedResult
from spyglass.casework.queryspec import SearchSpec
from spyglass.errors import CaseFileProblem
from spyglass.search import SearchResult
from spyglass.store.index import Index

#: Bumped when a field changes meaning; readers refuse versions they do not know.
CASE_FILE_VERSION = 1
#: How ``digest`` is taken: 2, SHA-256 of the RFC 8785 canonical form; 1, of Python's
#: sorted-keys ``json.dumps`` (files exported before; still accepted on reading).
SEAL_FORMAT = 2
LEGACY_SEAL_FORMAT = 1
CSV_COLUMNS = (
    "rank",
    "score",
    "mark",
    "path",
    "id",
    "width",
    "height",
    "copies",
    "sha256",
    "md5",
    "rank_score",
    "group_size",
    "query",
    "searched_at",
    "index",
    "model",
    "model_version",
    "index_files",
    "index_digest",
    "tool_version",
    "search",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FORMATS = ("json", "csv")


def safe_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def searched_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spyglass")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


@dataclass(frozen=True)
class CaseResult:
    """One result as exported. ``sha256``/``md5`` are None for a file that could not
    be read at export."""

    rank: int
    image_id: int
    path: str
    paths: tuple[str, ...]
    score: float
    rank_score: float
    width: int
    height: int
    sha256: str | None
    md5: str | None
    mark: str | None = None
    group_size: int = 1
    duplicates: tuple[int, ...] = ()

    @classmethod
    def of(
        cls,
        rank: int,
        item: SearchResult | CollapsedResult,
        digests: FileDigests | None = None,
        mark: str | None = None,
    ) -> CaseResult:
        """The row of ``item`` (a result, or the best member of a group of
        near-duplicates) at ``rank``, with its file's ``digests`` where they were taken."""
        result = item.result if isinstance(item, CollapsedResult) else item
        group = item if isinstance(item, CollapsedResult) else None
        return cls(
            rank=rank,
            image_id=result.image_id,
            path=result.path,
            paths=result.paths,
            score=result.score,
            rank_score=result.rank_score,
            width=result.width,
            height=result.height,
            sha256=digests.sha256 if digests else None,
            md5=digests.md5 if digests else None,
            mark=mark,
            group_size=group.group_size if group else 1,
            duplicates=group.duplicates if group else (),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "id": self.image_id,
            "score": round(self.score, 6),
            "rank_score": round(self.rank_score, 6),
            "mark": self.mark,
            "path": self.path,
            "paths": list(self.paths),
            "width": self.width,
            "height": self.height,
            "sha256": self.sha256,
            "md5": self.md5,
            "group_size": self.group_size,
            "duplicates": list(self.duplicates),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CaseResult:
        return cls(
            rank=int(document["rank"]),
            image_id=int(document["id"]),
            path=str(document["path"]),
            paths=tuple(str(p) for p in document.get("paths") or [document["path"]]),
            score=float(document["score"]),
            rank_score=float(document.get("rank_score", 0.0)),
            width=int(document.get("width", 0)),
            height=int(document.get("height", 0)),
            sha256=document.get("sha256"),
            md5=document.get("md5"),
            mark=document.get("mark"),
            group_size=int(document.get("group_size", 1)),
            duplicates=tuple(int(i) for i in document.get("duplicates") or ()),
        )


@dataclass(frozen=True)
class CaseFile:
    search: SearchSpec
    #: The query in words.
    description: str
    searched_at: datetime
    index_folder: str
    index: IndexState
    model_name: str
    model_version: str
    tool_version: str
    results: tuple[CaseResult, ...]
    #: The request as the client sent it (HTTP) or the options given (CLI), if any.
    request: dict[str, Any] | None = None
    #: Whether a read JSON case file's digest matched its content (True when made here).
    intact: bool = field(default=True, compare=False)
    #: Whether a read JSON case file carried a digest at all.
    sealed: bool = field(default=True, compare=False)
    #: The rule its matching digest was taken by: SEAL_FORMAT, or 1 for a file sealed
    #: before digests were canonical over numbers (None: no digest matched).
    seal_format: int | None = field(default=SEAL_FORMAT, compare=False)

    @property
    def model(self) -> str:
        return f"{self.model_name} {self.model_version}"

    def file_name(self, extension: str) -> str:
        return f"spyglass-results-{self.searched_at.strftime('%Y%m%d-%H%M%S')}.{extension}"

    # -- JSON -----------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """The JSON document without its digest."""
        return {
            "case_file": CASE_FILE_VERSION,
            "tool": {"name": "spyglass", "version": self.tool_version},
            "searched_at": self.searched_at.isoformat(),
            "query": self.description,
            "search": self.search.to_json(copies=True),
            "request": self.request,
            "index": self.index_folder,
            "index_state": self.index.to_json(),
            "model": self.model,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "count": len(self.results),
            "results": [r.to_json() for r in self.results],
        }

    def to_json(self) -> str:
        document = self.document()
        document["digest"] = content_digest(document)
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CaseFile:
        """Raises :class:`CaseFileProblem` for a file that is not a case file."""
        try:
            document = json.loads(text)
        except ValueError as error:
            raise CaseFileProblem(f"not a case file: invalid JSON ({error})") from error
        if not isinstance(document, dict) or "case_file" not in document:
            raise CaseFileProblem(
                "not a case file (no 'case_file' field): export one with "
                "`spyglass search ... --export FILE.json`"
            )
        if document["case_file"] != CASE_FILE_VERSION:
            raise CaseFileProblem(
                f"case file version {document['case_file']} is not one this version of "
                f"spyglass reads ({CASE_FILE_VERSION})"
            )
        recorded = document.pop("digest", None)
        seal_format = seal_format_of(document, recorded)
        try:
            state = document["index_state"]
            return cls(
                search=SearchSpec.from_json(document["search"]),
                description=str(document.get("query", "")),
                searched_at=datetime.fromisoformat(document["searched_at"]),
                index_folder=str(document["index"]),
                index=IndexState(
                    files=int(state["files"]),
                    images=int(state["images"]),
                    digest=str(state["digest"]),
                ),
                model_name=str(document["model_name"]),
                model_version=str(document["model_version"]),
                tool_version=str(document["tool"]["version"]),
                results=tuple(CaseResult.from_json(r) for r in document["results"]),
                request=document.get("request"),
                intact=seal_format is not None,
                sealed=recorded is not None,
                seal_format=seal_format,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CaseFileProblem(f"not a case file: {type(error).__name__} {error}") from error

    # -- CSV ------------------------------------------------------------------------

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        when = self.searched_at.isoformat()
        search = json.dumps(self.search.to_json(copies=False), ensure_ascii=False)
        for result in self.results:
            writer.writerow(
                [
                    result.rank,
                    f"{result.score:.6f}",
                    result.mark or "",
                    safe_cell(result.path),
                    result.image_id,
                    result.width,
                    result.height,
                    len(result.paths),
                    result.sha256 or "",
                    result.md5 or "",
                    f"{result.rank_score:.6f}",
                    result.group_size,
                    safe_cell(self.description),
                    when,
                    safe_cell(self.index_folder),
                    self.model,
                    safe_cell(self.model_version),
                    self.index.files,
                    self.index.digest,
                    self.tool_version,
                    safe_cell(search),
                ]
            )
        return buffer.getvalue()

    def render(self, form: str) -> str:
        if form not in FORMATS:
            raise CaseFileProblem(f"a case file is .json or .csv, not .{form}")
        return self.to_json() if form == "json" else self.to_csv()


def content_digest(document: dict[str, Any]) -> str:
    """SHA-256 of the RFC 8785 canonical form of ``document``: the same for any text
    that holds the same values (key order, spaces, ``1.0`` or ``1``)."""
    try:
        canonical = canonical_json(document)
    except ValueError as error:  # NaN, or a number no double holds: no case file has one
        raise CaseFileProblem(f"not a case file: {error}") from error
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def legacy_content_digest(document: dict[str, Any]) -> str:
    """The digest of seal format 1: SHA-256 of Python's sorted-keys ``json.dumps``."""
    return "sha256:" + hashlib.sha256(legacy_canonical_json(document)).hexdigest()


def seal_format_of(document: dict[str, Any], recorded: Any) -> int | None:
    """The seal format whose digest of ``document`` (without its digest) is
    ``recorded``; None when neither is (edited, or no digest)."""
    if recorded is None:
        return None
    if recorded == content_digest(document):
        return SEAL_FORMAT
    if recorded == legacy_content_digest(document):
        return LEGACY_SEAL_FORMAT
    return None


def make_case_file(
    index: Index,
    spec: SearchSpec,
    results: Sequence[SearchResult | CollapsedResult],
    *,
    description: str | None = None,
    request: dict[str, Any] | None = None,
    searched_at: datetime | None = None,
) -> CaseFile:
    """The case file of ``results``, the answer ``index`` gave to ``spec``: reads every
    result's file once to hash it, and the catalogue once for the index's digest."""
    marks = spec.marks()
    rows = []
    for rank, item in enumerate(results, start=spec.offset + 1):
        result = item.result if isinstance(item, CollapsedResult) else item
        rows.append(
            CaseResult.of(rank, item, file_digests(result.path), marks.get(result.image_id))
        )
    info = index.info
    return CaseFile(
        search=spec,
        description=description or spec.describe(),
        searched_at=searched_at or searched_now(),
        index_folder=str(index.folder),
        index=index_state(index),
        model_name=info.name,
        model_version=info.version,
        tool_version=tool_version(),
        results=tuple(rows),
        request=request,
    )


def case_format(path: str | Path) -> str:
    """``json`` or ``csv`` from a file name; :class:`CaseFileProblem` for another."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise CaseFileProblem(f"--export names a .json or .csv file, not {Path(path).name}")
    return suffix


def write_case_file(case: CaseFile, path: str | Path) -> None:
    """Write ``case`` as JSON or CSV (by the file's suffix), atomically: the file is
    whole or absent, never half written."""
    target = Path(path).expanduser()
    content = case.render(case_format(target))
    write_atomically(target, content.encode("utf-8"))


def read_case_file(path: str | Path) -> CaseFile:
    target = Path(path).expanduser()
    if case_format(target) == "csv":
        raise CaseFileProblem(
            f"{target.name}: verify reads the JSON case file (the CSV form is flat, for "
            "spreadsheets); export with --export FILE.json"
        )
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise CaseFileProblem(f"no case file at {target}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise CaseFileProblem(f"cannot read the case file {target}: {error}") from error
    return CaseFile.from_json(text)


def write_atomically(target: Path, content: bytes) -> None:
    """Write to a temporary file beside ``target``, fsync, then rename over it."""
    folder = target.parent if str(target.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise CaseFileProblem(f"cannot write {target}: {error.strerror}") from error
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise CaseFileProblem(f"cannot write {target}: {error.strerror}") from error
