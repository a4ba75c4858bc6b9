"""The server's admission rule (a pure unit): light searches go first, heavy ones are
never starved, at most ``cores`` compute at once, arrival order within a lane."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.server.admission import Admission, LaneCounts, is_heavy


class Searches:
    """Threads that take a slot and hold it until released by name; records the order
    in which they started."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.started: list[str] = []
        self._release: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def arrive(self, name: str, heavy: bool) -> None:
        release = self._release[name] = threading.Event()

        def run() -> None:
            with self.admission.slot(heavy):
                with self._lock:
                    self.started.append(name)
                release.wait(10)

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()

    def finish(self, name: str) -> None:
        self._release[name].set()

    def finish_all(self) -> None:
        for event in self._release.values():
            event.set()
        for thread in self._threads:
            thread.join(10)


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the searches did not reach the expected state"
        time.sleep(0.005)


def waiting(admission: Admission, light: int, heavy: int) -> Callable[[], bool]:
    def check() -> bool:
        counts = admission.counts()
        return (counts.light_waiting, counts.heavy_waiting) == (light, heavy)

    return check


def test_a_freed_slot_goes_to_a_waiting_light_search_before_queued_heavy_ones() -> None:
    admission = Admission(cores=2)
    searches = Searches(admission)
    try:
        searches.arrive("heavy-1", heavy=True)
        searches.arrive("heavy-2", heavy=True)
        until(lambda: admission.counts().heavy_running == 2)  # heavy alone may use both
        for n in (3, 4, 5):
            searches.arrive(f"heavy-{n}", heavy=True)
        until(waiting(admission, 0, 3))
        searches.arrive("text", heavy=False)
        until(waiting(admission, 1, 3))
        searches.finish("heavy-1")
        until(lambda: len(searches.started) == 3)
        assert searches.started[2] == "text"
    finally:
        searches.finish_all()


def test_heavy_searches_are_not_starved_by_a_stream_of_light_ones() -> None:
    admission = Admission(cores=2)
    searches = Searches(admission)
    try:
        searches.arrive("light-1", heavy=False)
        searches.arrive("light-2", heavy=False)
        until(lambda: admission.counts().light_running == 2)
        searches.arrive("heavy", heavy=True)
        for n in (3, 4, 5):
            searches.arrive(f"light-{n}", heavy=False)
        until(waiting(admission, 3, 1))
        searches.finish("light-1")
        # Light searches still wait, but no heavy one runs: the heavy one gets the slot.
        until(lambda: len(searches.started) == 3)
        assert searches.started[2] == "heavy"
    finally:
        searches.finish_all()


def test_on_one_core_the_lanes_take_turns() -> None:
    admission = Admission(cores=1)
    searches = Searches(admission)
    try:
        searches.arrive("light-1", heavy=False)
        until(lambda: len(searches.started) == 1)
        for n in (1, 2):
            searches.arrive(f"heavy-{n}", heavy=True)
            until(lambda n=n: admission.counts().heavy_waiting == n)
        for n in (2, 3):
            searches.arrive(f"light-{n}", heavy=False)
            until(lambda n=n: admission.counts().light_waiting == n - 1)
        for step in range(4):
            searches.finish(searches.started[-1])
            until(lambda step=step: len(searches.started) == step + 2)
        assert searches.started == ["light-1", "heavy-1", "light-2", "heavy-2", "light-3"]
    finally:
        searches.finish_all()


def test_a_second_heavy_search_waits_while_light_ones_queue() -> None:
    admission = Admission(cores=3)
    searches = Searches(admission)
    try:
        searches.arrive("heavy-1", heavy=True)
        searches.arrive("light-1", heavy=False)
        searches.arrive("light-2", heavy=False)
        until(lambda: len(searches.started) == 3)
        searches.arrive("heavy-2", heavy=True)
        searches.arrive("light-3", heavy=False)
        until(waiting(admission, 1, 1))
        searches.finish("light-1")
        until(lambda: len(searches.started) == 4)
        assert searches.started[3] == "light-3"
    finally:
        searches.finish_all()


@settings(max_examples=25, deadline=None)
@given(
    cores=st.integers(1, 4),
    lanes=st.lists(st.booleans(), min_size=1, max_size=12),
)
def test_never_more_searches_than_cores_and_arrival_order_within_a_lane(
    cores: int, lanes: list[bool]
) -> None:
    admission = Admission(cores=cores)
    running = 0
    most = 0
    order: dict[bool, list[int]] = {True: [], False: []}
    lock = threading.Lock()
    gates = [threading.Event() for _ in lanes]

    def search(number: int, heavy: bool) -> None:
        nonlocal running, most
        gates[number].wait(10)
        with admission.slot(heavy):
            with lock:
                running += 1
                most = max(most, running)
                order[heavy].append(number)
            time.sleep(0.001)
            with lock:
                running -= 1

    threads = [
        threading.Thread(target=search, args=(n, heavy), daemon=True)
        for n, heavy in enumerate(lanes)
    ]
    for thread in threads:
        thread.start()
    for n, gate in enumerate(gates):
        gate.set()
        # Arrivals one after another, so that arrival order is defined.
        until(lambda n=n: admission.arrivals() == n + 1)
    for thread in threads:
        thread.join(10)
    assert most <= cores
    assert order[True] == sorted(order[True]) and order[False] == sorted(order[False])
    assert admission.counts() == LaneCounts()


@pytest.mark.parametrize(
    ("query", "size", "heavy"),
    [
        (Query(terms=(TextTerm("a dog"),)), 10_000, False),
        (Query(terms=(ImageTerm(image_id=3),), rerank="none"), 10_000, False),
        (Query(terms=(ImageTerm(image_id=3),)), 100, False),  # no default re-ranking yet
        (Query(terms=(ImageTerm(image_id=3),)), 10_000, True),  # k-reciprocal
        (Query(terms=(TextTerm("a dog"),), rerank="aqe"), 100, True),
        (Query(terms=(ImageTerm(data=b"jpeg"), TextTerm("red"))), 100, True),  # embeds
        (Query(terms=(TextTerm("a dog"),), positives=(1,)), 100, True),
    ],
)
def test_what_counts_as_heavy(query: Query, size: int, heavy: bool) -> None:
    assert is_heavy(query, size) is heavy


def test_the_server_admits_every_search_through_its_lanes(sample_client: TestClient) -> None:
    admission = sample_client.app.state.spyglass.admission  # type: ignore[attr-defined]
    before = admission.arrivals()
    assert sample_client.post("/api/search", json={"text": "a cat"}).status_code == 200
    body = {"text": "a cat", "positives": [1], "limit": 5}
    assert sample_client.post("/api/search", json=body).status_code == 200
    assert admission.arrivals() == before + 2
    assert admission.counts() == LaneCounts()
