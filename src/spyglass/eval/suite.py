"""``spyglass eval report``: every protocol on the shared data, as one Markdown file.

The runs are listed in :data:`SUITE` (dataset folder, protocol, options). Every random
choice is seeded, so a re-run gives the same quality numbers; only the time per query
changes with the machine, and :func:`comparable` masks it for ``--check``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from spyglass.eval.datasets import IndexedCollection
from spyglass.eval.protocols import PROTOCOL_TASKS
from spyglass.eval.protocols.running import ProgressFunction, RunSettings
from spyglass.eval.report import markdown_table, setup_line
from spyglass.eval.results import ProtocolResult
from spyglass.eval.variants import Variant, registered_rerankers, select_variants
from spyglass.query.methods import DEFAULT_METHOD


@dataclass(frozen=True)
class SuiteRun:
    dataset: str
    protocol: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Also the default method followed by each registered re-ranking.
    rerank: bool = False


#: The runs of the report, in the order they appear. Re-rankings cost a few hundred ms
#: a query here (k-reciprocal), so image runs with them use a sample.
SUITE = (
    SuiteRun("caltech101", "text", rerank=True),
    SuiteRun("clothing", "text", rerank=True),
    SuiteRun("pacs", "text", rerank=True),
    SuiteRun("fashion", "text", rerank=True),
    SuiteRun("caltech101", "image"),
    SuiteRun("caltech101", "image", {"sample": 500}, rerank=True),
    SuiteRun("clothing", "image"),
    SuiteRun("pacs", "image", {"sample": 1000}),
    SuiteRun("fashion", "image", {"sample": 1000}),
    SuiteRun("fashion", "composed", {"queries": 500}, rerank=True),
    SuiteRun("pacs", "composed", {"queries": 500}, rerank=True),
    SuiteRun("fashion", "attribute", {"attribute": "baseColour"}),
    SuiteRun("caltech101", "fewshot", {"shots": 5}),
    SuiteRun("caltech101", "feedback", {"rounds": 5, "per_round": 10}),
    SuiteRun("fashion", "caption", {"sample": 1000}),
    SuiteRun("photos", "caption"),
)

HEADINGS = {
    "text": "Text -> image (one query per class)",
    "image": "Image -> image (same class is relevant)",
    "composed": "Composed image + text",
    "attribute": "Attribute queries: 'a <value> <object>' and '<value>' alone",
    "fewshot": "Few-shot: exemplars, exemplar SVM, text (Moll 2024)",
    "feedback": "Relevance feedback, simulated (SeeSaw)",
    "caption": "Caption -> image",
}


def suite_variants(run: SuiteRun) -> list[Variant]:
    """Every method registered for the protocol's task; for runs with ``rerank`` also
    the default method followed by each registered re-ranking."""
    task = PROTOCOL_TASKS[run.protocol]
    variants = select_variants(task)
    if run.rerank:
        extra = select_variants(task, [DEFAULT_METHOD], registered_rerankers())
        variants += [v for v in extra if v not in variants]
    return variants


def protocol_runner(protocol: str) -> Callable[..., ProtocolResult]:
    """The ``run_*`` function of a labelled-folder protocol, by name."""
    from spyglass.eval.protocols.attribute import run_attribute
    from spyglass.eval.protocols.caption import run_caption
    from spyglass.eval.protocols.composed import run_composed
    from spyglass.eval.protocols.feedback import run_feedback
    from spyglass.eval.protocols.fewshot import run_fewshot
    from spyglass.eval.protocols.image import run_image
    from spyglass.eval.protocols.text import run_text

    runners: dict[str, Callable[..., ProtocolResult]] = {
        "text": run_text,
        "image": run_image,
        "fewshot": run_fewshot,
        "composed": run_composed,
        "attribute": run_attribute,
        "caption": run_caption,
        "feedback": run_feedback,
    }
    return runners[protocol]


def run_one(
    run: SuiteRun,
    collection: IndexedCollection,
    settings: RunSettings,
    progress: ProgressFunction | None,
) -> ProtocolResult:
    return protocol_runner(run.protocol)(
        collection,
        suite_variants(run),
        settings=settings,
        progress=progress,
        **run.options,
    )


class NamesDataset(Protocol):
    @property
    def dataset(self) -> str: ...


RunT = TypeVar("RunT", bound=NamesDataset)


def collections_for(
    runs: Sequence[RunT],
    data: Path,
    opener: Callable[[Path], IndexedCollection],
    announce: Callable[[str], None],
    absent: list[str],
) -> Generator[tuple[RunT, IndexedCollection], None, None]:
    """Each run with its collection: every folder under ``data`` indexed and opened once
    (``opener``), folders missing there appended to ``absent``, and every opened
    collection closed when the iteration ends (use it under ``contextlib.closing``)."""
    opened: dict[str, IndexedCollection] = {}
    try:
        for run in runs:
            folder = data / run.dataset
            if not (folder / "labels.csv").is_file():
                if run.dataset not in absent:
                    absent.append(run.dataset)
                continue
            if run.dataset not in opened:
                announce(f"indexing {folder} (reused when up to date)")
                opened[run.dataset] = opener(folder)
            yield run, opened[run.dataset]
    finally:
        for collection in opened.values():
            collection.engine.close()


def run_suite(
    data: Path,
    opener: Callable[[Path], IndexedCollection],
    command: str,
    announce: Callable[[str], None],
    progress_for: Callable[[str], AbstractContextManager[ProgressFunction]],
    settings: RunSettings | None = None,
    runs: Sequence[SuiteRun] = SUITE,
) -> str:
    """Run ``runs`` on the folders found under ``data``; returns the Markdown report.

    ``opener`` indexes a folder (once per model) and opens it; folders missing from
    ``data`` are named in the report rather than failing it.
    """
    settings = settings or RunSettings()
    results: list[ProtocolResult] = []
    absent: list[str] = []
    with closing(collections_for(runs, data, opener, announce, absent)) as planned:
        for run, collection in planned:
            announce(f"{run.protocol} on {run.dataset}")
            with progress_for(f"{run.protocol} {run.dataset}") as progress:
                results.append(run_one(run, collection, settings, progress))
    return render(results, command, absent)


def render(results: Sequence[ProtocolResult], command: str, absent: Sequence[str]) -> str:
    lines = [
        "# Search quality on the shared data",
        "",
        "Regenerate this file with one command, from the repository root:",
        "",
        f"    {command}",
        "",
        "Add `--check` to re-run everything and compare with this file instead of writing it.",
        "Every sample, exemplar and pseudo-negative is drawn with seed 0, and the 95%",
        "intervals of mAP are seeded bootstraps over queries, so a re-run gives the same",
        "quality numbers. The `ms/query` column (the engine ranking the whole collection",
        "once) depends on the machine and its load, and `--check` ignores it.",
        "How each protocol works, and what the metrics mean: [eval.md](eval.md).",
        "",
    ]
    if results:
        model = results[0].model
        version = results[0].settings.get("model_version", "")
        lines += [f"Model: `{model}` (version {version}).", ""]
    if absent:
        lines += [f"Not found under the data folder, so not measured: {', '.join(absent)}.", ""]
    for protocol in HEADINGS:
        mine = [r for r in results if r.protocol == protocol]
        if not mine:
            continue
        lines += [f"## {HEADINGS[protocol]}", ""]
        for result in mine:
            sample = result.settings.get("sample")
            of = f", a sample of {sample} queries" if sample else ""
            lines += [
                f"### {protocol} on {Path(result.data).name}{of}",
                "",
                setup_line(result),
                "",
                markdown_table(result),
                "",
            ]
            lines += [f"- {note}" for note in result.notes]
            if result.notes:
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


_TABLE_ROW = re.compile(r"^\|.*\|$")


def comparable(markdown: str) -> list[str]:
    """The report's lines with the time column of every table row masked."""
    masked = []
    for line in markdown.splitlines():
        if _TABLE_ROW.match(line) and not line.startswith("|---"):
            cells = line.split("|")
            cells[-2] = " ~ "
            line = "|".join(cells)
        masked.append(line)
    return masked


def differences(expected: list[str], actual: list[str]) -> list[str]:
    """Unified-diff lines between two masked reports (empty when they agree)."""
    return list(difflib.unified_diff(expected, actual, "written", "re-run", lineterm="", n=0))
