"""Results as a terminal table (rich), as Markdown, and as JSON."""

from __future__ import annotations

import math
from typing import Any

from spyglass.eval.results import MethodResult, ProtocolResult

#: Column of the time per query (varies with the machine; not a quality number).
TIME_COLUMN = "ms/query"


def _value(result: MethodResult, column: str) -> str:
    value = result.metrics.get(column, float("nan"))
    return "-" if math.isnan(value) else f"{value:.3f}"


def _interval(result: MethodResult) -> str:
    if math.isnan(result.map_ci.low):
        return "-"
    return f"{result.map_ci.low:.3f}-{result.map_ci.high:.3f}"


def table_rows(result: ProtocolResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows shared by the terminal and Markdown tables."""
    header = ["method", *result.columns, "mAP 95% CI", "queries", TIME_COLUMN]
    rows = []
    for method in result.methods:
        queries = str(method.queries)
        if method.excluded:
            queries += f" (+{method.excluded} no relevant)"
        rows.append(
            [
                method.method,
                *(_value(method, c) for c in result.columns),
                _interval(method),
                queries,
                f"{method.seconds_per_query * 1000:.1f}",
            ]
        )
    return header, rows


def title(result: ProtocolResult) -> str:
    return f"{result.protocol} on {result.data} (model {result.model})"


def setup_line(result: ProtocolResult) -> str:
    """How the run was set up, in one line (the settings that say what was asked)."""
    shown = {
        k: v
        for k, v in result.settings.items()
        if v is not None and k not in ("bootstrap_resamples", "model_version")
    }
    facts = result.collection
    parts = [f"{facts['images']:,} images"]
    if facts.get("rows_left_out"):
        parts.append(f"{facts['rows_left_out']:,} rows left out by the dataset's rules")
    if facts.get("duplicate_rows"):
        parts.append(f"{facts['duplicate_rows']:,} duplicate files")
    settings = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
    return f"{'; '.join(parts)}; {settings}"


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in value) + "]"
    return f"'{value}'" if isinstance(value, str) else str(value)


def print_table(result: ProtocolResult, console: Any) -> None:
    """Print the results on a rich console."""
    from rich.table import Table

    header, rows = table_rows(result)
    table = Table(title=title(result), caption=setup_line(result), caption_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)


def markdown_table(result: ProtocolResult) -> str:
    header, rows = table_rows(result)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
