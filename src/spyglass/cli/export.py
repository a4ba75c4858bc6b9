"""`spyglass export-onnx`: a Hugging Face CLIP/SigLIP checkpoint to ONNX graphs."""

from __future__ import annotations

import click


@click.command("export-onnx")
@click.argument("source")
@click.argument("target", type=click.Path(file_okay=False))
@click.option(
    "--layout",
    type=click.Choice(["xenova", "immich"]),
    default="xenova",
    show_default=True,
    help="xenova: onnx/{vision,text}_model.onnx (transformers.js); "
    "immich: visual/ and textual/ folders (immich's machine learning).",
)
def export_onnx_command(source: str, target: str, layout: str) -> None:
    """Export SOURCE (a checkpoint directory or cached hub id) to ONNX at TARGET, so that
    it runs in onnxruntime without PyTorch. Needs spyglass[hf]."""
    from spyglass.encoders.onnx_export import export_onnx

    path = export_onnx(source, target, layout=layout)  # type: ignore[arg-type]
    click.echo(f"exported {source} to {path} ({layout} layout); use it with --model {path}")
