"""The command line: translates arguments into engine calls and engine errors into one
readable line and an exit status. No search logic lives here.

Every error is one line on stderr, ``error: ...``, never a usage block or a traceback
(``SPYGLASS_DEBUG=1`` lets an unexpected error's traceback through). Warnings and notes
go to stderr too, so that stdout holds only the results.

Exit status:

==== ==========================================================================
0    success
1    unexpected failure (a bug: please report it)
2    bad usage, query or input: an unknown option, a value out of range, a
     missing image or folder (usage errors end with "(see: spyglass CMD --help)")
3    index problem: no index, an empty index, another model's index, locked
4    model problem: unknown model, a missing extra, a model that fails to load
5    cannot serve: the port is in use, the address is not on this machine, or
     binding it is not permitted; cannot reach the Ray cluster of ``--ray``
6    `spyglass verify`: the case file was edited or its search gives other
     results; `spyglass audit verify`: the chain breaks (docs/casework.md)
7    `spyglass verify`: the same results, but a result's file changed or is
     gone; `spyglass audit verify`: the last line is torn (a crash mid-write)
130  interrupted (Ctrl+C); work committed so far is kept
==== ==========================================================================
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

import click

from spyglass.errors import SpyglassError


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line with where to read more, instead of click's
    usage block (the exit status stays click's 2)."""

    def __init__(self, original: click.UsageError) -> None:
        super().__init__(usage_line(original), original.ctx)

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", file=file, err=True)


def usage_line(error: click.UsageError) -> str:
    """``-k must be at least 1 (see: spyglass search --help)``"""
    text = " ".join(describe_usage_error(error).split()).rstrip(".")
    if error.ctx is not None:
        text += f" (see: {error.ctx.command_path} --help)"
    return text


def describe_usage_error(error: click.UsageError) -> str:
    if isinstance(error, click.NoSuchOption):
        guesses = sorted(error.possibilities or ())
        guess = f"; did you mean {' or '.join(guesses)}?" if guesses else ""
        return f"no such option {error.option_name}{guess}"
    if isinstance(error, click.MissingParameter):
        return lower_first(error.format_message())
    if isinstance(error, click.BadParameter) and error.param is not None:
        param = error.param
        name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
        rule = range_rule(param.type)
        if rule and "not in the range" in error.message:
            return f"{name} must be {rule}"
        if rule and "is not a valid" in error.message:
            number = "a whole number" if isinstance(param.type, click.IntRange) else "a number"
            return f"{name} must be {number} {rule}"
        return f"invalid value for {name}: {lower_first(error.message)}"
    return lower_first(error.format_message())


def range_rule(kind: click.ParamType) -> str | None:
    """``at least 1``, ``between 0.0 and 1.0``... for click's number ranges."""
    if not isinstance(kind, click.IntRange | click.FloatRange):
        return None
    low, high = kind.min, kind.max
    above = f"more than {low}" if kind.min_open else f"at least {low}"
    below = f"less than {high}" if kind.max_open else f"at most {high}"
    if low is not None and high is not None:
        if kind.min_open or kind.max_open:
            return f"{above} and {below}"
        return f"between {low} and {high}"
    if low is not None:
        return above
    return below if high is not None else None


def lower_first(text: str) -> str:
    """Click's capitalised messages, as a clause: "missing option", but "ONNX" and
    "--index" stay as they are."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


#: Sub-commands, loaded on first use so that ``spyglass --help`` stays fast.
COMMANDS = {
    "index": "spyglass.cli.indexing:index_command",
    "search": "spyglass.cli.searching:search_command",
    "info": "spyglass.cli.indexing:info_command",
    "models": "spyglass.cli.models:models_group",
    "export-onnx": "spyglass.cli.export:export_onnx_command",
    "demo": "spyglass.cli.demo:demo_command",
    "eval": "spyglass.cli.evaluate:eval_command",
    "serve": "spyglass.cli.serve:serve_command",
    "bench": "spyglass.cli.bench:bench_group",
    "train": "spyglass.cli.train:train_group",
    "duplicates": "spyglass.cli.casework:duplicates_command",
    "verify": "spyglass.cli.casework:verify_command",
    "audit": "spyglass.cli.casework:audit_group",
    "saved": "spyglass.cli.casework:saved_group",
    "explain": "spyglass.cli.explain:explain_command",
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

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `spyglass` alone: the help is what was asked for
        except click.UsageError as error:
            raise OneLineUsageError(error) from error

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as error:
            raise OneLineUsageError(error) from error
        except SpyglassError as error:
            # One line, whatever a library put into the message.
            click.echo(f"error: {first_line(error)}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; work committed so far is kept", err=True)
            ctx.exit(130)
        except MemoryError:
            click.echo("error: out of memory; try a smaller --batch-size", err=True)
            ctx.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # click's own ways out: it shows or handles them
        except Exception as error:
            if os.environ.get("SPYGLASS_DEBUG"):
                raise
            click.echo(
                f"error: unexpected {type(error).__name__}: {first_line(error)} (a bug: "
                "please report it; SPYGLASS_DEBUG=1 shows where it happened)",
                err=True,
            )
            ctx.exit(1)


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@click.group(cls=SpyglassGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spyglass")
def main() -> None:
    """Spyglass: find images by words, by example, and by both."""
    # Pillow warns about every odd file it reads (corrupt EXIF, tags past the end); the
    # index records each file it cannot use with its reason, so on a folder of damaged
    # files those warnings are only noise on stderr (146 lines seen on fuzzed files).
    warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")


def run() -> None:  # pragma: no cover - console entry point alias
    main(sys.argv[1:])
