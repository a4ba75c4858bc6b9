"""`spyglass bench NAME`: one sub-command per module of :mod:`spyglass.bench`."""

from __future__ import annotations

import importlib
import pkgutil

import click

import spyglass.bench


class BenchGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(
            m.name.replace("_", "-")
            for m in pkgutil.iter_modules(spyglass.bench.__path__)
            if not m.name.startswith("_")
        )

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        module = importlib.import_module(f"spyglass.bench.{name.replace('-', '_')}")
        command: click.Command = module.command
        return command


@click.group("bench", cls=BenchGroup)
def bench_group() -> None:
    """Measure speed and memory (results go to docs/)."""
