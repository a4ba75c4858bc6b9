"""`spyglass search`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from spyglass.cli.options import (
    device_option,
    filter_options,
    index_option,
    memory_budget_option,
    model_option,
    runtime_settings,
    sort_option,
    vector_search_settings,
)
from spyglass.engine import Spyglass
from spyglass.errors import InvalidQuery, UnknownImageId
from spyglass.query.filters import Filters
from spyglass.query.terms import ImageTerm, Query, Term, TextTerm, check_region, parse_terms
from spyglass.search import SearchResult


def build_terms(
    text: str,
    images: tuple[str, ...],
    negatives: tuple[str, ...],
    image_weight: float,
    negative_weight: float,
    region: tuple[float, float, float, float] | None,
) -> list[Term]:
    """The CLI's query rules: TEXT in rclip syntax, then --image and --not terms.

    When images and texts are both given, image terms are scaled by ``image_weight``
    and text terms by ``1 - image_weight``; ``--not`` terms get ``-negative_weight``.
    """
    terms: list[Term] = parse_terms(text, cwd=Path.cwd()) if text.strip() else []
    terms += [ImageTerm(path=p) for p in images]
    terms += [TextTerm(n, -negative_weight) for n in negatives if n.strip()]
    if region is not None:
        if not any(isinstance(t, ImageTerm) for t in terms):
            raise InvalidQuery("--region needs a query image (--image PATH)")
        terms = [replace(t, region=region) if isinstance(t, ImageTerm) else t for t in terms]
    has_image = any(isinstance(t, ImageTerm) and t.weight > 0 for t in terms)
    has_text = any(isinstance(t, TextTerm) and t.weight > 0 for t in terms)
    if has_image and has_text:
        terms = [
            replace(
                t,
                weight=t.weight * (image_weight if isinstance(t, ImageTerm) else 1 - image_weight),
            )
            if t.weight > 0
            else t
            for t in terms
        ]
    return terms


def marked_image_id(engine: Spyglass, mark: str) -> int:
    """--good / --bad value -> image id: an indexed file's path, or an id as the results
    show it (``12`` or ``#12``)."""
    state = engine.index.catalogue.file(str(Path(mark).expanduser().absolute()))
    if state is not None:
        return state.image_id
    number = mark.strip().removeprefix("#")
    if number.isdigit():
        return int(number)
    raise UnknownImageId(f"{mark} is neither an indexed image's path nor an image id")


def parse_region(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError as exc:
        raise InvalidQuery("--region is four fractions: left,top,right,bottom") from exc
    return check_region(numbers)


@click.command("search")
@click.argument("text", nargs=-1)
@index_option
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Query image file (or an indexed image's path). Repeatable.",
)
@click.option(
    "--not", "negatives", multiple=True, help="Push results away from this text. Repeatable."
)
@click.option(
    "--image-weight",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Share of the image in an image + text query (text gets the rest).",
)
@click.option(
    "--not-weight",
    type=click.FloatRange(0.0, 10.0),
    default=0.5,
    show_default=True,
    help="Weight of each --not term.",
)
@click.option(
    "--region",
    default=None,
    help="Focus on a box of the query image: left,top,right,bottom as fractions (0..1).",
)
@click.option(
    "--method",
    default="default",
    show_default=True,
    help="How terms are combined (see `spyglass models`).",
)
@click.option(
    "--rerank",
    default="default",
    show_default=True,
    help="Re-rank the top results: none, aqe or kreciprocal; default = the evaluated "
    "winner for the kind of query (see `spyglass models`).",
)
@click.option(
    "--good",
    "good",
    multiple=True,
    help="An indexed image (id or path) marked good: relevance feedback. Repeatable.",
)
@click.option(
    "--bad",
    "bad",
    multiple=True,
    help="An indexed image (id or path) marked bad: relevance feedback. Repeatable.",
)
@click.option(
    "-k",
    "--top",
    "k",
    type=click.IntRange(1, 100_000),
    default=10,
    show_default=True,
    help="Number of results.",
)
@click.option(
    "--offset", type=click.IntRange(0), default=0, help="Skip this many results (paging)."
)
@click.option("--min-score", type=float, default=None, help="Drop results scoring below this.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of {path, score, ...}.")
@click.option(
    "--paths",
    "paths_only",
    is_flag=True,
    help="Print only the paths, one per line, best first (for piping).",
)
@click.option(
    "--collapse-duplicates",
    is_flag=True,
    help="Show each group of near-duplicates once, as its best-ranked member, with the "
    "group's size (see `spyglass duplicates`).",
)
@click.option(
    "--export",
    "export_to",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the results as a case file: FILE.json (complete, checked by "
    "`spyglass verify`) or FILE.csv (flat, for spreadsheets).",
)
@click.option(
    "--audit",
    "audit_log",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append this search (and its export) to an audit log (JSON Lines, each entry "
    "chained to the one before by SHA-256; check it with `spyglass audit verify`).",
)
@filter_options
@sort_option
@model_option
@device_option
@memory_budget_option
def search_command(
    text: tuple[str, ...],
    index_dir: str,
    images: tuple[str, ...],
    negatives: tuple[str, ...],
    image_weight: float,
    not_weight: float,
    region: str | None,
    method: str,
    rerank: str,
    good: tuple[str, ...],
    bad: tuple[str, ...],
    k: int,
    offset: int,
    min_score: float | None,
    as_json: bool,
    paths_only: bool,
    collapse_duplicates: bool,
    export_to: str | None,
    audit_log: str | None,
    model: str | None,
    device: str | None,
    memory_budget: int | None,
    filters: Filters,
    sort: str | None = None,
) -> None:
    """Search by TEXT, by --image, or both; with filters alone, list the images they
    keep, newest first (--sort oldest: oldest first).

    TEXT may combine weighted terms, rclip style: "2:golden retriever" + ./pool.jpg - fruit

    Each result prints as score, #id (what --good and --bad take) and path.
    """
    if as_json and paths_only:
        raise click.UsageError(
            "--json and --paths cannot be combined: choose one", click.get_current_context()
        )
    if export_to is not None:
        from spyglass.casework.casefile import case_format

        case_format(export_to)  # a wrong suffix is told before the search, not after
    terms = build_terms(
        " ".join(text), images, negatives, image_weight, not_weight, parse_region(region)
    )
    runtime = runtime_settings(device)
    with Spyglass.open(
        index_dir,
        runtime=runtime,
        model=model,
        vector_search=vector_search_settings(memory_budget, runtime),
    ) as engine:
        query = Query(
            tuple(terms),
            k=k,
            offset=offset,
            min_score=min_score,
            method=method,
            positives=tuple(marked_image_id(engine, m) for m in good),
            negatives=tuple(marked_image_id(engine, m) for m in bad),
            rerank=rerank,
            filters=filters,
            sort=sort,
        )
        for note in engine.query_notes(query):
            click.echo(f"note: {note}", err=True)
        if collapse_duplicates or export_to or audit_log:
            from spyglass.cli.casework import record_search

            groups = record_search(engine, query, collapse_duplicates, export_to, audit_log)
            results = [g.result for g in groups]
            group_sizes = [g.group_size for g in groups] if collapse_duplicates else None
        else:
            results, group_sizes = engine.search(query), None
    print_results(
        results,
        as_json=as_json,
        paths_only=paths_only,
        group_sizes=group_sizes,
        dated=query.browsing,
    )


def print_results(
    results: list[SearchResult],
    *,
    as_json: bool = False,
    paths_only: bool = False,
    group_sizes: list[int] | None = None,
    dated: bool = False,
) -> None:
    """Results on stdout: a JSON array, the paths alone, or score, #id and path a line.
    ``group_sizes``: the near-duplicate group each result stands for (collapsed).
    ``dated``: browsing by filters, each result's rank score is its date (seconds since
    1970), shown as a UTC date in place of the score (and as ``date`` in JSON)."""
    if as_json:
        documents = [r.to_json() for r in results]
        if group_sizes is not None:
            for document, size in zip(documents, group_sizes, strict=True):
                document["group_size"] = size
        if dated:
            for document, result in zip(documents, results, strict=True):
                document["date"] = _utc(result.rank_score)
        click.echo(json.dumps(documents, indent=2))
        return
    if not results:
        click.echo("no results", err=True)
    if paths_only:
        for result in results:
            click.echo(result.path)
        return
    id_width = max((len(str(r.image_id)) for r in results), default=0)
    for n, result in enumerate(results):
        copies = f"  (+{len(result.paths) - 1} copies)" if len(result.paths) > 1 else ""
        if group_sizes is not None and group_sizes[n] > 1:
            copies += f"  (+{group_sizes[n] - 1} near-duplicates)"
        image_id = f"#{result.image_id}".ljust(id_width + 1)
        first = _utc(result.rank_score) if dated else f"{result.score:8.4f}"
        click.echo(f"{first}  {image_id}  {result.path}{copies}")


def _utc(seconds: float) -> str:
    """Seconds since 1970 -> ``YYYY-MM-DD HH:MM:SS`` (UTC, as the date rule reads EXIF)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
