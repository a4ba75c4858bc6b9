"""`spyglass demo`: the quick start's main job, end to end, on sample photos."""

from __future__ import annotations

from pathlib import Path

import click

from spyglass.cli.indexing import ProgressBar, summary
from spyglass.cli.options import device_option, runtime_settings
from spyglass.demo import write_sample_images
from spyglass.engine import Spyglass
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.search import SearchResult


def show(title: str, command: str, results: list[SearchResult]) -> None:
    click.echo(f"\n{title}\n  $ {command}")
    for result in results:
        click.echo(f"  {result.score:7.4f}  #{result.image_id:<3} {result.path}")


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False),
    default="spyglass-demo",
    show_default=True,
    help="Where the sample photos and their index go.",
)
@device_option
def demo_command(folder: str, device: str | None) -> None:
    """Index sample photos with the bundled model, then search by text, by image, and by both."""
    root = Path(folder).absolute()
    images = root / "images"
    index_dir = root / "index"
    paths = write_sample_images(images)
    click.echo(f"{len(paths)} sample photos (CC0 / public domain) in {images}")
    engine = Spyglass.open(index_dir, runtime=runtime_settings(device), writable=True)
    with engine:
        with ProgressBar(quiet=False) as bar:
            report = engine.add([str(images)], progress=bar)
        click.echo(summary(report))
        cat = str(images / "chelsea-the-cat.png")
        camera = str(images / "cameraman.png")
        show(
            "Search by text:",
            f'spyglass search "a cup of coffee" --index {index_dir} -k 3',
            engine.search(Query((TextTerm("a cup of coffee"),), k=3)),
        )
        show(
            "Search by example image:",
            f"spyglass search --image {cat} --index {index_dir} -k 3",
            engine.search(Query((ImageTerm(path=cat),), k=3)),
        )
        show(
            "Search by image and text:",
            f'spyglass search "a rocket" --image {camera} --index {index_dir} -k 3',
            engine.search(
                Query((ImageTerm(path=camera, weight=0.5), TextTerm("a rocket", weight=0.5)), k=3)
            ),
        )
    click.echo(
        '\nNext: spyglass index YOUR/PHOTOS, then spyglass search "a dog" (the index goes to '
        "a per-user folder unless --index or SPYGLASS_INDEX names one; see README.md)"
    )
