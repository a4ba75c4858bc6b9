"""`spyglass eval PROTOCOL`: measure search quality on a labelled folder or the user's
own judged queries, and `spyglass eval report` to regenerate docs/results.md.

Translation only: options become settings, the protocols in :mod:`spyglass.eval` do the
work, results become a table, JSON or a plot.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from spyglass.cli.options import device_option, runtime_settings
from spyglass.encoders import DEFAULT_MODEL, load_encoder
from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import (
    IndexedCollection,
    default_index_dir,
    open_collection,
    read_collection,
)
from spyglass.eval.protocols import PROTOCOL_TASKS
from spyglass.eval.protocols.running import ProgressFunction, RunSettings
from spyglass.eval.results import ProtocolResult
from spyglass.eval.sizes import DEFAULT_DRAWS, DEFAULT_QUERIES, DEFAULT_SIZES
from spyglass.eval.variants import select_variants

F = TypeVar("F", bound=Callable[..., Any])


def _exclude_pair(value: str) -> tuple[str, str]:
    column, sep, wanted = value.partition("=")
    if not sep or not column:
        raise InvalidQuery(f"--exclude takes COLUMN=VALUE, not '{value}'")
    return column, wanted


def common_options(function: F) -> F:
    """Options every protocol on a labelled folder takes."""
    decorators = [
        click.option(
            "--data",
            required=True,
            type=click.Path(file_okay=False),
            help="Labelled folder: images plus labels.csv (path, then label columns).",
        ),
        click.option(
            "--model", default=None, help=f"Model to evaluate (default: {DEFAULT_MODEL})."
        ),
        click.option(
            "--method",
            "methods",
            multiple=True,
            help="Method to evaluate (repeatable). Default: every method registered for "
            "the protocol's kind of query.",
        ),
        click.option(
            "--rerank",
            "reranks",
            multiple=True,
            help="Also evaluate each method followed by this re-ranking (repeatable).",
        ),
        click.option(
            "--index-dir",
            default=None,
            type=click.Path(file_okay=False),
            help="Where the collection's index lives (default: under the cache folder, "
            "one per folder and model; reused and updated incrementally).",
        ),
        click.option(
            "--label", default=None, help="Column holding each image's class (default: label)."
        ),
        click.option(
            "--exclude",
            "excludes",
            multiple=True,
            help="Leave out rows where COLUMN=VALUE (repeatable; adds to the dataset's rules).",
        ),
        *shared_output_options,
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


shared_output_options = [
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of every draw."),
    click.option(
        "--bootstrap",
        type=click.IntRange(100, 100_000),
        default=1000,
        show_default=True,
        help="Bootstrap resamples for the mAP confidence interval.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the results as JSON."),
    click.option(
        "--per-query", is_flag=True, help="With --json: include every query's AP as well."
    ),
    click.option(
        "--plot",
        default=None,
        type=click.Path(dir_okay=False),
        help="Write precision-recall and Recall@K curves to this PNG file.",
    ),
    click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    device_option,
]


def _output_options(function: F) -> F:
    for decorator in reversed(shared_output_options):
        function = decorator(function)
    return function


def _quiet(asked: bool) -> bool:
    """Progress bars only for a person watching a terminal (logs stay readable)."""
    return asked or not sys.stderr.isatty()


@contextmanager
def query_progress(quiet: bool, what: str) -> Iterator[ProgressFunction]:
    """A rich progress bar on stderr fed by (done, total) calls."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress(
        f"[bold]{what}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=True,
    )
    task = progress.add_task(what, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with progress:
        yield update


def open_labelled(
    data: str,
    model: str | None,
    index_dir: str | None,
    label: str | None,
    excludes: tuple[str, ...],
    device: str | None,
    quiet: bool,
    *,
    require_labels: bool = True,
) -> IndexedCollection:
    """Read the folder's labels, index it (incrementally) and open the index."""
    from spyglass.cli.indexing import ProgressBar

    collection = read_collection(
        data,
        label=label,
        exclude=[_exclude_pair(e) for e in excludes],
        require_labels=require_labels,
    )
    runtime = runtime_settings(device)
    model_name = model or DEFAULT_MODEL
    encoder = load_encoder(model_name, runtime)
    folder = (
        Path(index_dir)
        if index_dir
        else default_index_dir(
            runtime.cache_dir, collection.folder, model_name, encoder.info.version
        )
    )
    with ProgressBar(quiet) as bar:
        indexed, _ = open_collection(collection, encoder, folder, bar)
    return indexed


def emit(
    result: ProtocolResult, as_json: bool, per_query: bool, plot: str | None, quiet: bool
) -> None:
    if plot:
        from spyglass.eval.plots import save_plot

        written = save_plot(result, plot)
        if not as_json and not quiet:
            click.echo(f"plot written to {written}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_json(per_query), indent=2))
        return
    from rich.console import Console

    from spyglass.eval.report import print_table

    print_table(result, Console(file=sys.stdout, width=160))


def run_on_folder(
    protocol: str,
    options: dict[str, Any],
    run: Callable[..., ProtocolResult],
    **protocol_options: Any,
) -> None:
    """The common path of every labelled-folder protocol."""
    quiet = _quiet(options["quiet"] or options["as_json"])
    variants = select_variants(PROTOCOL_TASKS[protocol], options["methods"], options["reranks"])
    indexed = open_labelled(
        options["data"],
        options["model"],
        options["index_dir"],
        options["label"],
        options["excludes"],
        options["device"],
        quiet,
    )
    settings = RunSettings(seed=options["seed"], resamples=options["bootstrap"])
    try:
        with query_progress(quiet, protocol) as progress:
            result = run(
                indexed, variants, settings=settings, progress=progress, **protocol_options
            )
    finally:
        indexed.engine.close()
    emit(result, options["as_json"], options["per_query"], options["plot"], options["quiet"])


@click.group("eval")
def eval_command() -> None:
    """Measure search quality: mAP, precision and recall with 95% intervals.

    Protocols run on a labelled folder (images plus labels.csv; --data) or on your own
    judged queries (qrels). The folder is indexed once per model and reused.
    """


template_option = click.option(
    "--template",
    "templates",
    multiple=True,
    help="Query template with {} for the class name (repeatable: an ensemble). "
    "Default: 'a photo of a {}'.",
)


@eval_command.command("text")
@common_options
@template_option
@click.option(
    "--queries",
    "query_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="CSV of label,query rows to use instead of the templates.",
)
def text_command(templates: tuple[str, ...], query_file: str | None, **options: Any) -> None:
    """One text query per class ranks the whole collection; same class is relevant."""
    from spyglass.eval.protocols.text import DEFAULT_TEMPLATE, run_text

    run_on_folder(
        "text",
        options,
        run_text,
        templates=templates or (DEFAULT_TEMPLATE,),
        query_file=query_file,
    )


@eval_command.command("image")
@common_options
@click.option(
    "--sample", type=click.IntRange(1), default=None, help="Query with this many images only."
)
def image_command(sample: int | None, **options: Any) -> None:
    """Each image (or a seeded sample) queries the rest; same class is relevant."""
    from spyglass.eval.protocols.image import run_image

    run_on_folder("image", options, run_image, sample=sample)


@eval_command.command("fewshot")
@common_options
@template_option
@click.option(
    "--shots",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    help="Exemplar images per class.",
)
def fewshot_command(templates: tuple[str, ...], shots: int, **options: Any) -> None:
    """A few exemplars per class: image kNN, exemplar SVM, text, SVM + text (Moll 2024)."""
    from spyglass.eval.protocols.fewshot import run_fewshot
    from spyglass.eval.protocols.text import DEFAULT_TEMPLATE

    run_on_folder(
        "fewshot",
        options,
        run_fewshot,
        shots=shots,
        templates=templates or (DEFAULT_TEMPLATE,),
    )


@eval_command.command("composed")
@common_options
@click.option("--attribute", default=None, help="Column the text changes (fashion: baseColour).")
@click.option("--object", "object_column", default=None, help="Column kept (default: --label).")
@click.option("--modifier", default=None, help="Text template for the new value, e.g. 'in {}'.")
@click.option(
    "--queries",
    type=click.IntRange(1),
    default=500,
    show_default=True,
    help="How many (image, new value) queries to draw.",
)
@click.option(
    "--image-weight",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Share of the image in each query (the text gets the rest).",
)
def composed_command(
    attribute: str | None,
    object_column: str | None,
    modifier: str | None,
    queries: int,
    image_weight: float,
    **options: Any,
) -> None:
    """Reference image + "in B" / "as a B": relevant share its object and have value B."""
    from spyglass.eval.protocols.composed import run_composed

    run_on_folder(
        "composed",
        options,
        run_composed,
        attribute=attribute,
        object_column=object_column,
        modifier=modifier,
        queries=queries,
        image_weight=image_weight,
    )


@eval_command.command("attribute")
@common_options
@click.option("--attribute", default=None, help="Column the queries name (fashion: baseColour).")
@click.option(
    "--object", "object_column", default=None, help="Column of the object (default: --label)."
)
@click.option(
    "--template",
    default=None,
    help="Query with {value} and {object}, default 'a {value} {object}'.",
)
@click.option(
    "--value-template",
    default=None,
    help="Query naming the value alone, with {value}; default 'something {value}'.",
)
@click.option(
    "--min-images",
    type=click.IntRange(1),
    default=None,
    help="Ask only pairs and values with at least this many images (default 5).",
)
def attribute_command(
    attribute: str | None,
    object_column: str | None,
    template: str | None,
    value_template: str | None,
    min_images: int | None,
    **options: Any,
) -> None:
    """Queries "a <value> <object>" and "something <value>"; relevant share the value."""
    from spyglass.eval.protocols import attribute as protocol

    run_on_folder(
        "attribute",
        options,
        protocol.run_attribute,
        attribute=attribute,
        object_column=object_column,
        template=template or protocol.DEFAULT_TEMPLATE,
        value_template=value_template or protocol.DEFAULT_VALUE_TEMPLATE,
        min_images=min_images or protocol.DEFAULT_MIN_IMAGES,
    )


@eval_command.command("caption")
@common_options
@click.option("--caption", "caption_column", default=None, help="Column with the captions.")
@click.option("--sample", type=click.IntRange(1), default=None, help="Use this many captions.")
def caption_command(caption_column: str | None, sample: int | None, **options: Any) -> None:
    """Each caption finds its image: hit@1/5/10 (Recall@K), MRR, mAP."""
    from spyglass.eval.protocols.caption import run_caption

    run_on_folder("caption", options, run_caption, caption_column=caption_column, sample=sample)


@eval_command.command("feedback")
@common_options
@template_option
@click.option(
    "--rounds",
    type=click.IntRange(1, 50),
    default=5,
    show_default=True,
    help="Rounds of feedback after the text query.",
)
@click.option(
    "--per-round",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Unseen results the simulated user judges each round.",
)
def feedback_command(
    templates: tuple[str, ...], rounds: int, per_round: int, **options: Any
) -> None:
    """Simulated relevance feedback (SeeSaw): AP after each round of marks."""
    from spyglass.eval.protocols.feedback import run_feedback
    from spyglass.eval.protocols.text import DEFAULT_TEMPLATE

    run_on_folder(
        "feedback",
        options,
        run_feedback,
        rounds=rounds,
        per_round=per_round,
        templates=templates or (DEFAULT_TEMPLATE,),
    )


@eval_command.command("qrels")
@click.option(
    "--qrels",
    required=True,
    type=click.Path(dir_okay=False),
    help="JSON lines of your queries and the images judged relevant (see docs/eval.md).",
)
@click.option(
    "--index",
    "index_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="An existing index to evaluate (its own model is used); with --data, where "
    "to index that folder.",
)
@click.option(
    "--data",
    default=None,
    type=click.Path(file_okay=False),
    help="A folder of images to index first (incrementally, once per --model).",
)
@click.option("--model", default=None, help="With --data: the model to evaluate.")
@click.option("--method", "methods", multiple=True, help="Method to evaluate (repeatable).")
@click.option("--rerank", "reranks", multiple=True, help="Also evaluate with this re-ranking.")
@click.option(
    "--image-weight",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Share of the image in image + text queries.",
)
@_output_options
def qrels_command(
    qrels: str,
    index_dir: str | None,
    data: str | None,
    model: str | None,
    methods: tuple[str, ...],
    reranks: tuple[str, ...],
    image_weight: float,
    **options: Any,
) -> None:
    """Your own queries with the images you judged relevant, on your own index."""
    from spyglass.engine import Spyglass
    from spyglass.eval.protocols.qrels import qrels_tasks, read_qrels, run_qrels

    if index_dir is None and data is None:
        raise InvalidQuery("give --index DIR (an existing index) or --data FOLDER (or both)")
    quiet = _quiet(options["quiet"] or options["as_json"])
    if data is not None:
        indexed = open_labelled(
            data, model, index_dir, None, (), options["device"], quiet, require_labels=False
        )
        indexed = IndexedCollection.whole_index(indexed.engine)
    else:
        engine = Spyglass.open(
            str(index_dir), runtime=runtime_settings(options["device"]), model=model
        )
        indexed = IndexedCollection.whole_index(engine)
    try:
        queries = read_qrels(qrels, indexed)
        variants = select_variants(qrels_tasks(queries), methods, reranks)
        settings = RunSettings(seed=options["seed"], resamples=options["bootstrap"])
        with query_progress(quiet, "qrels") as progress:
            result = run_qrels(
                indexed,
                variants,
                qrels=qrels,
                queries=queries,
                image_weight=image_weight,
                settings=settings,
                progress=progress,
            )
    finally:
        indexed.engine.close()
    emit(result, options["as_json"], options["per_query"], options["plot"], options["quiet"])


def shared_data_opener(
    model: str | None, device: str | None, no_bars: bool, index_root: str | None = None
) -> Callable[[Path], IndexedCollection]:
    """Opens a folder of the shared data with its known rules, indexed (incrementally)
    once per folder and model, under ``index_root`` (default: the cache folder)."""
    runtime = runtime_settings(device)
    model_name = model or DEFAULT_MODEL
    encoder = load_encoder(model_name, runtime)
    root = Path(index_root) if index_root else runtime.cache_dir

    def opener(folder: Path) -> IndexedCollection:
        from spyglass.cli.indexing import ProgressBar

        collection = read_collection(folder)
        index_dir = default_index_dir(root, collection.folder, model_name, encoder.info.version)
        with ProgressBar(no_bars) as bar:
            indexed, _ = open_collection(collection, encoder, index_dir, bar)
        return indexed

    return opener


@eval_command.command("report")
@click.option(
    "--data",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Folder holding the shared labelled sets (caltech101, pacs, fashion, ...).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Markdown file to write (docs/results.md).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Do not write: re-run and fail if any quality number differs from --out.",
)
@click.option("--model", default=None, help=f"Model to evaluate (default: {DEFAULT_MODEL}).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@device_option
def report_command(
    data: str, out: str, check: bool, model: str | None, quiet: bool, device: str | None
) -> None:
    """Run every protocol on the shared data and write the results as Markdown."""
    no_bars = _quiet(quiet)
    from spyglass.eval.suite import comparable, differences, run_suite

    opener = shared_data_opener(model, device, no_bars)

    def announce(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    @contextmanager
    def progress_for(what: str) -> Iterator[ProgressFunction]:
        with query_progress(no_bars, what) as update:
            yield update

    command = f"spyglass eval report --data {data} --out {out}"
    if model is not None:
        command += f" --model {model}"
    markdown = run_suite(Path(data), opener, command, announce, progress_for)
    target = Path(out)
    if check:
        if not target.is_file():
            raise InvalidQuery(f"--check needs an existing {out} to compare with")
        changed = differences(comparable(target.read_text("utf-8")), comparable(markdown))
        if changed:
            click.echo("\n".join(changed), err=True)
            raise click.ClickException(f"{out} does not match a re-run ({len(changed)} lines)")
        click.echo(f"{out} matches a re-run (timings aside)")
        return
    target.write_text(markdown, encoding="utf-8")
    click.echo(f"wrote {out}")


@eval_command.command("rerank")
@click.option(
    "--data",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Folder holding the shared labelled sets (caltech101, fashion, photos, ...).",
)
@click.option(
    "--sizes",
    default=",".join(str(size) for size in DEFAULT_SIZES),
    show_default=True,
    help="Collection sizes, comma-separated; a size beyond a folder means the whole folder.",
)
@click.option(
    "--draws",
    type=click.IntRange(1, 100),
    default=DEFAULT_DRAWS,
    show_default=True,
    help="Random collections per size (pooled); a whole folder is drawn once.",
)
@click.option(
    "--queries",
    type=click.IntRange(1),
    default=DEFAULT_QUERIES,
    show_default=True,
    help="Image and caption queries per size, split over the draws.",
)
@click.option(
    "--run",
    "runs",
    multiple=True,
    help="DATASET:PROTOCOL to measure (repeatable; protocols text, image, caption). "
    "Default: photos:caption, caltech101:text, caltech101:image, fashion:text, "
    "fashion:image, fashion:caption.",
)
@click.option("--model", default=None, help=f"Model to evaluate (default: {DEFAULT_MODEL}).")
@click.option(
    "--index-root",
    default=None,
    type=click.Path(file_okay=False),
    help="Where the folders' indexes live: ROOT/eval/<folder>-<hash>/<model> "
    "(default: the cache folder, shared with `spyglass eval report`).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every draw.")
@click.option(
    "--bootstrap",
    type=click.IntRange(100, 100_000),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the confidence intervals.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@device_option
def rerank_command(
    data: str,
    sizes: str,
    draws: int,
    queries: int,
    runs: tuple[str, ...],
    model: str | None,
    index_root: str | None,
    seed: int,
    bootstrap: int,
    as_json: bool,
    markdown: bool,
    quiet: bool,
    device: str | None,
) -> None:
    """Does re-ranking help, by collection size? Each re-ranking against none on seeded
    random collections of each size cut from the shared data: mAP, and the paired
    difference to no re-ranking with its 95% interval."""
    from spyglass.eval.sizes import (
        RERANK_PLAN,
        parse_run,
        parse_sizes,
        print_table,
        run_rerank_sizes,
        settings_json,
    )
    from spyglass.eval.sizes import (
        markdown_table as sizes_markdown,
    )

    no_bars = _quiet(quiet or as_json)
    wanted_sizes = parse_sizes(sizes)
    plan = [parse_run(r) for r in runs] or list(RERANK_PLAN)
    settings = RunSettings(seed=seed, resamples=bootstrap)

    def announce(line: str) -> None:
        if not (quiet or as_json):
            click.echo(line, err=True)

    @contextmanager
    def progress_for(what: str) -> Iterator[ProgressFunction]:
        with query_progress(no_bars, what) as update:
            yield update

    rows, absent = run_rerank_sizes(
        Path(data),
        shared_data_opener(model, device, no_bars, index_root),
        sizes=wanted_sizes,
        runs=plan,
        draws=draws,
        queries=queries,
        settings=settings,
        announce=announce,
        progress_for=progress_for,
    )
    if as_json:
        report = {
            "settings": settings_json(wanted_sizes, draws, queries, settings),
            "model": model or DEFAULT_MODEL,
            "rows": [row.to_json() for row in rows],
            "absent": absent,
        }
        click.echo(json.dumps(report, indent=2))
        return
    if absent:
        click.echo(f"not found under {data}, so not measured: {', '.join(absent)}", err=True)
    if markdown:
        click.echo(sizes_markdown(rows))
        return
    from rich.console import Console

    print_table(rows, Console(file=sys.stdout, width=200), "re-ranking by collection size")
