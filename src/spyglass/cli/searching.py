"""`spyglass search` and `spyglass models`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from spyglass.cli.options import (
    device_option,
    index_option,
    memory_budget_option,
    model_option,
    runtime_settings,
    vector_search_settings,
)
from spyglass.engine import Spyglass
from spyglass.errors import InvalidQuery, UnknownImageId
from spyglass.query.terms import ImageTerm, Query, Term, TextTerm, check_region, parse_terms


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
    model: str | None,
    device: str | None,
    memory_budget: int | None,
) -> None:
    """Search by TEXT, by --image, or both.

    TEXT may combine weighted terms, rclip style: "2:golden retriever" + ./pool.jpg - fruit

    Each result prints as score, #id (what --good and --bad take) and path.
    """
    if as_json and paths_only:
        raise click.UsageError(
            "--json and --paths cannot be combined: choose one", click.get_current_context()
        )
    terms = build_terms(
        " ".join(text), images, negatives, image_weight, not_weight, parse_region(region)
    )
    with Spyglass.open(
        index_dir,
        runtime=runtime_settings(device),
        model=model,
        vector_search=vector_search_settings(memory_budget),
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
        )
        for note in engine.query_notes(query):
            click.echo(f"note: {note}", err=True)
        results = engine.search(query)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
        return
    if not results:
        click.echo("no results", err=True)
    if paths_only:
        for result in results:
            click.echo(result.path)
        return
    id_width = max((len(str(r.image_id)) for r in results), default=0)
    for result in results:
        copies = f"  (+{len(result.paths) - 1} copies)" if len(result.paths) > 1 else ""
        image_id = f"#{result.image_id}".ljust(id_width + 1)
        click.echo(f"{result.score:8.4f}  {image_id}  {result.path}{copies}")


@click.command("models")
@click.option("--json", "as_json", is_flag=True)
def models_command(as_json: bool) -> None:
    """List the named models and the query methods."""
    from spyglass.encoders import model_names
    from spyglass.query.methods import DEFAULT_METHOD, DEFAULT_METHODS, TASKS, method_names
    from spyglass.query.rerank import (
        describe_default_reranker,
        reranker_names,
        resolve_reranker,
    )

    models = {name: spec.get("about", "") for name, spec in model_names().items()}
    methods = method_names()
    rerankers = reranker_names()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "models": models,
                    "methods": methods,
                    "default_method": DEFAULT_METHOD,
                    "default_methods": DEFAULT_METHODS,
                    "rerankers": rerankers,
                    "default_rerankers": {t: resolve_reranker("default", t) for t in TASKS},
                    "default_reranker_rules": {t: describe_default_reranker(t) for t in TASKS},
                },
                indent=2,
            )
        )
        return
    click.echo("models (--model):")
    for name, about in models.items():
        click.echo(f"  {name:24} {about}")
    click.echo(
        "  or a local CLIP/SigLIP checkpoint directory, an ONNX export directory, or a hub id"
    )
    click.echo("methods (--method):")
    for name, about in methods.items():
        click.echo(f"  {name:24} {about}")
    click.echo("re-rankings (--rerank):")
    for name, about in rerankers.items():
        click.echo(f"  {name:24} {about}")
    click.echo("defaults, by kind of query (what --method/--rerank default means):")
    for task in TASKS:
        rerank = describe_default_reranker(task)
        click.echo(f"  {task:24} method {DEFAULT_METHODS[task]}, re-ranking {rerank}")
