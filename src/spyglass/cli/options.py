"""Options shared by several commands, and building settings at the entry point."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import click

from spyglass.settings import RuntimeSettings

F = TypeVar("F", bound=Callable[..., Any])


def index_option(function: F) -> F:
    return click.option(
        "--index",
        "index_dir",
        required=True,
        envvar="SPYGLASS_INDEX",
        type=click.Path(file_okay=False),
        help="Index directory (or set SPYGLASS_INDEX).",
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


def runtime_settings(device: str | None = None) -> RuntimeSettings:
    settings = RuntimeSettings.from_environment(os.environ)
    if device:
        settings = replace(settings, device=device)  # type: ignore[arg-type]
    return settings
