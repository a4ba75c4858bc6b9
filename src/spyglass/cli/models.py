"""`spyglass models` (list the models, methods and re-rankings) and
`spyglass models pull NAME` (download a recommended checkpoint into the local cache)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from spyglass.cli.options import runtime_settings
from spyglass.settings import format_bytes


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the lists as one JSON object.")
@click.pass_context
def models_group(ctx: click.Context, as_json: bool) -> None:
    """List the named models, the query methods and the re-rankings.

    `spyglass models pull NAME` downloads a model that the list marks as pullable.
    """
    if ctx.invoked_subcommand is None:
        list_models(as_json)


def list_models(as_json: bool) -> None:
    from spyglass.encoders import model_names
    from spyglass.encoders.hub import is_pulled, pullable_models, pulled_folder
    from spyglass.query.methods import DEFAULT_METHOD, DEFAULT_METHODS, TASKS, method_names
    from spyglass.query.rerank import (
        describe_default_reranker,
        reranker_names,
        resolve_reranker,
    )

    catalogue = model_names()
    cache_dir = runtime_settings(quiet=True).cache_dir
    plans = pullable_models(catalogue)
    models = {name: spec.get("about", "") for name, spec in catalogue.items()}
    methods = method_names()
    rerankers = reranker_names()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "models": models,
                    "pullable": {
                        name: {
                            "repo": plan.repo,
                            "revision": plan.revision,
                            "download": plan.download,
                            "pulled": is_pulled(plan, cache_dir),
                            "folder": str(pulled_folder(cache_dir, name)),
                        }
                        for name, plan in plans.items()
                    },
                    "methods": methods,
                    "default_method": DEFAULT_METHOD,
                    "default_methods": DEFAULT_METHODS,
                    "rerankers": rerankers,
                    "default_rerankers": {t: resolve_reranker("default", t) for t in TASKS},
                    "default_reranker_rules": {t: describe_default_reranker(t) for t in TASKS},
                },
                indent=2,
            )
        )
        return
    click.echo("models (--model; `spyglass models pull NAME` fetches those marked [pull]):")
    for name, about in models.items():
        mark = ""
        if name in plans:
            mark = "[pulled] " if is_pulled(plans[name], cache_dir) else "[pull] "
        click.echo(f"  {name:24} {mark}{about}")
    click.echo(
        "  or a local CLIP/SigLIP checkpoint directory, an ONNX export directory, or a hub id"
    )
    click.echo("methods (--method):")
    for name, about in methods.items():
        click.echo(f"  {name:24} {about}")
    click.echo("re-rankings (--rerank):")
    for name, about in rerankers.items():
        click.echo(f"  {name:24} {about}")
    click.echo("defaults, by kind of query (what --method/--rerank default means):")
    for task in TASKS:
        rerank = describe_default_reranker(task)
        click.echo(f"  {task:24} method {DEFAULT_METHODS[task]}, re-ranking {rerank}")


class ProgressBars:
    """One click progress bar per file on stderr, shown only when stderr is a terminal
    (piped, a failed pull is its one error line); the engine only reports (path, bytes
    so far, total)."""

    def __init__(self) -> None:
        self.label: str | None = None
        self.bar: Any = None
        self.shown = 0
        self.visible = sys.stderr.isatty()

    def __call__(self, path: str, done: int, total: int | None) -> None:
        if not self.visible:
            return
        if path != self.label:
            self.close()
            self.label = path
            self.bar = click.progressbar(
                length=total, label=path, file=sys.stderr, show_pos=total is None
            )
            self.bar.__enter__()
            self.shown = 0
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@models_group.command("pull")
@click.argument("name")
def pull_command(name: str) -> None:
    """Download the model NAME (see `spyglass models`) into the local cache and verify
    its files; then `--model NAME` works offline.

    Files come from SPYGLASS_HUB_URL (default https://huggingface.co; an http(s)
    mirror, or a file:// URL or folder holding ORG/REPO/FILE). An interrupted download
    resumes; files already there are checked, not fetched again.
    """
    from spyglass.encoders import model_names
    from spyglass.encoders.hub import PullPlan, pull
    from spyglass.errors import ModelNotFound

    catalogue = model_names()
    if name not in catalogue:
        known = ", ".join(sorted(n for n, s in catalogue.items() if "pull" in s))
        raise ModelNotFound(f"no model named '{name}' to pull: use one of {known}")
    plan = PullPlan.from_spec(name, catalogue[name])
    settings = runtime_settings(quiet=True)
    bars = ProgressBars()
    try:
        report = pull(plan, settings, progress=bars)
    finally:
        bars.close()
    checked = ", ".join(sorted({f.verified for f in report.files}))
    fetched = sum(f.downloaded for f in report.files)
    click.echo(
        f"pulled {name} into {report.folder}: {fetched} of {len(report.files)} files "
        f"downloaded ({format_bytes(report.downloaded_bytes)}), SHA-256 checked ({checked})",
        err=True,
    )
    if report.skipped:
        click.echo(f"note: optional files not fetched: {', '.join(report.skipped)}", err=True)
    click.echo(f"use it with: spyglass index FOLDER --model {name}", err=True)
