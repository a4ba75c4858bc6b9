"""How many searches compute at once, so that expensive ones cannot starve cheap ones.

Requests run on uvicorn's thread pool, dozens at a time. Left alone, 32 clients put 32
threads on the model, NumPy and FAISS of a 2-core machine: every request then shares
the cores with every other, and a text search that needs 15 ms of CPU waits seconds
behind re-rankings and feedback training (issue 10: text p50 1.3 s at 32 clients).

So a search first takes one of ``cores`` slots, in one of two lanes:

* ``light``: what costs a text embedding and one vector search (text, an indexed image
  without re-ranking, paging);
* ``heavy``: what embeds an image, trains on marks, re-ranks or clusters.

When a slot frees and both lanes wait, it goes to the light lane, except that a heavy
search gets it when none runs (so heavy searches are never starved, and on one core
the lanes take turns). Within a lane, slots go in arrival order. On two cores, then, a
text search waits at most for the light searches ahead of it and never behind a queue
of heavy ones; when only one kind arrives, it uses every core. Waiting costs no CPU.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from spyglass.query.rerank import resolve_reranker
from spyglass.query.terms import ImageTerm, Query


def is_heavy(query: Query, collection_size: int) -> bool:
    """Whether ``query`` goes in the heavy lane: it embeds image data (an upload or a
    region cut from a file), trains on marked images, or is re-ranked."""
    if query.positives or query.negatives:
        return True
    if any(isinstance(t, ImageTerm) and t.data is not None for t in query.terms):
        return True
    return resolve_reranker(query.rerank, query.task, collection_size) != "none"


@dataclass
class LaneCounts:
    """Slots of each lane in use and searches waiting for one (for tests and status)."""

    light_running: int = 0
    heavy_running: int = 0
    light_waiting: int = 0
    heavy_waiting: int = 0


class Admission:
    """``cores`` slots shared by the two lanes (see the module docstring); ``cores``
    defaults to the CPUs this process may use."""

    def __init__(self, cores: int | None = None) -> None:
        self.slots = max(1, cores or _usable_cores())
        self._changed = threading.Condition()
        self._tickets = itertools.count()
        self._queues: dict[bool, deque[int]] = {True: deque(), False: deque()}
        self._running = {True: 0, False: 0}
        self._granted: set[int] = set()
        self._last_grant_heavy = False
        self._arrivals = 0

    @contextmanager
    def slot(self, heavy: bool) -> Iterator[None]:
        """Hold a slot of the heavy or the light lane while the body runs."""
        with self._changed:
            ticket = next(self._tickets)
            self._arrivals += 1
            self._queues[heavy].append(ticket)
            self._dispatch()
            self._changed.wait_for(lambda: ticket in self._granted)
            self._granted.discard(ticket)
        try:
            yield
        finally:
            with self._changed:
                self._running[heavy] -= 1
                self._dispatch()

    def _dispatch(self) -> None:
        """Grant free slots to waiting searches by the rule above (lock held)."""
        granted = False
        while sum(self._running.values()) < self.slots and any(self._queues.values()):
            if self._queues[True] and self._queues[False]:
                heavy = self._running[True] == 0 and not self._last_grant_heavy
            else:
                heavy = bool(self._queues[True])
            self._granted.add(self._queues[heavy].popleft())
            self._running[heavy] += 1
            self._last_grant_heavy = heavy
            granted = True
        if granted:
            self._changed.notify_all()

    def counts(self) -> LaneCounts:
        with self._changed:
            return LaneCounts(
                light_running=self._running[False],
                heavy_running=self._running[True],
                light_waiting=len(self._queues[False]),
                heavy_waiting=len(self._queues[True]),
            )

    def arrivals(self) -> int:
        """Searches that asked for a slot so far."""
        with self._changed:
            return self._arrivals


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
