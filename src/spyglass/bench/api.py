"""`spyglass bench api`: search latency at the HTTP API against the engine call alone.

Indexes about 11,000 real images (PACS and Caltech-101 from ``--data``; an ``--index``
folder is reused, so the index is built once), then times warm text queries with
k = 100 three ways, one request at a time, interleaved query by query so that all three
see the same load on a shared machine:

* ``engine``: ``Spyglass.search`` called directly (the baseline: no HTTP at all);
* ``asgi``: the real app, in process, through httpx's ASGI transport (routing,
  validation, the guard middleware, the thread pool, JSON);
* ``http``: the real app served by uvicorn on a loopback port, through a keep-alive
  HTTP client (adds sockets and HTTP parsing).

Also measured: thumbnails made cold and served from the disk cache, and (unless
``--no-map``) what the collection map costs over the whole index (or a seeded sample of
``--map-points`` images): the layout alone (PCA + t-SNE) on 1 thread and on all cores,
and the server's whole map (layout, groups and their names from the vocabulary) as
``GET /api/map`` computes it. ``--map-only`` skips the latency runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from spyglass.cli.options import runtime_settings
from spyglass.engine import Spyglass
from spyglass.query.terms import Query, TextTerm

#: Folders of ``--data`` indexed for the benchmark (about 11,000 images).
DATASETS = ("pacs", "caltech101")
#: Text queries: names from the two label sets, in everyday words.
QUERIES = [
    "a dog",
    "an elephant",
    "a giraffe",
    "a guitar",
    "a horse",
    "a house",
    "a person",
    "a sketch of a dog",
    "a cartoon horse",
    "a photo of a giraffe in the wild",
    "an airplane",
    "a motorbike",
    "a wrist watch",
    "a leopard",
    "a bonsai tree",
    "a car seen from the side",
    "a sailing boat",
    "a chandelier",
    "a sea turtle",
    "a grand piano",
    "a butterfly",
    "a starfish",
    "a kangaroo",
    "a helicopter",
    "a sunflower",
    "a revolver",
    "a laptop computer",
    "an umbrella",
    "a flamingo",
    "a dolphin",
    "a stop sign",
    "a soccer ball",
    "a wheelchair",
    "a lamp",
    "a mobile phone",
    "a cup of coffee",
    "an accordion",
    "a hedgehog",
    "a pizza",
    "a camera",
    "a pair of scissors",
    "a saxophone",
    "a panda",
    "a strawberry",
    "an octopus",
    "binoculars",
    "a metronome",
    "a lobster",
    "headphones",
    "an anchor",
]
K = 100


def percentiles(samples: list[float]) -> dict[str, float]:
    """Milliseconds: p50, p95, p99 and the mean of per-request times in seconds."""
    ms = np.array(samples) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "requests": len(samples),
    }


def timed(call: Callable[[str], Any], queries: list[str]) -> list[float]:
    samples = []
    for text in queries:
        started = time.perf_counter()
        call(text)
        samples.append(time.perf_counter() - started)
    return samples


def build_index(data: Path, index: Path, runtime: Any) -> dict[str, Any]:
    """Index the benchmark folders into ``index`` (incremental: a second run only
    checks that nothing changed)."""
    folders = [data / name / "images" for name in DATASETS]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise click.UsageError(f"missing image folders: {', '.join(missing)}")
    started = time.perf_counter()
    with Spyglass.open(index, runtime=runtime, writable=True) as engine:
        report = engine.add([str(f) for f in folders])
    return {
        "index_seconds": time.perf_counter() - started,
        "embedded_this_run": report.embedded,
    }


def serve_in_thread(app: Any) -> tuple[Any, str]:
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise click.ClickException("uvicorn did not start")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


class AsgiClient:
    """The app in process through httpx's ASGI transport, driven from synchronous code
    (one event loop kept for the whole run)."""

    def __init__(self, app: Any) -> None:
        import httpx

        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        )

    def search(self, text: str) -> None:
        response = self.loop.run_until_complete(
            self.client.post("/api/search", json={"text": text, "limit": K})
        )
        check(response)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def check(response: Any) -> None:
    if response.status_code != 200 or len(response.json()["results"]) != K:
        raise click.ClickException(f"bad answer: {response.text[:200]}")


def interleaved(
    ways: dict[str, Callable[[str], Any]], queries: list[str]
) -> dict[str, list[float]]:
    """Time every way on every query, rotating which goes first, so that all ways see
    the same machine load (this machine is shared)."""
    names = list(ways)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for n, text in enumerate(queries):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            started = time.perf_counter()
            ways[name](text)
            samples[name].append(time.perf_counter() - started)
    return samples


def bench_thumbnails(url: str, ids: list[int]) -> dict[str, float]:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:
        cold = timed(lambda i: client.get(f"/api/images/{i}/thumbnail"), [str(i) for i in ids])
        warm = timed(lambda i: client.get(f"/api/images/{i}/thumbnail"), [str(i) for i in ids])
    return {
        "thumbnail_cold_p50_ms": statistics.median(cold) * 1000,
        "thumbnail_cached_p50_ms": statistics.median(warm) * 1000,
    }


def map_ids(engine: Spyglass, points: int | None) -> np.ndarray:
    """The images the map covers: all, or a seeded sample of ``points`` (as the server)."""
    ids = np.sort(engine.index.stores[engine.index.info.image_space].visible_owners())
    if points is not None and len(ids) > points:
        ids = np.sort(np.random.default_rng(0).choice(ids, points, replace=False))
    return ids


def bench_map(engine: Spyglass, threads: int, points: int | None = None) -> dict[str, float]:
    """Seconds for the layout alone (PCA + t-SNE) on ``threads`` threads."""
    from spyglass.server.atlas import layout_vectors

    ids = map_ids(engine, points)
    vectors = engine.index.stores[engine.index.info.image_space].fetch(ids)
    started = time.perf_counter()
    layout_vectors(vectors, threads=threads)
    return {"map_images": len(ids), f"map_seconds_{threads}_thread": time.perf_counter() - started}


def bench_server_map(engine: Spyglass, points: int | None = None) -> dict[str, float]:
    """The server's map from nothing, as ``GET /api/map`` computes it with the server's
    settings (one thread): vocabulary, layout, groups and their names. No cache."""
    from spyglass.server.atlas import CollectionMap
    from spyglass.server.vocabulary import Vocabulary

    total = len(map_ids(engine, None))
    vocabulary = Vocabulary(engine.encoder, None)
    started = time.perf_counter()
    vocabulary.vectors()
    words = time.perf_counter() - started
    atlas = CollectionMap(
        engine.index, None, max_points=points or total, vocabulary=vocabulary, threads=1
    )
    started = time.perf_counter()
    state = atlas.wait()
    if state.layout is None:
        raise click.ClickException(state.message)
    return {
        "server_map_images": len(state.layout.ids),
        "server_map_vocabulary_seconds": words,
        "server_map_seconds": time.perf_counter() - started,
        "server_map_layout_seconds": state.layout.seconds,
    }


@click.command("api")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The shared data folder (holding pacs/ and caltech101/).",
)
@click.option(
    "--index",
    "index_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Index folder to build or reuse (default: a temporary one).",
)
@click.option("--requests", default=300, show_default=True, help="Timed queries per way.")
@click.option("--map/--no-map", "with_map", default=True, help="Also time the map's t-SNE.")
@click.option("--map-only", is_flag=True, help="Time only the map (no latency runs).")
@click.option(
    "--map-points",
    type=click.IntRange(5, 1_000_000),
    default=None,
    help="Lay out a seeded sample of this many images (default: all).",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    help="Threads per request for the model and FAISS, in every way (as `spyglass serve`).",
)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write results as JSON.")
def command(
    data: str,
    index_dir: str | None,
    requests: int,
    with_map: bool,
    map_only: bool,
    map_points: int | None,
    threads: int,
    out: str | None,
) -> None:
    """Warm text-search latency (k=100) at the API against the engine call alone."""
    import faiss
    import httpx

    from spyglass.server import ServerSettings, create_app

    runtime = runtime_settings()
    scratch = None
    if index_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="spyglass-bench-api-")
        index_dir = scratch.name
    results: dict[str, Any] = build_index(Path(data), Path(index_dir), runtime)
    results["load_average_1m_at_start"] = os.getloadavg()[0]
    queries = [QUERIES[n % len(QUERIES)] for n in range(requests)]
    faiss.omp_set_num_threads(threads)  # this thread runs the engine baseline
    if map_only:
        with Spyglass.open(index_dir, runtime=replace(runtime, threads=threads)) as engine:
            results["images"] = engine.index.count()
            results.update(bench_server_map(engine, map_points))
            results.update(bench_map(engine, 1, map_points))
        results["load_average_1m_at_end"] = os.getloadavg()[0]
        results["cpu_count"] = os.cpu_count()
        for key, value in results.items():
            click.echo(f"{key:32} {value:.3f}" if isinstance(value, float) else f"{key:32} {value}")
        if out:
            Path(out).write_text(json.dumps(results, indent=2) + "\n")
        if scratch is not None:
            scratch.cleanup()
        return
    with Spyglass.open(index_dir, runtime=replace(runtime, threads=threads)) as engine:
        results["images"] = engine.index.count()
        results["threads_per_request"] = threads
        with tempfile.TemporaryDirectory() as thumbs:
            settings = ServerSettings.for_binding(
                "127.0.0.1",
                0,
                None,
                thumbnail_dir=Path(thumbs) / "thumbnails",
                search_threads=threads,
                # The map is timed on its own below: no layout beside the latency runs.
                prepare_at_start=False,
            )
            app = create_app(engine, settings)
            server, url = serve_in_thread(app)
            asgi = AsgiClient(app)
            http = httpx.Client(base_url=url, timeout=60)
            try:
                ways: dict[str, Callable[[str], Any]] = {
                    "engine": lambda text: engine.search(Query((TextTerm(text),), k=K)),
                    "asgi": asgi.search,
                    "http": lambda text: check(
                        http.post("/api/search", json={"text": text, "limit": K})
                    ),
                }
                interleaved(ways, QUERIES)  # warm: sessions, FAISS matrix, connections
                samples = interleaved(ways, queries)
                sample = engine.search(Query((TextTerm("a dog"),), k=K))
                results.update(bench_thumbnails(url, [r.image_id for r in sample]))
            finally:
                http.close()
                asgi.close()
                server.should_exit = True
        results["latency"] = latency = {name: percentiles(s) for name, s in samples.items()}
        for way in ("asgi", "http"):
            for stat in ("p50", "p95"):
                base = latency["engine"][f"{stat}_ms"]
                results[f"{way}_vs_engine_{stat}"] = latency[way][f"{stat}_ms"] / base
        if with_map:
            results.update(bench_server_map(engine, map_points))
            results.update(bench_map(engine, 1, map_points))
            results.update(bench_map(engine, os.cpu_count() or 1, map_points))
    results["k"] = K
    results["load_average_1m_at_end"] = os.getloadavg()[0]
    results["cpu_count"] = os.cpu_count()
    results["machine"] = platform.processor() or platform.machine()
    if scratch is not None:
        scratch.cleanup()

    for way, stats in results["latency"].items():
        click.echo(
            f"{way:8} p50 {stats['p50_ms']:7.2f} ms  p95 {stats['p95_ms']:7.2f} ms  "
            f"p99 {stats['p99_ms']:7.2f} ms  ({stats['requests']} requests)"
        )
    for key, value in results.items():
        if key != "latency":
            click.echo(f"{key:28} {value:.3f}" if isinstance(value, float) else f"{key:28} {value}")
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
