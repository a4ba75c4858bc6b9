"""Options shared by several commands, and building settings at the entry point."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import click

from spyglass.settings import (
    RuntimeSettings,
    VectorSearchSettings,
    default_index_folder,
    parse_bytes,
)

F = TypeVar("F", bound=Callable[..., Any])


def index_option(function: F) -> F:
    return click.option(
        "--index",
        "index_dir",
        envvar="SPYGLASS_INDEX",
        # Read when the command runs, so that HOME and XDG_DATA_HOME are those of the run.
        default=lambda: str(default_index_folder(os.environ)),
        type=click.Path(file_okay=False),
        help="Index directory, or milvus:///path/file.db (Milvus Lite) or "
        "milvus://HOST:PORT/COLLECTION to keep the vectors in Milvus (docs/scale-out.md) "
        "(or set SPYGLASS_INDEX). Default: spyglass/index in the "
        "per-user data folder ($XDG_DATA_HOME or ~/.local/share on Linux, ~/Library/"
        "Application Support on macOS, %LOCALAPPDATA% on Windows).",
    )(function)


def model_option(function: F) -> F:
    return click.option(
        "--model",
        default=None,
        help="Model name (see `spyglass models`), checkpoint directory or hub id. "
        "Default: the index's own model, or 'bundled' for a new index.",
    )(function)


def device_option(function: F) -> F:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default=None,
        help="Where models run (default: auto, or SPYGLASS_DEVICE).",
    )(function)


class ByteSize(click.ParamType):
    """A size such as ``4GiB``, ``512MiB``, ``1.5G`` or ``800`` (MiB), as bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_bytes(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


def memory_budget_option(function: F) -> F:
    return click.option(
        "--memory-budget",
        type=ByteSize(),
        envvar="SPYGLASS_MEMORY_BUDGET",
        default=None,
        help="Memory a space's search index may take, e.g. 4GiB or 512MiB (a plain "
        "number is MiB; KiB/MiB/GiB/TiB are binary, KB/MB/GB/TB decimal; or set "
        "SPYGLASS_MEMORY_BUDGET). It picks the index: exact while every vector fits as "
        "float32, else approximate with 8-bit codes, or 4-bit codes where those do not "
        "fit. Default: no limit (exact below 100,000 images, 8-bit codes above).",
    )(function)


def vector_search_settings(memory_budget: int | None) -> VectorSearchSettings | None:
    """How vectors are searched, from the command line (``None``: the defaults)."""
    if memory_budget is None:
        return None
    return VectorSearchSettings(memory_budget=memory_budget)


def runtime_settings(device: str | None = None, quiet: bool = False) -> RuntimeSettings:
    """Settings from the environment and the command line; unless ``quiet``, a model's
    first-use preparation is told on stderr step by step (it takes tens of seconds)."""
    settings = RuntimeSettings.from_environment(os.environ)
    if device:
        settings = replace(settings, device=device)  # type: ignore[arg-type]
    if not quiet:
        settings = replace(settings, report_model_preparation=print_preparation_step)
    return settings


def print_preparation_step(line: str) -> None:
    click.echo(line, err=True)
