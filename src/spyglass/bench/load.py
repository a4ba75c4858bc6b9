"""`spyglass bench load`: the live server under concurrent clients, on loopback.

Starts ``spyglass serve`` on the index (or drives one already running, ``--url``), waits
until its start-up work (the collection map, the vocabulary) is done, then runs one
phase per ``--clients`` value: that many clients, each sending one request after
another for ``--seconds``, with a mix of what the search page does:

* ``text``: a text search (50 results);
* ``image``: more like an indexed image (the default re-ranking applies);
* ``image-text``: an indexed image plus words ("at night");
* ``marks``: a text search with two results marked good and one bad;
* ``upload``: a one-shot search by an uploaded image file (multipart);
* ``thumbnail``: a result's thumbnail (made once, then read from the disk cache).

It prints, per phase, throughput, errors (any status of 400 or more, a dropped
connection or a request over ``--timeout``) and p50/p99 per kind of request, and the
server's resident memory (``VmRSS`` of its process) before and after the run, sampled
every second in between. The load is bounded in time (``--seconds`` per phase) and
count (``--max-requests``); the clients run in this process, so on a small machine they
share its cores with the server (about 1 ms of client time per request).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from spyglass.bench.api import QUERIES
from spyglass.errors import CannotServe, MissingDependency

#: Kinds of request and their default shares of the load: a page shows a result list
#: and fetches its thumbnails, so thumbnails are the most frequent request.
DEFAULT_MIX = {
    "text": 25,
    "image": 10,
    "image-text": 8,
    "marks": 8,
    "upload": 5,
    "thumbnail": 44,
}
#: Words added to an image for ``image-text`` requests.
MODIFIERS = ["at night", "in black and white", "as a sketch", "a cartoon", "in red", "outdoors"]
#: Results asked for per search (what the page asks for).
LIMIT = 50
#: Connections an open-loop phase may hold at once (more requests wait for one, and
#: that wait counts in their latency).
OPEN_LOOP_CONNECTIONS = 256
#: Files kept in memory for ``upload`` requests.
UPLOAD_FILES = 20
#: Largest file used as an upload (bigger ones are left out of the pool).
UPLOAD_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    kind: str
    seconds: float
    ok: bool
    status: int | None
    error: str | None = None


@dataclass
class Workload:
    """What the clients send: gathered from the server itself before the run."""

    texts: list[str]
    image_ids: list[int]
    #: text -> ids of its results (marks are placed on them).
    results: dict[str, list[int]]
    uploads: list[tuple[str, bytes]]
    mix: dict[str, int]

    def kinds(self) -> tuple[list[str], list[int]]:
        usable = {k: w for k, w in self.mix.items() if w > 0}
        if not self.uploads:
            usable.pop("upload", None)
        if not self.image_ids:
            for kind in ("image", "image-text", "thumbnail"):
                usable.pop(kind, None)
        return list(usable), list(usable.values())


def parse_clients(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as error:
        raise click.BadParameter("give client counts separated by commas, e.g. 1,8,32") from error
    if not counts or any(not 1 <= c <= 256 for c in counts):
        raise click.BadParameter("each client count must be between 1 and 256")
    return counts


def parse_rates(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> list[float] | None:
    if value is None:
        return None
    try:
        rates = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        rates = []
    if not rates or any(not 0 < r <= 10_000 for r in rates):
        raise click.BadParameter("give requests per second between 0 and 10,000, e.g. 2,5,10")
    return rates


def parse_mix(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, int]:
    if value is None:
        return dict(DEFAULT_MIX)
    mix = dict.fromkeys(DEFAULT_MIX, 0)
    for part in value.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in DEFAULT_MIX or not weight.strip().isdigit():
            kinds = ", ".join(DEFAULT_MIX)
            raise click.BadParameter(f"give KIND=WEIGHT pairs, kinds: {kinds}; not '{part}'")
        mix[name] = int(weight)
    if not any(mix.values()):
        raise click.BadParameter("at least one kind needs a weight above 0")
    return mix


# -- the server ---------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    pid: int | None
    #: The server's stderr, when this command started it.
    log: Path | None = None


@contextmanager
def started_server(index: str, options: tuple[str, ...], timeout: float) -> Iterator[Server]:
    """``spyglass serve`` on a free loopback port, stopped (Ctrl-C, as a user would) at
    the end whatever happened."""
    log = Path(tempfile.mkstemp(prefix="spyglass-load-", suffix=".log")[1])
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "spyglass", "serve", "--index", index, "--port", "0", *options],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            # Its "open http://..." line must arrive before its buffer fills.
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        url = _announced_url(process, log, timeout)
        yield Server(url, process.pid, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _announced_url(process: subprocess.Popen[str], log: Path, timeout: float) -> str:
    """The address ``spyglass serve`` prints once it listens (``open http://...``)."""
    assert process.stdout is not None
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(r"open (http://\S+?)/?\s", line + " ")
            if match:
                found.append(match.group(1))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise CannotServe(f"spyglass serve did not start: {tail[0].removeprefix('error: ')}")
    # Keep draining stdout so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
    return found[0]


def rss_of(pid: int | None) -> float | None:
    """Resident memory of process ``pid`` in MiB (Linux ``/proc``); None elsewhere."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """VmRSS of the server every ``interval`` seconds, on a thread of this process."""

    def __init__(self, pid: int | None, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            rss = rss_of(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic() - self._started, rss))
            if self._stop.wait(self.interval):
                return

    def between(self, start: float, end: float) -> list[float]:
        return [mb for t, mb in self.samples if start <= t <= end]

    def now(self) -> float:
        return time.monotonic() - self._started


# -- the clients --------------------------------------------------------------------------


async def gather_workload(client: Any, mix: dict[str, int], seed: int) -> tuple[Workload, int]:
    """Texts, image ids, marks and upload files for the run, from the server's own
    answers (so that any index works); and how many images it serves."""
    status = await client.get("/api/status")
    status.raise_for_status()
    images = int(status.json()["images"])
    texts = list(QUERIES)
    results: dict[str, list[int]] = {}
    paths: dict[int, str] = {}
    for text in texts:
        response = await client.post("/api/search", json={"text": text, "limit": LIMIT})
        response.raise_for_status()
        found = response.json()["results"]
        results[text] = [int(r["id"]) for r in found]
        paths.update((int(r["id"]), r["path"]) for r in found)
    image_ids = sorted(paths)
    rng = random.Random(seed)
    uploads: list[tuple[str, bytes]] = []
    for image_id in rng.sample(image_ids, len(image_ids)):
        if len(uploads) >= UPLOAD_FILES:
            break
        path = Path(paths[image_id])
        try:
            if path.stat().st_size <= UPLOAD_MAX_BYTES:
                uploads.append((path.name, path.read_bytes()))
        except OSError:
            continue  # a file on another machine (--url), or gone: uploads use the rest
    return Workload(texts, image_ids, results, uploads, mix), images


async def one_request(client: Any, kind: str, work: Workload, rng: random.Random) -> Any:
    if kind == "text":
        return await client.post(
            "/api/search", json={"text": rng.choice(work.texts), "limit": LIMIT}
        )
    if kind == "image":
        return await client.post(
            "/api/search", json={"image_id": rng.choice(work.image_ids), "limit": LIMIT}
        )
    if kind == "image-text":
        body = {
            "image_id": rng.choice(work.image_ids),
            "text": rng.choice(MODIFIERS),
            "limit": LIMIT,
        }
        return await client.post("/api/search", json=body)
    if kind == "marks":
        text = rng.choice([t for t in work.texts if len(work.results[t]) >= 6])
        ids = work.results[text]
        body = {"text": text, "positives": [ids[1], ids[3]], "negatives": [ids[5]], "limit": LIMIT}
        return await client.post("/api/search", json=body)
    if kind == "upload":
        name, data = rng.choice(work.uploads)
        return await client.post(
            "/api/search/upload",
            files={"image": (name, data, "application/octet-stream")},
            data={"limit": str(LIMIT)},
        )
    if kind == "thumbnail":
        return await client.get(f"/api/images/{rng.choice(work.image_ids)}/thumbnail")
    raise ValueError(kind)


async def run_phase(
    url: str,
    work: Workload,
    clients: int,
    seconds: float,
    max_requests: int,
    timeout: float,
    seed: int,
    headers: dict[str, str],
) -> list[Sample]:
    """``clients`` concurrent clients, each sending its next request as soon as the last
    one is answered, until ``seconds`` have passed or ``max_requests`` were sent."""
    import httpx

    kinds, weights = work.kinds()
    samples: list[Sample] = []
    sent = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(
        base_url=url, timeout=timeout, limits=limits, headers=headers
    ) as client:

        async def one_client(number: int) -> None:
            nonlocal sent
            rng = random.Random(seed * 1000 + number)
            while time.monotonic() < deadline and sent < max_requests:
                sent += 1
                kind = rng.choices(kinds, weights)[0]
                samples.append(await timed_request(client, kind, work, rng, time.perf_counter()))

        await asyncio.gather(*(one_client(n) for n in range(clients)))
    return samples


async def timed_request(
    client: Any, kind: str, work: Workload, rng: random.Random, since: float
) -> Sample:
    """Send one request of ``kind``; its latency counts from ``since`` (perf_counter)."""
    import httpx

    try:
        response = await one_request(client, kind, work, rng)
        await response.aread()
        ok = response.status_code < 400
        error = None if ok else response.text[:200]
        return Sample(kind, time.perf_counter() - since, ok, response.status_code, error)
    except httpx.HTTPError as exc:
        return Sample(kind, time.perf_counter() - since, False, None, repr(exc)[:200])


def arrival_times(rate: float, seconds: float, most: int, seed: int) -> list[float]:
    """Seconds from the start at which an open-loop phase sends its requests: a Poisson
    process of ``rate`` per second (exponential gaps), seeded, at most ``most`` of them."""
    rng = random.Random(seed)
    times: list[float] = []
    at = rng.expovariate(rate)
    while at < seconds and len(times) < most:
        times.append(at)
        at += rng.expovariate(rate)
    return times


async def run_open_phase(
    url: str,
    work: Workload,
    rate: float,
    seconds: float,
    max_requests: int,
    timeout: float,
    seed: int,
    headers: dict[str, str],
) -> list[Sample]:
    """Open loop: requests arrive at ``rate`` per second whatever the server does, as
    users' requests do. A closed loop (``run_phase``) slows its clients down with the
    server, so a server that makes some requests wait measures as fewer requests, not
    as slower ones. Each latency counts from the request's scheduled arrival, so time
    spent waiting for a free connection counts too (no coordinated omission)."""
    import httpx

    kinds, weights = work.kinds()
    limits = httpx.Limits(max_connections=OPEN_LOOP_CONNECTIONS, max_keepalive_connections=32)
    rng = random.Random(seed)
    plan = [
        (at, rng.choices(kinds, weights)[0], random.Random(seed * 100_003 + n))
        for n, at in enumerate(arrival_times(rate, seconds, max_requests, seed))
    ]
    async with httpx.AsyncClient(
        base_url=url, timeout=timeout, limits=limits, headers=headers
    ) as client:
        began = time.perf_counter()

        async def arrive(at: float, kind: str, request_rng: random.Random) -> Sample:
            await asyncio.sleep(max(0.0, began + at - time.perf_counter()))
            return await timed_request(client, kind, work, request_rng, began + at)

        return list(await asyncio.gather(*(arrive(*planned) for planned in plan)))


def summarise(samples: list[Sample], wall: float) -> dict[str, Any]:
    """Throughput, errors and per-kind latency percentiles (ms) of one phase."""
    by_kind: dict[str, Any] = {}
    for kind in sorted({s.kind for s in samples}):
        mine = [s for s in samples if s.kind == kind]
        ms = np.array([s.seconds for s in mine]) * 1000.0
        by_kind[kind] = {
            "requests": len(mine),
            "errors": sum(not s.ok for s in mine),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(ms.max()), 1),
        }
    errors = [s for s in samples if not s.ok]
    return {
        "requests": len(samples),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(samples) / wall, 2) if wall > 0 else 0.0,
        "errors": len(errors),
        "error_examples": sorted({f"{s.kind}: {s.status} {s.error}" for s in errors})[:5],
        "kinds": by_kind,
    }


async def wait_until_prepared(client: Any, timeout: float) -> float:
    """Wait for the server's start-up work (the map) so it does not share the first
    phase; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        response = await client.get("/api/map")
        if response.status_code != 202:
            return time.monotonic() - started
        await asyncio.sleep(1.0)
    raise CannotServe(f"the server's map was still being computed after {timeout:.0f} s")


@dataclass
class LoadRun:
    url: str
    pid: int | None
    clients: list[int]
    seconds: float
    max_requests: int
    timeout: float
    seed: int
    headers: dict[str, str]
    mix: dict[str, int]
    wait_for_map: float
    #: Open-loop phases (requests per second) instead of the closed-loop ``clients``.
    rates: list[float] | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)

    async def run(self) -> dict[str, Any]:
        import httpx

        async with httpx.AsyncClient(
            base_url=self.url, timeout=self.timeout, headers=self.headers
        ) as client:
            waited = (
                await wait_until_prepared(client, self.wait_for_map) if self.wait_for_map else 0
            )
            work, images = await gather_workload(client, self.mix, self.seed)
        results: dict[str, Any] = {"images": images, "waited_for_start_up_s": round(waited, 1)}
        with RssSampler(self.pid) as rss:
            results["rss_mb_before"] = rss_of(self.pid)
            steps: list[tuple[str, float]] = (
                [("rate", r) for r in self.rates]
                if self.rates
                else [("clients", c) for c in self.clients]
            )
            for number, (way, level) in enumerate(steps):
                begin = rss.now()
                started = time.perf_counter()
                run = run_open_phase if way == "rate" else run_phase
                samples = await run(
                    self.url,
                    work,
                    level if way == "rate" else int(level),  # type: ignore[arg-type]
                    self.seconds,
                    self.max_requests,
                    self.timeout,
                    self.seed + number,
                    self.headers,
                )
                phase = {
                    way: level if way == "rate" else int(level),
                    **summarise(samples, time.perf_counter() - started),
                }
                during = rss.between(begin, rss.now())
                phase["rss_mb_start"] = round(during[0], 1) if during else None
                phase["rss_mb_end"] = round(rss_of(self.pid) or 0, 1) if self.pid else None
                phase["rss_mb_peak"] = round(max(during), 1) if during else None
                self.phases.append(phase)
            results["rss_mb_after"] = rss_of(self.pid)
            timeline = rss.samples
        results["phases"] = self.phases
        results["rss_timeline"] = [(round(t, 1), round(mb, 1)) for t, mb in timeline[::10]]
        before, after = results["rss_mb_before"], results["rss_mb_after"]
        results["rss_growth"] = round(after / before - 1.0, 3) if before and after else None
        return results


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 10's goals, as far as this run measured them."""
    phases = results["phases"]
    checked: dict[str, Any] = {"errors": sum(p["errors"] for p in phases)}
    at_8 = [p for p in phases if p.get("clients") == 8 and "text" in p["kinds"]]
    if at_8:
        checked["text_p99_ms_at_8_clients"] = at_8[0]["kinds"]["text"]["p99_ms"]
    checked["rss_growth"] = results.get("rss_growth")
    return checked


