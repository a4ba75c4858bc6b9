"""Which ways of answering a query a protocol compares: the engine's registered methods
for the protocol's task, each optionally followed by a re-ranking.

Nothing here knows method names beyond the registry: a method registered for a task
(see :mod:`spyglass.query.methods`) shows up in every protocol of that task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spyglass.errors import InvalidQuery
from spyglass.query.methods import TASKS, method_names, resolve_method
from spyglass.query.rerank import get_reranker, reranker_names


@dataclass(frozen=True)
class Variant:
    """One row of a results table: a registered method, maybe with a re-ranking."""

    method: str
    rerank: str = "none"

    @property
    def name(self) -> str:
        return self.method if self.rerank == "none" else f"{self.method}+{self.rerank}"


def registered_rerankers() -> list[str]:
    """Re-rankings registered with the engine, ``none`` left out."""
    method_names()  # loads the modules that may register re-rankers too
    return [name for name in reranker_names() if name != "none"]


def select_variants(
    task: str | Sequence[str], methods: Sequence[str] = (), reranks: Sequence[str] = ()
) -> list[Variant]:
    """The variants for ``task`` (or for every one of several tasks): the named
    ``methods`` (every method registered for the task when none are named), each plain
    and followed by each of ``reranks``."""
    tasks = [task] if isinstance(task, str) else list(task)
    if not tasks or set(tasks) - set(TASKS):
        raise ValueError(f"unknown tasks {tasks!r}")
    task = " and ".join(tasks)
    for_task = {
        name: about
        for name, about in method_names(tasks[0]).items()
        if all(name in method_names(t) for t in tasks[1:])
    }
    chosen: list[str] = []
    for name in methods or list(for_task):
        resolved = resolve_method(name, tasks[0])
        if resolved not in for_task:
            if resolved in method_names():
                raise InvalidQuery(
                    f"method '{name}' does not answer {task} queries; "
                    f"for {task} choose one of: {', '.join(for_task)}"
                )
            raise InvalidQuery(
                f"unknown method '{name}': choose one of {', '.join(method_names())}"
            )
        if resolved not in chosen:
            chosen.append(resolved)
    for rerank in reranks:
        get_reranker(rerank)  # raises InvalidQuery with the known names
    plain = [Variant(m) for m in chosen]
    return plain + [Variant(m, r) for m in chosen for r in reranks if r != "none"]
