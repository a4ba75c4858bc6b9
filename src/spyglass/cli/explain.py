"""`spyglass explain`: why a result matched, as a heatmap drawn over it (PNG)."""

from __future__ import annotations

from pathlib import Path

import click
from PIL import Image

from spyglass.casework.explain import OcclusionSettings
from spyglass.cli.options import device_option, index_option, model_option, runtime_settings
from spyglass.cli.searching import build_terms, parse_region
from spyglass.engine import Spyglass
from spyglass.query.terms import Query


def check_writable(path: str | None, option: str) -> None:
    """Refuse, before the model runs, a PNG path whose folder does not exist."""
    if path is None:
        return
    folder = Path(path).expanduser().absolute().parent
    if not folder.is_dir():
        raise click.BadParameter(f"folder {folder} does not exist", param_hint=option)


def write_png(image: Image.Image, path: str) -> None:
    """Write ``image`` as PNG; a file that cannot be written is one line, not a trace."""
    try:
        image.save(Path(path).expanduser(), format="PNG")
    except OSError as error:
        raise click.FileError(path, hint=error.strerror or str(error)) from error


@click.command("explain")
@click.argument("text", nargs=-1)
@index_option
@click.option(
    "--id", "image_id", type=click.IntRange(0), required=True, help="The result's image id."
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Query image file (or an indexed image's path), as in `spyglass search`.",
)
@click.option("--not", "negatives", multiple=True, help="Negative text, as in search.")
@click.option(
    "--image-weight",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Share of the image in an image + text query.",
)
@click.option("--not-weight", type=click.FloatRange(0.0, 10.0), default=0.5, show_default=True)
@click.option("--region", default=None, help="Box of the query image: left,top,right,bottom.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="PNG to write: the result image with its heatmap over it.",
)
@click.option(
    "--query-out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="PNG to write for an image query: the query image with its heatmap.",
)
@click.option(
    "--grid",
    type=click.IntRange(2, 32),
    default=OcclusionSettings.grid,
    show_default=True,
    help="Cells per side; hidden windows are 2x2 and 3x3 cells. Cost grows as its square.",
)
@click.option(
    "--max-side",
    type=click.IntRange(16),
    default=None,
    help="Reduce the PNGs to this longer side (default: the image's decoded size).",
)
@model_option
@device_option
def explain_command(
    text: tuple[str, ...],
    index_dir: str,
    image_id: int,
    images: tuple[str, ...],
    negatives: tuple[str, ...],
    image_weight: float,
    not_weight: float,
    region: str | None,
    out: str,
    query_out: str | None,
    grid: int,
    max_side: int | None,
    model: str | None,
    device: str | None,
) -> None:
    """Why image --id matched the query TEXT / --image: which regions drive its score.

    Hides each window of the image in turn, embeds every copy, and colours a region by
    how much hiding it lowers the score; writes the result image with that heat over
    it to --out (and the query image's to --query-out).
    """
    check_writable(out, "--out")
    check_writable(query_out, "--query-out")
    terms = build_terms(
        " ".join(text), images, negatives, image_weight, not_weight, parse_region(region)
    )
    query = Query(tuple(terms), k=1)
    settings = OcclusionSettings(grid=grid)
    with Spyglass.open(index_dir, runtime=runtime_settings(device), model=model) as engine:
        explanation = engine.explain(query, image_id, settings)
    write_png(explanation.overlay(max_side), out)
    written = [out]
    query_overlay = explanation.query_overlay(max_side)
    if query_out is not None:
        if query_overlay is None:
            click.echo("note: --query-out is written only for a query with an image", err=True)
        else:
            write_png(query_overlay, query_out)
            written.append(query_out)
    peak_x, peak_y = explanation.result.peak()
    click.echo(
        f"#{image_id}: score {explanation.score:.4f} ({explanation.space} space); hottest "
        f"region at {peak_x:.0%} across, {peak_y:.0%} down; "
        f"{explanation.seconds:.1f} s; wrote {', '.join(str(Path(p)) for p in written)}"
    )
