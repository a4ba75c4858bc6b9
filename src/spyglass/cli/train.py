"""`spyglass train NAME`: learn a query helper from an index's own images."""

from __future__ import annotations

import json

import click

from spyglass.cli.options import device_option, index_option, runtime_settings


@click.group("train")
def train_group() -> None:
    """Train query helpers on an index's images (kept inside the index)."""


@train_group.command("pic2word")
@index_option
@click.option(
    "--epochs", type=click.IntRange(1, 1000), default=10, show_default=True, help="Passes."
)
@click.option("--batch-size", type=click.IntRange(2, 4096), default=128, show_default=True)
@click.option(
    "--learning-rate",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=1e-3,
    show_default=True,
)
@click.option(
    "--temperature",
    type=click.FloatRange(0.0, 10.0, min_open=True),
    default=0.05,
    show_default=True,
    help="Softmax temperature of the contrastive loss.",
)
@click.option(
    "--max-images",
    type=click.IntRange(2),
    default=None,
    help="Train on a random sample of this many images (default: all).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the training report as JSON.")
@device_option
def pic2word_command(
    index_dir: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    max_images: int | None,
    seed: int,
    as_json: bool,
    device: str | None,
) -> None:
    """Teach Pic2Word to turn this index's images into pseudo words.

    Unlabelled images only; the mapping is saved as INDEX/models/pic2word.npz and used
    by `spyglass search --method pic2word --image IMG "as a sketch"`.
    """
    from spyglass.engine import Spyglass
    from spyglass.query.pic2word import TrainingSettings, train_pic2word

    settings = TrainingSettings(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        temperature=temperature,
        max_images=max_images,
        seed=seed,
    )

    def on_epoch(epoch: int, loss: float) -> None:
        click.echo(f"epoch {epoch}/{epochs}: loss {loss:.4f}", err=True)

    with Spyglass.open(index_dir, runtime=runtime_settings(device)) as engine:
        report = train_pic2word(engine.index, engine.encoder, settings, on_epoch)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo(
        f"trained on {report.images} images in {report.seconds:.0f} s "
        f"(loss {report.losses[0]:.3f} -> {report.losses[-1]:.3f}); saved {report.path}"
    )
