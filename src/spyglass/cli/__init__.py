"""The command line: translates arguments into engine calls and engine errors into one
readable line and an exit status. No search logic lives here.

Exit status: 0 success, 1 unexpected failure, 2 bad query or input, 3 index problem,
4 model problem, 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from spyglass.errors import SpyglassError

#: Sub-commands, loaded on first use so that ``spyglass --help`` stays fast.
COMMANDS = {
    "index": "spyglass.cli.indexing:index_command",
    "search": "spyglass.cli.searching:search_command",
    "info": "spyglass.cli.indexing:info_command",
    "models": "spyglass.cli.searching:models_command",
    "export-onnx": "spyglass.cli.export:export_onnx_command",
    "demo": "spyglass.cli.demo:demo_command",
    "eval": "spyglass.cli.evaluate:eval_command",
    "serve": "spyglass.cli.serve:serve_command",
    "bench": "spyglass.cli.bench:bench_group",
    "train": "spyglass.cli.train:train_group",
}


class SpyglassGroup(click.Group):
    """Lazy sub-commands, and typed engine errors turned into one line on stderr."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self.get_command(ctx, name) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                return None  # a command whose module is not written yet
            raise
        command: click.Command = getattr(module, attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpyglassError as error:
            # One line, whatever a library put into the message.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            click.echo(f"error: {lines[0] if lines else type(error).__name__}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; work committed so far is kept", err=True)
            ctx.exit(130)
        except MemoryError:
            click.echo("error: out of memory; try a smaller --batch-size", err=True)
            ctx.exit(1)


@click.group(cls=SpyglassGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spyglass")
def main() -> None:
    """Spyglass: find images by words, by example, and by both."""


def run() -> None:  # pragma: no cover - console entry point alias
    main(sys.argv[1:])
