"""Options shared by several commands, and building settings at the entry point."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import click

from spyglass.settings import RuntimeSettings, default_index_folder

F = TypeVar("F", bound=Callable[..., Any])


def index_option(function: F) -> F:
    return click.option(
        "--index",
        "index_dir",
        envvar="SPYGLASS_INDEX",
        # Read when the command runs, so that HOME and XDG_DATA_HOME are those of the run.
        default=lambda: str(default_index_folder(os.environ)),
        type=click.Path(file_okay=False),
        help="Index directory (or set SPYGLASS_INDEX). Default: spyglass/index in the "
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
