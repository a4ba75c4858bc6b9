"""Checking a case file: run its search again on the index, compare the results rank
by rank, and hash every result's file again.

What can differ, worst first: the case file was edited (its digest does not match its
content), the search no longer gives the same results (another image at a rank, a
score that moved, fewer or more results), a result's file changed or is gone since the
export. The index having changed (files added, say) is told but is not a failure: the
results are what the case rests on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spyglass.casework.casefile import LEGACY_SEAL_FORMAT, SEAL_FORMAT, CaseFile, CaseResult
from spyglass.casework.digests import IndexState, file_digests, index_state
from spyglass.errors import QueryError

if TYPE_CHECKING:
    from spyglass.engine import Spyglass

#: Scores are written with 6 decimals; a re-run on another machine may differ in the
#: last bits of float32 arithmetic. A move larger than this is a different result.
SCORE_TOLERANCE = 2e-4

#: Exit statuses of ``spyglass verify`` (docs/casework.md).
VERIFIED = 0
RESULTS_DIFFER = 6
FILES_CHANGED = 7


@dataclass(frozen=True)
class ResultChange:
    """A rank where the re-run disagrees with the case file (``was`` or ``now`` is
    None where one list is shorter)."""

    rank: int
    was: CaseResult | None
    now: CaseResult | None

    def describe(self) -> str:
        def one(result: CaseResult | None) -> str:
            if result is None:
                return "nothing"
            return f"#{result.image_id} {result.path} (score {result.score:.6f})"

        return (
            f"rank {self.rank}: the case file has {one(self.was)}, "
            f"the search now gives {one(self.now)}"
        )


@dataclass(frozen=True)
class FileChange:
    rank: int
    path: str
    recorded_sha256: str | None
    sha256_now: str | None

    def describe(self) -> str:
        if self.sha256_now is None:
            return f"rank {self.rank}: {self.path} is missing or unreadable now"
        return (
            f"rank {self.rank}: {self.path} changed since the export "
            f"(sha256 {str(self.recorded_sha256)[:16]}… then, {self.sha256_now[:16]}… now)"
        )


@dataclass(frozen=True)
class Verification:
    case_intact: bool
    #: Whether the case file carried a digest (a page export joined from several pages
    #: of 10,000 results has none).
    case_sealed: bool
    result_changes: tuple[ResultChange, ...]
    file_changes: tuple[FileChange, ...]
    results_checked: int
    index_then: IndexState
    index_now: IndexState
    model_then: str
    model_now: str
    #: Why the search could not be run again (an image id the index no longer has...).
    rerun_problem: str | None = None
    #: The seal format its digest matched (casefile.SEAL_FORMAT, or 1: an export of an
    #: earlier version); None when it matched none or there is none.
    seal_format: int | None = SEAL_FORMAT

    @property
    def same_results(self) -> bool:
        return (
            not self.result_changes
            and self.model_then == self.model_now
            and self.rerun_problem is None
        )

    @property
    def ok(self) -> bool:
        return self.case_intact and self.same_results and not self.file_changes

    @property
    def exit_status(self) -> int:
        if not self.case_intact or not self.same_results:
            return RESULTS_DIFFER
        return FILES_CHANGED if self.file_changes else VERIFIED

    def lines(self, limit: int = 20) -> list[str]:
        """The report for a person, one finding a line, the verdict first."""
        if self.ok:
            verdict = (
                f"verified: the search gives the same {self.results_checked} results and "
                "no file changed"
            )
        elif self.exit_status == RESULTS_DIFFER:
            verdict = "NOT verified: the case file or the search results differ"
        else:
            verdict = "NOT verified: the same results, but files changed since the export"
        lines = [verdict]
        if not self.case_sealed:
            lines.append(
                "the case file carries no digest (joined from pages, or removed): its "
                "content cannot be checked on its own"
            )
        elif not self.case_intact:
            lines.append("the case file was edited after export (its digest does not match)")
        elif self.seal_format == LEGACY_SEAL_FORMAT:
            lines.append(
                "the case file is sealed (format 1): its digest, as earlier versions took it, "
                "matches; a copy written again by another program (1.0 as 1) would not"
            )
        if self.rerun_problem is not None:
            lines.append(f"the search cannot be run again: {self.rerun_problem}")
        if self.model_then != self.model_now:
            lines.append(f"the model was {self.model_then}, the index's model is {self.model_now}")
        changes = [c.describe() for c in self.result_changes]
        changes += [c.describe() for c in self.file_changes]
        lines += changes[:limit]
        if len(changes) > limit:
            lines.append(f"... and {len(changes) - limit} more")
        if self.index_then.digest != self.index_now.digest:
            lines.append(
                f"note: the index changed since the export ({self.index_then.files:,} files "
                f"then, {self.index_now.files:,} now)"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": self.ok,
            "exit_status": self.exit_status,
            "case_intact": self.case_intact,
            "seal_format": self.seal_format,
            "same_results": self.same_results,
            "results_checked": self.results_checked,
            "result_changes": [c.describe() for c in self.result_changes],
            "file_changes": [
                {
                    "rank": c.rank,
                    "path": c.path,
                    "recorded_sha256": c.recorded_sha256,
                    "sha256_now": c.sha256_now,
                }
                for c in self.file_changes
            ],
            "index_changed": self.index_then.digest != self.index_now.digest,
            "model_then": self.model_then,
            "model_now": self.model_now,
            "rerun_problem": self.rerun_problem,
        }


def verify_case(
    engine: Spyglass, case: CaseFile, *, tolerance: float = SCORE_TOLERANCE
) -> Verification:
    """Run ``case``'s search on ``engine`` and compare; hash every recorded file."""
    problem = None
    items: list[Any] = []
    try:
        items = list(engine.run_recorded(case.search))
    except QueryError as error:  # the query no longer fits this index
        problem = str(error)
    now = [
        CaseResult.of(rank, item) for rank, item in enumerate(items, start=case.search.offset + 1)
    ]
    changes = []
    for position in range(max(len(case.results), len(now))):
        was = case.results[position] if position < len(case.results) else None
        current = now[position] if position < len(now) else None
        rank = (was or current).rank  # type: ignore[union-attr]
        if was is None or current is None or not _same(was, current, tolerance):
            changes.append(ResultChange(rank, was, current))
    file_changes = []
    for result in case.results:
        digests = file_digests(result.path)
        if digests.sha256 != result.sha256 or digests.md5 != result.md5:
            file_changes.append(FileChange(result.rank, result.path, result.sha256, digests.sha256))
    info = engine.index.info
    return Verification(
        case_intact=case.intact,
        case_sealed=case.sealed,
        result_changes=tuple(changes),
        file_changes=tuple(file_changes),
        results_checked=len(case.results),
        index_then=case.index,
        index_now=index_state(engine.index),
        model_then=case.model,
        model_now=f"{info.name} {info.version}",
        rerun_problem=problem,
        seal_format=case.seal_format,
    )


def _same(was: CaseResult, now: CaseResult, tolerance: float) -> bool:
    return (
        was.rank == now.rank
        and was.image_id == now.image_id
        and abs(was.score - now.score) <= tolerance
        and was.group_size == now.group_size
    )
