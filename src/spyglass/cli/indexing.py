"""`spyglass index` and `spyglass info`."""

from __future__ import annotations

import json
from dataclasses import replace

import click

from spyglass.cli.options import (
    device_option,
    index_option,
    memory_budget_option,
    model_option,
    runtime_settings,
    vector_search_settings,
)
from spyglass.engine import Spyglass, check_paths_to_index
from spyglass.ingest.pipeline import IngestProgress, IngestReport
from spyglass.settings import IngestSettings
from spyglass.store.factory import finish_building


class ProgressBar:
    """A rich progress bar on stderr with rate and ETA; silent when stderr is no terminal
    unless forced (CI logs stay readable)."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self.enabled = not quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
            transient=False,
        )
        self.task = self.progress.add_task("scanning", total=None, rate="")

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: IngestProgress) -> None:
        task = self.progress.tasks[0]
        elapsed = task.elapsed or 0.0
        rate = f"{event.done / elapsed:,.0f} files/s" if elapsed > 0.5 and event.done else ""
        self.progress.update(
            self.task,
            description=event.stage,
            completed=event.done,
            total=event.total or None,
            rate=rate,
        )


def summary(report: IngestReport) -> str:
    parts = [
        f"{report.added:,} new",
        f"{report.changed:,} changed",
        f"{report.linked:,} renamed or copied (not embedded again)",
        f"{report.removed:,} removed",
        f"{report.unchanged:,} unchanged",
        f"{len(report.skipped):,} skipped",
    ]
    rate = f", {report.embed_rate:,.1f} images/s" if report.embedded else ""
    return f"indexed: {', '.join(parts)} in {report.seconds:.1f} s{rate}"


def copy_index_to(
    paths: tuple[str, ...],
    index_dir: str,
    destination: str,
    memory_budget: int | None,
    *,
    quiet: bool,
    as_json: bool,
) -> None:
    """``spyglass index --copy-to URL``: the index's vectors and catalogue into a new
    index at URL (Milvus), nothing embedded again."""
    from spyglass.store.migrate import copy_index

    if paths:
        raise click.UsageError(
            "--copy-to copies an existing index and takes no PATHS: index them first "
            "(or afterwards, with --index URL)"
        )

    def told(space: str, done: int, total: int) -> None:
        if not (quiet or as_json):
            click.echo(f"copied {done:,} of {total:,} rows of {space}", err=True)

    report = copy_index(
        index_dir,
        destination,
        vector_search=vector_search_settings(memory_budget),
        progress=told,
    )
    if as_json:
        click.echo(
            json.dumps(
                {"destination": report.destination, "images": report.images, "rows": report.rows}
            )
        )
    else:
        rows = ", ".join(f"{space} {count:,}" for space, count in report.rows.items())
        click.echo(f"copied: {report.images:,} images ({rows} rows) to {report.destination}")
        click.echo(f'search it with: spyglass search --index {report.destination} "..."')


@click.command("index")
# Not required by click: --copy-to takes none (the check is in the command).
@click.argument("paths", nargs=-1, type=click.Path())
@index_option
@model_option
@device_option
@click.option(
    "--batch-size", type=click.IntRange(1, 4096), default=None, help="Images per encoder call."
)
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Decode threads.")
@click.option(
    "--commit-every",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Images per durable commit (a crash loses at most this many).",
)
@click.option(
    "--crops",
    type=click.IntRange(0, 4),
    default=None,
    help="Also embed a GxG grid of overlapping crops per image so small objects can be "
    "found (costs 1+G*G embeddings per image; fixed when the index is created).",
)
@memory_budget_option
@click.option(
    "--copy-to",
    "copy_to",
    default=None,
    metavar="URL",
    help="Instead of indexing PATHS: copy the index (--index) into a new one at URL, "
    "e.g. milvus://HOST:PORT/COLLECTION or milvus:///path/file.db, without embedding "
    "again; searches then give the same results with --index URL.",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS|local[N]",
    help="Decode and embed on a Ray cluster's workers (one per GPU, else per CPU): "
    "HOST:PORT of its head node, ray://HOST:PORT, auto, or local[N] to start N worker "
    "processes here. This process still scans and commits; a worker that dies loses "
    'only its batch. Needs pip install "spyglass[ray]".',
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def index_command(
    paths: tuple[str, ...],
    index_dir: str,
    model: str | None,
    device: str | None,
    batch_size: int | None,
    workers: int | None,
    commit_every: int | None,
    crops: int | None,
    memory_budget: int | None,
    quiet: bool,
    as_json: bool,
    copy_to: str | None,
    ray_address: str | None = None,
) -> None:
    """Index the images under PATHS (folders or files), incrementally."""
    if copy_to is not None:
        copy_index_to(paths, index_dir, copy_to, memory_budget, quiet=quiet, as_json=as_json)
        return
    if not paths:
        raise click.UsageError("Missing argument 'PATHS...'.")
    settings = IngestSettings()
    if batch_size:
        settings = replace(settings, batch_size=batch_size)
    if workers:
        settings = replace(settings, decode_workers=workers)
    if commit_every:
        settings = replace(settings, commit_every=commit_every)
    if crops is not None:
        settings = replace(settings, crop_grid=crops)
    # Before the index is created: a typo must leave nothing behind.
    check_paths_to_index(paths, index_dir)
    runtime = runtime_settings(device, quiet=quiet)
    cluster = None
    if ray_address is not None:
        from spyglass.ingest.ray_cluster import RayCluster, RaySettings

        # Also before the index is created: a wrong address leaves nothing behind.
        cluster = RayCluster(RaySettings.parse(ray_address), runtime).connect()
        click.get_current_context().call_on_close(cluster.close)
    engine = Spyglass.open(
        index_dir,
        runtime=runtime,
        model=model,
        writable=True,
        ingest_settings=settings,
        vector_search=vector_search_settings(memory_budget, runtime),
    )
    with engine:
        with ProgressBar(quiet or as_json) as bar:
            if cluster is None:
                report = engine.add(list(paths), progress=bar)
            else:
                report = engine.add_on_ray(list(paths), cluster, progress=bar)
        # Not an error: re-indexing a folder whose photos were all deleted is how they
        # leave the index, and a scheduled run should not fail for it.
        for path in engine.paths_without_images(list(paths)):
            click.echo(f"warning: no images found in {path}", err=True)
        # Waited for here, not only when the index closes, so that a failed build of the
        # approximate index (a full disk, a budget too small) is told, not lost.
        failure = finish_building(
            engine.index.stores.values(),
            waiting=None if quiet or as_json else lambda line: click.echo(line, err=True),
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "added": report.added,
                    "changed": report.changed,
                    "linked": report.linked,
                    "removed": report.removed,
                    "unchanged": report.unchanged,
                    "skipped": len(report.skipped),
                    "embedded": report.embedded,
                    "seconds": round(report.seconds, 3),
                }
            )
        )
    else:
        click.echo(summary(report))
        if report.skipped:
            click.echo(f"skipped files are listed by: spyglass info --index {index_dir}")
    # The images are indexed either way; the exit status says the search index is not
    # what was asked for (the CLI turns the error into one line and status 3).
    if failure is not None:
        raise failure


@click.command("info")
@index_option
@memory_budget_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--skipped",
    "skipped_limit",
    type=int,
    default=50,
    show_default=True,
    help="How many skipped files to list.",
)
def info_command(
    index_dir: str, memory_budget: int | None, as_json: bool, skipped_limit: int
) -> None:
    """Show what an index holds: counts, model, folders, skipped files, and how each
    space is searched."""
    from spyglass.store.index import Index

    # info needs no model: read the catalogue only.
    with Index.open(index_dir, vector_search=vector_search_settings(memory_budget)) as index:
        status = Spyglass.status_of(index, skipped_limit=skipped_limit)
    if as_json:
        click.echo(json.dumps(status.to_json(), indent=2))
        return
    click.echo(f"index:    {status.folder}")
    click.echo(f"model:    {status.model} (version {status.model_version})")
    spaces = ", ".join(f"{k} {v}-d" for k, v in status.spaces.items())
    click.echo(f"spaces:   {spaces}")
    for space, method in status.search.items():
        click.echo(f"search:   {space}: {method['summary']}")
    click.echo(f"images:   {status.images:,} files, {status.unique_images:,} distinct")
    if status.crop_grid:
        click.echo(f"crops:    {status.crop_grid}x{status.crop_grid} per image")
    if status.metadata:
        meta = status.metadata
        unread = status.unique_images - meta["read"]
        click.echo(
            f"metadata: {meta['capture_time']:,} with EXIF capture time, {meta['camera']:,} "
            f"camera, {meta['gps']:,} GPS"
            + (f" ({unread:,} not read yet: run spyglass index again)" if unread > 0 else "")
        )
    click.echo(f"skipped:  {status.skipped:,}")
    for root in status.roots:
        click.echo(f"folder:   {root}")
    for skipped in status.skipped_files:
        click.echo(f"  skipped {skipped.path}: {skipped.message} [{skipped.reason}]")
    if status.skipped > len(status.skipped_files):
        click.echo(f"  ... and {status.skipped - len(status.skipped_files):,} more (--skipped N)")
