"""`spyglass bench methods`: what one query costs with each ranking method as the index
grows (10k, 100k, 1M images), and end to end with the bundled model at the largest size.

Each size is a real index folder (SQLite catalogue, float16 rows, and from 100,000 rows
the saved approximate index, as ``spyglass index`` leaves them) of synthetic images
with a vector in both of the bundled model's spaces (384-d joint, 1,280-d image). The
vectors are clustered like image embeddings (:class:`~spyglass.bench.search.VectorMixture`,
one mixture per space); an image's cluster is the same in both spaces, so that an image
found by its joint vector is also near its cluster in the image space. Folders are
built once under ``--folder`` and reused by later runs with the same size and seed.

Two measurements:

* **per method** (every size): ``Spyglass.search`` end to end (the marked images'
  vectors, the method, the default re-ranking, scores, the catalogue lookup of the hits)
  with the *text already embedded*: a stand-in encoder hands back precomputed query
  vectors, so the text model is not measured. The text vectors are held-out draws from
  the joint mixture; the image query is an indexed image; the marks are 5 images marked
  good and 5 bad among the text query's top 30 (what a person marks).
* **end to end** (``--end-to-end``, the largest size): the same queries through
  ``Spyglass.search`` with the bundled model itself encoding the text, as the CLI and the
  server do after they have started.

Ways are interleaved query by query with the order rotated, so that all see the same
load on a shared machine. Each way reports wall-clock p50 / p99 and the CPU time of the
process per query (less sensitive to other people's work on a shared machine). NumPy's
BLAS runs ``--blas-threads`` threads (default 1, what ``spyglass serve`` gives each
request).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from spyglass.bench.feedback import TEXTS
from spyglass.bench.search import VectorMixture
from spyglass.encoders.base import EncoderInfo
from spyglass.engine import Spyglass
from spyglass.query.methods import DEFAULT_METHODS
from spyglass.query.terms import ImageTerm, Query, Term, TextTerm
from spyglass.settings import VectorSearchSettings
from spyglass.store.catalogue import NewImage
from spyglass.store.index import Index
from spyglass.store.ivf import IvfVectorStore

#: Images committed per transaction while building (bounds the builder's memory).
CHUNK = 20_000
#: Marks per feedback query.
GOOD, BAD = 5, 5


def way_name(kind: str, method: str, rerank: str) -> str:
    """A way's row label, "(default)" where the registry's default for the kind of query
    is this method (:data:`~spyglass.query.methods.DEFAULT_METHODS`), so that the label
    follows the default when a measurement moves it."""
    task = "feedback" if kind == "marks" else kind
    name = f"{kind}: {method}"
    if DEFAULT_METHODS.get(task) == method and kind not in ("text", "image"):
        name += " (default)"
    if kind == "image":
        name += {"default": " + default re-ranking", "none": ", no re-ranking"}.get(
            rerank, f" + {rerank}"
        )
    return name


#: The ways measured per size: (kind of query, method, re-ranking); named by :func:`way_name`.
_MEASURED = (
    ("text", "sum", "default"),
    ("image", "sum", "default"),
    ("image", "sum", "none"),
    ("image+text", "sum", "default"),
    ("image+text", "late-fusion", "default"),
    ("image+text", "weimocir", "default"),
    ("marks", "svm-fusion", "default"),
    ("marks", "rocchio", "default"),
    ("marks", "svm", "default"),
    ("marks", "svm-text", "default"),
    ("marks", "seesaw", "default"),
)
#: The ways as (name, kind of query, method, re-ranking).
WAYS: tuple[tuple[str, str, str, str], ...] = tuple(
    (way_name(kind, method, rerank), kind, method, rerank) for kind, method, rerank in _MEASURED
)
#: The end-to-end ways (the bundled model embeds the text): every kind with ``default``.
END_TO_END = ("text", "image", "image+text", "marks")


# -- the synthetic collection -------------------------------------------------------------


def paired_mixtures(spaces: dict[str, int], clusters: int, seed: int) -> dict[str, VectorMixture]:
    """{space: mixture} with the same number of clusters and the same cluster weights in
    every space (``VectorMixture.around`` draws the weights first from its seed)."""
    return {
        space: VectorMixture.synthetic(dims, clusters=clusters, seed=seed + 7919 * n)
        for n, (space, dims) in enumerate(sorted(spaces.items()))
    }


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def sample_images(
    mixtures: dict[str, VectorMixture], count: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """{space: (count, dims) float32 unit rows}: ``count`` images, each drawn from one
    cluster, the same cluster index in every space."""
    first = next(iter(mixtures.values()))
    picked = rng.choice(len(first.centres), size=count, p=first.weights)
    rows = {}
    for space, mixture in mixtures.items():
        within = rng.standard_normal((count, len(mixture.within)), dtype=np.float32)
        isotropic = _unit(rng.standard_normal((count, mixture.dims), dtype=np.float32))
        rows[space] = _unit(
            mixture.centres[picked] + within @ mixture.within + mixture.noise * isotropic
        )
    return rows


def build_index(
    folder: Path,
    info: EncoderInfo,
    size: int,
    mixtures: dict[str, VectorMixture],
    seed: int,
    say: Callable[[str], None],
) -> float:
    """Write an index of ``size`` synthetic images to ``folder`` (empty or missing) and,
    where ``auto`` would search approximately, build and save its approximate indexes.
    Returns seconds."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    # Rows are written with exact stores (no index retrained at every doubling on the
    # way), then the approximate indexes are built once over all of them.
    with Index.open_for_writing(folder, info, VectorSearchSettings(kind="exact")) as index:
        for start in range(0, size, CHUNK):
            count = min(CHUNK, size - start)
            rows = sample_images(mixtures, count, rng)
            images = [NewImage(f"synthetic-{start + i}", 64, 64, "JPEG") for i in range(count)]
            files = [(f"/synthetic/{start + i:08d}.jpg", 1000, 0, i) for i in range(count)]
            index.commit(images, rows, files)
            if (start // CHUNK) % 10 == 9:
                say(f"  {start + count:,} of {size:,} images written")
    settings = VectorSearchSettings(build_in_background=False)
    if size >= settings.approximate_from_rows:
        say(f"  building the approximate indexes of {size:,} rows")
        with Index.open_for_writing(folder, info, settings) as index:
            for store in index.stores.values():
                if isinstance(store, IvfVectorStore):
                    store.update_index(retrain=True)
    return time.perf_counter() - started


def ensure_index(
    folder: Path,
    info: EncoderInfo,
    size: int,
    clusters: int,
    seed: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The index of ``size`` images in ``folder``, built unless a finished one with the
    same parameters is there (``bench-methods.json`` is written last)."""
    marker = folder / "bench-methods.json"
    wanted = {"size": size, "clusters": clusters, "seed": seed, "model": info.describe()}
    if marker.is_file():
        recorded = json.loads(marker.read_text())
        if {k: recorded.get(k) for k in wanted} == wanted:
            return dict(recorded)
    if folder.exists() and any(folder.iterdir()):
        raise click.UsageError(
            f"{folder} holds something other than a finished index of {size:,} images "
            "with these settings: remove it or choose another --folder"
        )
    say(f"building a synthetic index of {size:,} images in {folder}")
    mixtures = paired_mixtures(dict(info.spaces), clusters, seed)
    seconds = build_index(folder, info, size, mixtures, seed, say)
    recorded = {**wanted, "build_s": round(seconds, 1)}
    marker.write_text(json.dumps(recorded, indent=1) + "\n")
    return recorded


# -- queries ----------------------------------------------------------------------------


class PrecomputedTexts:
    """An encoder that embeds no pixels and looks texts up in a table: the engine runs
    every step of a search except the text model."""

    def __init__(self, info: EncoderInfo, vectors: dict[str, np.ndarray]) -> None:
        self.info = info
        self.vectors = vectors

    def preprocess(self, image: Any) -> np.ndarray:
        raise NotImplementedError("the benchmark queries indexed images only")

    def embed_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError("the benchmark queries indexed images only")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


@dataclass(frozen=True)
class Asked:
    """One query's ingredients: a text, an indexed image, and marks."""

    text: str
    image_id: int
    good: tuple[int, ...]
    bad: tuple[int, ...]

    def query(self, kind: str, method: str, rerank: str, k: int) -> Query:
        by_kind: dict[str, tuple[Term, ...]] = {
            "text": (TextTerm(self.text),),
            "image": (ImageTerm(image_id=self.image_id),),
            "image+text": (ImageTerm(image_id=self.image_id), TextTerm(self.text)),
            "marks": (TextTerm(self.text),),
        }
        terms = by_kind[kind]
        marks = kind == "marks"
        return Query(
            terms,
            k=k,
            method=method,
            rerank=rerank,
            positives=self.good if marks else (),
            negatives=self.bad if marks else (),
        )


def plan_queries(engine: Spyglass, texts: Sequence[str], seed: int) -> list[Asked]:
    """One :class:`Asked` per text: a random indexed image, and marks among the text's
    top 30 (searched here, before any timing)."""
    rng = np.random.default_rng(seed)
    count = engine.index.count()
    asked = []
    for text in texts:
        top = [r.image_id for r in engine.search(Query((TextTerm(text),), k=30, method="sum"))]
        marks = rng.choice(top, GOOD + BAD, replace=False).tolist()
        image_id = int(rng.integers(0, count))  # the bench numbers images 0 .. n - 1
        asked.append(Asked(text, image_id, tuple(marks[:GOOD]), tuple(marks[GOOD:])))
    return asked


def percentile(values: Sequence[float], share: float) -> float:
    return float(np.percentile(np.asarray(values), share * 100))


def time_ways(
    engine: Spyglass,
    asked: Sequence[Asked],
    ways: Sequence[tuple[str, str, str, str]],
    k: int,
    warmup: int,
) -> dict[str, dict[str, float]]:
    """{way: {p50_ms, p99_ms, mean_ms, cpu_p50_ms}} over ``asked`` (the first ``warmup``
    untimed), ways interleaved per query with the order rotated. ``cpu_p50_ms`` is the
    CPU time of this process (every thread) per query: on a shared machine the wall time
    also counts the time spent waiting for a core."""
    timings: dict[str, list[float]] = {name: [] for name, *_ in ways}
    cpu: dict[str, list[float]] = {name: [] for name, *_ in ways}
    for n, one in enumerate(asked):
        rotation = n % len(ways)
        for name, kind, method, rerank in [*ways[rotation:], *ways[:rotation]]:
            query = one.query(kind, method, rerank, k)
            began, began_cpu = time.perf_counter(), time.process_time()
            hits = engine.search(query)
            elapsed = (time.perf_counter() - began) * 1000
            used = (time.process_time() - began_cpu) * 1000
            if len(hits) != k:
                raise click.ClickException(f"{name}: {len(hits)} hits, not {k}")
            if n >= warmup:
                timings[name].append(elapsed)
                cpu[name].append(used)
    return {name: summary(values, cpu[name]) for name, values in timings.items()}


def summary(wall: Sequence[float], cpu: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(wall, 0.5),
        "p99_ms": percentile(wall, 0.99),
        "mean_ms": float(np.mean(wall)),
        "cpu_p50_ms": percentile(cpu, 0.5),
    }


def held_out_texts(
    mixtures: dict[str, VectorMixture], text_space: str, count: int, seed: int
) -> dict[str, np.ndarray]:
    """``count`` stand-in text vectors: held-out draws from the text space's mixture."""
    rng = np.random.default_rng(seed + 1_000_003)
    drawn = sample_images({text_space: mixtures[text_space]}, count, rng)[text_space]
    return {f"text {i}": drawn[i] for i in range(count)}


# -- the command ------------------------------------------------------------------------


def measure_size(
    folder: Path,
    info: EncoderInfo,
    size: int,
    *,
    clusters: int,
    seed: int,
    queries: int,
    warmup: int,
    k: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    built = ensure_index(folder, info, size, clusters, seed, say)
    mixtures = paired_mixtures(dict(info.spaces), clusters, seed)
    vectors = held_out_texts(mixtures, info.text_space, warmup + queries, seed)
    encoder = PrecomputedTexts(info, vectors)
    with Spyglass(encoder, Index.open(folder)) as engine:
        asked = plan_queries(engine, list(vectors), seed)
        ways = time_ways(engine, asked, WAYS, k, warmup)
        search = {
            space: store.describe().summary
            for space, store in engine.index.stores.items()
            if hasattr(store, "describe")
        }
    return {"images": size, "build_s": built.get("build_s"), "ways": ways, "search": search}


def measure_end_to_end(
    folder: Path, *, seed: int, queries: int, warmup: int, k: int
) -> dict[str, Any]:
    """Every kind of query with ``default`` method and re-ranking, the bundled model
    embedding the text; and the text model alone, for comparison."""
    from spyglass.cli.options import runtime_settings

    with Spyglass.open(folder, runtime=runtime_settings()) as engine:
        texts = [TEXTS[i % len(TEXTS)] for i in range(warmup + queries)]
        asked = plan_queries(engine, texts, seed)
        ways = [(kind, kind, "default", "default") for kind in END_TO_END]
        timed = time_ways(engine, asked, ways, k, warmup)
        encode, encode_cpu = [], []
        for n, text in enumerate(texts):
            began, began_cpu = time.perf_counter(), time.process_time()
            engine.encoder.embed_texts([text])
            if n >= warmup:
                encode.append((time.perf_counter() - began) * 1000)
                encode_cpu.append((time.process_time() - began_cpu) * 1000)
    timed["text model alone"] = summary(encode, encode_cpu)
    return timed


def markdown(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    header = "| method | " + " | ".join(f"{s['images']:,}" for s in sizes) + " |"
    rule = "|---|" + "---|" * len(sizes)
    lines = ["Wall p50 (p99) ms per query, text already embedded:", "", header, rule]
    for name, *_ in WAYS:
        cells = [
            f"{s['ways'][name]['p50_ms']:.1f} ({s['ways'][name]['p99_ms']:.1f})" for s in sizes
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "CPU p50 ms per query (this process, every thread):", "", header, rule]
    for name, *_ in WAYS:
        cells = [f"{s['ways'][name]['cpu_p50_ms']:.1f}" for s in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if results.get("end_to_end"):
        lines += [
            "",
            f"End to end with the bundled model at {sizes[-1]['images']:,} images, "
            "`default` method and re-ranking, ms:",
            "",
            "| query | wall p50 | wall p99 | CPU p50 |",
            "|---|---|---|---|",
        ]
        for name, row in results["end_to_end"].items():
            lines.append(
                f"| {name} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['cpu_p50_ms']:.1f} |"
            )
    return "\n".join(lines) + "\n"


@click.command("methods")
@click.option(
    "--sizes",
    default="10000,100000,1000000",
    show_default=True,
    help="Index sizes (images), comma-separated.",
)
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/tmp/spyglass-bench-methods"),
    show_default=True,
    help="Where the indexes are built (one sub-folder per size) and kept for later runs.",
)
@click.option("--queries", type=click.IntRange(1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True)
@click.option("-k", "k", type=click.IntRange(1), default=20, show_default=True)
@click.option("--clusters", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--end-to-end/--no-end-to-end",
    default=True,
    show_default=True,
    help="Also time queries at the largest size with the bundled model embedding the text.",
)
@click.option(
    "--blas-threads",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Threads NumPy's BLAS may use: 1 is what `spyglass serve` gives each request.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write results as JSON.")
def command(
    sizes: str,
    folder: Path,
    queries: int,
    warmup: int,
    k: int,
    clusters: int,
    seed: int,
    end_to_end: bool,
    blas_threads: int,
    as_json: bool,
    out: str | None,
) -> None:
    """Per-query cost of every ranking method as the index grows (synthetic vectors)."""
    from threadpoolctl import threadpool_limits

    from spyglass.cli.options import runtime_settings
    from spyglass.encoders import load_encoder

    # OpenBLAS's thread count is global to the process; the server sets it the same way
    # (server/process.py), because on a busy machine two BLAS threads spin-waiting for
    # each other made k-reciprocal re-ranking several times slower.
    threadpool_limits(limits=blas_threads, user_api="blas")

    try:
        counts = sorted({int(s.replace("_", "")) for s in sizes.split(",") if s.strip()})
    except ValueError as error:
        raise click.UsageError(f"--sizes takes numbers separated by commas: {error}") from error
    if not counts or counts[0] < 1000:
        raise click.UsageError("--sizes: each size must be at least 1000 images")
    info = load_encoder("bundled", runtime_settings()).info

    def say(message: str) -> None:
        click.echo(message, err=True)

    load_before = os.getloadavg()[0]
    measured = []
    for size in counts:
        result = measure_size(
            folder / f"{size}",
            info,
            size,
            clusters=clusters,
            seed=seed,
            queries=queries,
            warmup=warmup,
            k=k,
            say=say,
        )
        measured.append(result)
        say(f"{size:,} images measured")
    results: dict[str, Any] = {
        "sizes": measured,
        "queries": queries,
        "warmup": warmup,
        "k": k,
        "clusters": clusters,
        "seed": seed,
    }
    if end_to_end:
        results["end_to_end"] = measure_end_to_end(
            folder / f"{counts[-1]}", seed=seed, queries=queries, warmup=warmup, k=k
        )
    results.update(
        load_before=load_before,
        load_after=os.getloadavg()[0],
        cpu_count=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
        omp_threads=os.environ.get("OMP_NUM_THREADS", "unset"),
        blas_threads=blas_threads,
    )
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(markdown(results), nl=False)
        click.echo(
            f"load average {load_before:.1f} before, {results['load_after']:.1f} after; "
            f"{results['cpu_count']} CPUs; BLAS threads {blas_threads}"
        )
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
