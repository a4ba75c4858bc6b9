"""`spyglass duplicates`, `spyglass verify`, `spyglass audit verify` and `spyglass
saved ...`, and what `spyglass search --collapse-duplicates/--export/--audit` adds:
case work (see docs/casework.md). The logic lives in :mod:`spyglass.casework`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import click

from spyglass.casework.audit import AuditLog, client_of_cli, verify_log
from spyglass.casework.casefile import read_case_file, safe_cell, write_atomically
from spyglass.casework.duplicates import (
    CANDIDATE_FLOOR,
    DEFAULT_PHASH_DISTANCE,
    DEFAULT_THRESHOLD,
    CollapsedResult,
    DuplicateGroup,
    DuplicateRule,
)
from spyglass.casework.saved import SavedSearches
from spyglass.cli.options import (
    device_option,
    filter_options,
    index_option,
    memory_budget_option,
    runtime_settings,
    sort_option,
    vector_search_settings,
)
from spyglass.cli.searching import build_terms, marked_image_id, parse_region, print_results
from spyglass.engine import Spyglass
from spyglass.query.filters import Filters
from spyglass.query.terms import Query


def record_search(
    engine: Spyglass,
    query: Query,
    collapse: bool,
    export_to: str | None,
    audit_to: str | None,
) -> list[CollapsedResult]:
    """Run ``query`` (collapsed or not), write its case file and audit entries as
    asked; results come back as groups (of one when not collapsed)."""
    rule = DuplicateRule() if collapse else None
    if rule is not None:
        groups = engine.search_collapsed(query, rule)
    else:
        groups = [CollapsedResult(r) for r in engine.search(query)]
    spec = engine.record(query, rule)
    log = AuditLog(audit_to) if audit_to else None
    ids = [g.image_id for g in groups]
    if log is not None:
        log.record("search", client=client_of_cli(), query=spec.to_json(copies=False), results=ids)
    if export_to is not None:
        case = engine.case_file(spec, groups if rule is not None else [g.result for g in groups])
        digest = write_case(case.render(Path(export_to).suffix.lower().lstrip(".")), export_to)
        click.echo(f"case file: {export_to} (sha256 {digest})", err=True)
        if log is not None:
            log.record(
                "export",
                client=client_of_cli(),
                query=spec.to_json(copies=False),
                results=ids,
                details={"file": str(Path(export_to).absolute()), "sha256": digest},
            )
    return groups


def write_case(content: str, path: str) -> str:
    """Write a rendered case file atomically; the SHA-256 of its bytes."""
    import hashlib

    data = content.encode("utf-8")
    write_atomically(Path(path).expanduser(), data)
    return hashlib.sha256(data).hexdigest()


# -- spyglass duplicates -----------------------------------------------------------------


@click.command("duplicates")
@index_option
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Cosine (image space) from which two images are near-duplicates on that alone.",
)
@click.option(
    "--phash-distance",
    type=click.IntRange(0, 32),
    default=DEFAULT_PHASH_DISTANCE,
    show_default=True,
    help="Also join neighbours (cosine from the candidate floor) whose perceptual hashes "
    "differ in at most this many of 64 bits.",
)
@click.option("--no-phash", is_flag=True, help="Compare embeddings alone (no file is read).")
@click.option(
    "--candidate-floor",
    type=click.FloatRange(0.0, 1.0),
    default=CANDIDATE_FLOOR,
    show_default=True,
    help="Cosine a neighbour needs before its perceptual hash is compared.",
)
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False), help="Write groups as CSV.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), help="Write groups as JSON.")
@device_option
@memory_budget_option
def duplicates_command(
    index_dir: str,
    threshold: float,
    phash_distance: int | None,
    no_phash: bool,
    candidate_floor: float,
    csv_file: str | None,
    json_file: str | None,
    device: str | None,
    memory_budget: int | None,
) -> None:
    """Groups of near-duplicate images: re-encodes, resizes, crops, colour shifts.

    Prints the groups largest first, each member as #id and path. Exact copies (same
    bytes) are one image with several paths already.
    """
    if csv_file and json_file:
        raise click.UsageError("give one of --csv and --json", click.get_current_context())
    rule = DuplicateRule(threshold, None if no_phash else phash_distance, candidate_floor)

    def tell(step: str, done: int, total: int) -> None:
        if done == total or done % 10_000 < 2048:
            click.echo(f"{step} {done:,}/{total:,}", err=True)

    runtime = runtime_settings(device, quiet=True)
    with Spyglass.open(
        index_dir, runtime=runtime, vector_search=vector_search_settings(memory_budget, runtime)
    ) as engine:
        groups = engine.duplicates(rule, progress=tell)
        records = engine.index.catalogue.images([i for g in groups for i in g.members])
    paths = {i: r.paths for i, r in records.items()}
    if csv_file:
        write_atomically(Path(csv_file).expanduser(), groups_csv(groups, paths).encode("utf-8"))
    if json_file:
        document = groups_json(groups, paths, rule)
        write_atomically(
            Path(json_file).expanduser(), (json.dumps(document, indent=2) + "\n").encode()
        )
    members = sum(g.size for g in groups)
    click.echo(
        f"{len(groups):,} groups of near-duplicates, {members:,} images ({rule.describe()})",
        err=True,
    )
    for number, group in enumerate(groups, start=1):
        click.echo(f"group {number}: {group.size} images, weakest link {group.weakest:.4f}")
        for image_id in group.members:
            shown = paths.get(image_id, ("(removed)",))
            extra = f"  (+{len(shown) - 1} copies)" if len(shown) > 1 else ""
            click.echo(f"  #{image_id}  {shown[0]}{extra}")


def groups_csv(groups: list[DuplicateGroup], paths: dict[int, tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(("group", "size", "weakest", "id", "path", "copies"))
    for number, group in enumerate(groups, start=1):
        for image_id in group.members:
            shown = paths.get(image_id, ("",))
            writer.writerow(
                (
                    number,
                    group.size,
                    f"{group.weakest:.6f}",
                    image_id,
                    safe_cell(shown[0]),
                    len(shown),
                )
            )
    return buffer.getvalue()


def groups_json(
    groups: list[DuplicateGroup], paths: dict[int, tuple[str, ...]], rule: DuplicateRule
) -> dict[str, Any]:
    return {
        "rule": rule.describe(),
        "threshold": rule.threshold,
        "phash_distance": rule.phash_distance,
        "candidate_floor": rule.candidate_floor,
        "groups": [
            {
                "group": number,
                "size": group.size,
                "weakest": group.weakest,
                "members": [
                    {"id": i, "path": paths.get(i, ("",))[0], "paths": list(paths.get(i, ()))}
                    for i in group.members
                ],
            }
            for number, group in enumerate(groups, start=1)
        ],
    }


# -- spyglass verify ---------------------------------------------------------------------


@click.command("verify")
@click.argument("case_file", type=click.Path(dir_okay=False))
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@device_option
def verify_command(case_file: str, index_dir: str, as_json: bool, device: str | None) -> None:
    """Run an exported case file's search again and check its results and files.

    Exit status: 0 verified (same results, no file changed); 6 the case file was
    edited or the search gives other results; 7 the same results, but a result's file
    changed or is gone since the export (by SHA-256 and MD5).
    """
    case = read_case_file(case_file)
    with Spyglass.open(index_dir, runtime=runtime_settings(device, quiet=True)) as engine:
        verification = engine.verify(case)
    if as_json:
        click.echo(json.dumps(verification.to_json(), indent=2))
    else:
        for line in verification.lines():
            click.echo(line)
    click.get_current_context().exit(verification.exit_status)


# -- spyglass audit ----------------------------------------------------------------------


@click.group("audit")
def audit_group() -> None:
    """Audit logs written by `spyglass search --audit` and `spyglass serve --audit`."""


@audit_group.command("verify")
@click.argument("log_file", type=click.Path(dir_okay=False))
def audit_verify_command(log_file: str) -> None:
    """Check that no entry of an audit log was edited, removed or moved.

    Exit status: 0 the chain holds; 6 it breaks (the first bad entry is named);
    7 it holds but the last line is incomplete (a write cut short by a crash).
    """
    check = verify_log(log_file)
    for line in check.lines():
        click.echo(line)
    click.get_current_context().exit(check.exit_status)


# -- spyglass saved ----------------------------------------------------------------------


@click.group("saved")
def saved_group() -> None:
    """Saved searches, kept in the index folder: save, list, run (--new: only what was
    indexed since the last run), delete."""


@saved_group.command("save")
@click.argument("name")
@click.argument("text", nargs=-1)
@index_option
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False))
@click.option("--not", "negatives", multiple=True, help="Push results away from this text.")
@click.option("--image-weight", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True)
@click.option("--not-weight", type=click.FloatRange(0.0, 10.0), default=0.5, show_default=True)
@click.option("--region", default=None, help="left,top,right,bottom of the query image.")
@click.option("--method", default="default", show_default=True)
@click.option("--rerank", default="default", show_default=True)
@click.option("--good", multiple=True, help="An indexed image (id or path) marked good.")
@click.option("--bad", multiple=True, help="An indexed image (id or path) marked bad.")
@click.option("-k", "--top", "k", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option("--min-score", type=float, default=None)
@click.option("--collapse-duplicates", is_flag=True, help="Collapse near-duplicates.")
@click.option("--replace", "replace_existing", is_flag=True, help="Overwrite a search of NAME.")
@filter_options
@sort_option
@device_option
def saved_save_command(
    name: str,
    text: tuple[str, ...],
    index_dir: str,
    images: tuple[str, ...],
    negatives: tuple[str, ...],
    image_weight: float,
    not_weight: float,
    region: str | None,
    method: str,
    rerank: str,
    good: tuple[str, ...],
    bad: tuple[str, ...],
    k: int,
    min_score: float | None,
    collapse_duplicates: bool,
    replace_existing: bool,
    device: str | None,
    filters: Filters,
    sort: str | None = None,
) -> None:
    """Save a search as NAME (the options are those of `spyglass search`)."""
    terms = build_terms(
        " ".join(text), images, negatives, image_weight, not_weight, parse_region(region)
    )
    with Spyglass.open(index_dir, runtime=runtime_settings(device, quiet=True)) as engine:
        query = Query(
            tuple(terms),
            k=k,
            min_score=min_score,
            method=method,
            positives=tuple(marked_image_id(engine, m) for m in good),
            negatives=tuple(marked_image_id(engine, m) for m in bad),
            rerank=rerank,
            filters=filters,
            sort=sort,
        )
        spec = engine.record(query, DuplicateRule() if collapse_duplicates else None)
        SavedSearches(engine.index.folder).save(name, spec, replace_existing=replace_existing)
    click.echo(f"saved {name!r}: {spec.describe()}")


@saved_group.command("list")
@index_option
@click.option("--json", "as_json", is_flag=True)
def saved_list_command(index_dir: str, as_json: bool) -> None:
    """The saved searches of the index, with when each last ran."""
    searches = SavedSearches(_index_folder(index_dir)).all()
    if as_json:
        documents = [
            {
                "name": s.name,
                "query": s.search.describe(),
                "saved_at": s.saved_at,
                "last_run_at": s.last_run_at,
            }
            for s in searches
        ]
        click.echo(json.dumps(documents, indent=2))
        return
    if not searches:
        click.echo("no saved searches (save one with: spyglass saved save NAME TEXT)", err=True)
    for saved in searches:
        ran = f"last run {saved.last_run_at}" if saved.last_run_at else "never run"
        click.echo(f"{saved.name}: {saved.search.describe()}  ({ran})")


@saved_group.command("run")
@click.argument("name")
@index_option
@click.option("--new", "new_only", is_flag=True, help="Only images indexed since the last run.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--paths", "paths_only", is_flag=True)
@click.option(
    "--audit",
    "audit_to",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append this run to an audit log (as `spyglass search --audit`).",
)
@device_option
def saved_run_command(
    name: str,
    index_dir: str,
    new_only: bool,
    as_json: bool,
    paths_only: bool,
    audit_to: str | None,
    device: str | None,
) -> None:
    """Run the saved search NAME."""
    if as_json and paths_only:
        raise click.UsageError("--json and --paths cannot be combined: choose one")
    with Spyglass.open(index_dir, runtime=runtime_settings(device, quiet=True)) as engine:
        saved, items = SavedSearches(engine.index.folder).run(
            name, engine.index, engine.run_recorded, new_only=new_only
        )
    if new_only and saved.last_run_at is not None:
        click.echo(f"new since {saved.last_run_at}: {len(items)}", err=True)
    results = [i.result if isinstance(i, CollapsedResult) else i for i in items]
    if audit_to is not None:
        AuditLog(audit_to).record(
            "saved-search",
            client=client_of_cli(),
            query={"name": name, "new_only": new_only, **saved.search.to_json(copies=False)},
            results=[r.image_id for r in results],
        )
    sizes = None
    if saved.search.collapse is not None:
        sizes = [i.group_size if isinstance(i, CollapsedResult) else 1 for i in items]
    browsing = not saved.search.terms and not saved.search.positives
    print_results(
        results, as_json=as_json, paths_only=paths_only, group_sizes=sizes, dated=browsing
    )


@saved_group.command("delete")
@click.argument("name")
@index_option
def saved_delete_command(name: str, index_dir: str) -> None:
    """Forget the saved search NAME."""
    SavedSearches(_index_folder(index_dir)).delete(name)
    click.echo(f"deleted {name!r}")


def _index_folder(index_dir: str) -> Path:
    """The index folder, refused as the engine would refuse it when it is no index."""
    from spyglass.store.index import Index

    with Index.open(index_dir) as index:
        return index.folder