def print_results(results: dict[str, Any]) -> None:
    click.echo(
        f"server: {results['images']:,} images at {results['url']}, resident memory "
        f"{_mb(results['rss_mb_before'])} before the load, {_mb(results['rss_mb_after'])} after"
    )
    for phase in results["phases"]:
        load = (
            f"open loop at {phase['rate']:g} requests/s"
            if "rate" in phase
            else f"{phase['clients']} client(s)"
        )
        click.echo(
            f"\n{load}: {phase['requests']:,} requests in "
            f"{phase['seconds']:.0f} s, {phase['requests_per_s']:.1f}/s, "
            f"{phase['errors']} errors, server RSS {_mb(phase['rss_mb_start'])} -> "
            f"{_mb(phase['rss_mb_end'])} (peak {_mb(phase['rss_mb_peak'])})"
        )
        click.echo(
            f"  {'kind':<11}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        )
        for kind, row in phase["kinds"].items():
            click.echo(
                f"  {kind:<11}{row['requests']:>9,}{row['errors']:>8}{row['p50_ms']:>9.0f}"
                f"{row['p99_ms']:>9.0f}{row['max_ms']:>9.0f}"
            )
        for example in phase["error_examples"]:
            click.echo(f"  error: {example}")


def _mb(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.0f} MB"


@click.command("load")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="Index to serve.")
@click.option(
    "--url",
    default=None,
    help="Drive a server already running on this machine instead of starting one.",
)
@click.option(
    "--pid",
    type=int,
    default=None,
    help="With --url: the server's process id, for its resident memory.",
)
@click.option(
    "--clients",
    default="1,8,32",
    show_default=True,
    callback=parse_clients,
    help="Concurrent clients of each phase, in order.",
)
@click.option(
    "--rate",
    "rates",
    default=None,
    callback=parse_rates,
    help="Open loop instead of --clients: requests per second of each phase, in order "
    "(e.g. 2,5,10), arriving at random (Poisson) whatever the server does; latency "
    "counts from each request's arrival.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(1, 3600),
    default=60,
    show_default=True,
    help="Length of each phase.",
)
@click.option(
    "--max-requests",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Most requests sent in one phase.",
)
@click.option(
    "--mix",
    default=None,
    callback=parse_mix,
    help="KIND=WEIGHT,... over text, image, image-text, marks, upload, thumbnail "
    "(default: text=25,image=10,image-text=8,marks=8,upload=5,thumbnail=44).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 600),
    default=60,
    show_default=True,
    help="Seconds before a request counts as an error.",
)
@click.option(
    "--wait-for-map",
    type=click.FloatRange(0, 3600),
    default=900,
    show_default=True,
    help="Seconds to wait for the server's start-up work (the map) before the load; 0: "
    "do not wait.",
)
@click.option(
    "--serve-option",
    "serve_options",
    multiple=True,
    help="An option passed on to spyglass serve (repeat it), e.g. --serve-option=--threads=2.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def command(
    index_dir: str | None,
    url: str | None,
    pid: int | None,
    clients: list[int],
    rates: list[float] | None,
    seconds: float,
    max_requests: int,
    mix: dict[str, int],
    timeout: float,
    wait_for_map: float,
    serve_options: tuple[str, ...],
    seed: int,
    as_json: bool,
    out: str | None,
) -> None:
    """The live server under 1, 8, 32 concurrent clients: throughput, p50/p99 per kind
    of request, errors and the server's memory."""
    try:
        import httpx
    except ImportError as error:
        raise MissingDependency("bench load needs httpx: pip install 'spyglass[server]'") from error
    if (index_dir is None) == (url is None):
        raise click.UsageError("give --index (a server is started) or --url (one running)")
    token = os.environ.get("SPYGLASS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def measure(server: Server) -> dict[str, Any]:
        run = LoadRun(
            server.url,
            server.pid,
            clients,
            seconds,
            max_requests,
            timeout,
            seed,
            headers,
            mix,
            wait_for_map,
            rates,
        )
        try:
            return asyncio.run(run.run())
        except httpx.HTTPStatusError as error:
            response = error.response
            raise CannotServe(
                f"the server at {server.url} answered {response.status_code} to "
                f"{error.request.method} {error.request.url.path} before the load: "
                f"{response.text[:200]}"
            ) from error
        except httpx.HTTPError as error:
            raise CannotServe(f"the server at {server.url} did not answer: {error!r}") from error

    if url is not None:
        results = measure(Server(url.rstrip("/"), pid))
    else:
        assert index_dir is not None
        if not Path(index_dir).is_dir():
            raise click.UsageError(f"--index {index_dir} is not a folder")
        with started_server(index_dir, serve_options, timeout=300) as server:
            results = measure(server)
            url = server.url
    results = {
        "url": url,
        "index": index_dir,
        "clients": None if rates else clients,
        "rates": rates,
        "seconds_per_phase": seconds,
        "mix": mix,
        **results,
        "goals": {},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    results["goals"] = goals(results)
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        print_results(results)
