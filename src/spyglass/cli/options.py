"""Options shared by several commands, and building settings at the entry point."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
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


def vector_search_settings(
    memory_budget: int | None, runtime: RuntimeSettings | None = None
) -> VectorSearchSettings | None:
    """How vectors are searched, from the command line (``None``: the defaults). The
    runtime's ``--device cpu`` keeps FAISS off the GPU too."""
    gpu_off = runtime is not None and runtime.device == "cpu"
    if memory_budget is None and not gpu_off:
        return None
    return VectorSearchSettings(memory_budget=memory_budget, gpu="off" if gpu_off else "auto")


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


def filter_options(function: F) -> F:
    """The metadata filter options (``--under``, ``--after``, ``--before``, ``--camera``,
    ``--has-gps/--no-gps``, ``--format``, ``--min-size``), handed to the command as one
    ``filters`` argument (:class:`~spyglass.query.filters.Filters`); a bad value is one
    line (InvalidQuery)."""
    import functools

    from spyglass.query.filters import Filters

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["filters"] = Filters.parse(
            under=kwargs.pop("filter_under"),
            after=kwargs.pop("filter_after"),
            before=kwargs.pop("filter_before"),
            camera=kwargs.pop("filter_camera"),
            has_gps=kwargs.pop("filter_has_gps"),
            formats=kwargs.pop("filter_formats"),
            min_size=kwargs.pop("filter_min_size"),
            cwd=Path.cwd(),
        )
        return function(*args, **kwargs)

    options = [
        click.option(
            "--under",
            "filter_under",
            multiple=True,
            type=click.Path(file_okay=False),
            help="Only images with a file under this folder. Repeatable (any of them).",
        ),
        click.option(
            "--after",
            "filter_after",
            default=None,
            metavar="DATE",
            help="Only images dated from DATE on (YYYY, YYYY-MM, YYYY-MM-DD or "
            "YYYY-MM-DDTHH:MM, UTC). Date: EXIF capture time, else the file's mtime.",
        ),
        click.option(
            "--before",
            "filter_before",
            default=None,
            metavar="DATE",
            help="Only images dated up to the end of DATE (--after 2020 --before 2020: all "
            "of 2020).",
        ),
        click.option(
            "--camera",
            "filter_camera",
            default=None,
            help="Only images whose EXIF camera make/model contains this (any case).",
        ),
        click.option(
            "--has-gps/--no-gps",
            "filter_has_gps",
            default=None,
            help="Only images with (or without) an EXIF GPS position.",
        ),
        click.option(
            "--format",
            "filter_formats",
            multiple=True,
            metavar="FORMAT",
            help="Only images of this format (jpeg, png, webp...). Repeatable.",
        ),
        click.option(
            "--min-size",
            "filter_min_size",
            default=None,
            metavar="WxH",
            help="Only images at least this many pixels wide and high (e.g. 800x600).",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def sort_option(function: F) -> F:
    """``--sort newest|oldest``: the order of a filters-only browse (by date)."""
    return click.option(
        "--sort",
        type=click.Choice(["newest", "oldest"]),
        default=None,
        help="With filters and no query: list the images newest (default) or oldest "
        "first, by date (ties by id). Refused with a query, which is ordered by similarity.",
    )(function)
