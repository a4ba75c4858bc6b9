"""`spyglass bench search`: vector search speed, memory and recall at a given size,
against baselines measured in the same run.

The vectors are synthetic unit vectors clustered like image embeddings (a mixture of
von Mises-Fisher-like clusters on the sphere, see :class:`VectorMixture`), or clustered
around real vectors taken from an index with ``--seed-index``. They are written as a
space of a real index folder (the float16 rows and owner ids Spyglass keeps), the
approximate index is built with the store's own code, and every method is then measured
in a fresh process of its own, so that open time and resident memory are its alone:

* ``spyglass``: :class:`~spyglass.store.ivf.IvfVectorStore` (IVF, exact re-scoring);
* ``faiss_flat``: :class:`~spyglass.store.local.LocalVectorStore`, the exact FAISS
  ``IndexFlatIP`` Spyglass used at every size before;
* ``bruteforce_numpy``: brute force as fast as NumPy does it: every vector as float32 in
  one matrix, a matrix product per query and ``argpartition`` for the top k;
* ``rclip``: what rclip does (``rclip/model.py``): the same matrix product, then Python's
  ``sorted`` over every (score, row) pair. Its sort dominates, so it is timed on fewer
  queries and not in batches;
* ``milvus`` (with ``--milvus URL``): :class:`~spyglass.store.milvus.MilvusVectorStore`
  over the same rows, loaded into Milvus Lite (``--milvus lite``: a file in the folder)
  or a server, with the index type the store picks by size (HNSW from 100,000 rows).

Recall@10 is measured against the exact top 10 over the same float16 rows, on held-out
queries drawn from the same mixture (not rows of the index).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from spyglass.cli.options import ByteSize
from spyglass.settings import VectorIndexKind, VectorSearchSettings
from spyglass.store.ivf import IvfVectorStore, available_memory, exact_top
from spyglass.store.local import LocalVectorStore

#: Space name of the benchmark's vectors in its index folder.
SPACE = "bench"
#: Rows generated and written per step (bounds the benchmark's own memory at 10M).
_CHUNK = 100_000
#: Queries per call when measuring batched throughput.
_BATCH = 100


@dataclass(frozen=True)
class VectorMixture:
    """Unit vectors clustered like image embeddings.

    Every vector is ``centre + noise`` normalised, where the centre is one of
    ``centres`` (picked with power-law weights: a few large clusters, many small) and the
    noise has two parts: ``within`` (rank, dims) directions with decreasing variance (real
    embeddings vary along few directions, so neighbours are graded rather than all at
    the same distance), and a small isotropic part, ``noise``. Centres share a common
    direction, as CLIP-like embeddings do (random pairs have a cosine near 0.35).

    With the defaults at 512 dims the nearest neighbour of a vector has a cosine near
    0.87, the 10th 0.83, the 100th 0.72, and the median pair 0.37 (close to what
    CLIP image embeddings of photo collections show).
    """

    centres: np.ndarray
    weights: np.ndarray
    within: np.ndarray
    noise: float

    @property
    def dims(self) -> int:
        return int(self.centres.shape[1])

    @classmethod
    def synthetic(
        cls,
        dims: int,
        *,
        clusters: int = 1000,
        seed: int = 0,
        shared: float = 1.0,
        spread: float = 0.4,
        rank: int = 64,
        noise: float = 0.2,
    ) -> VectorMixture:
        rng = np.random.default_rng(seed)
        common = _unit(rng.standard_normal(dims, dtype=np.float32))
        centres = _unit(rng.standard_normal((clusters, dims), dtype=np.float32)) + shared * common
        return cls.around(_unit(centres), seed=seed, spread=spread, rank=rank, noise=noise)

    @classmethod
    def around(
        cls,
        centres: np.ndarray,
        *,
        seed: int = 0,
        spread: float = 0.4,
        rank: int = 64,
        noise: float = 0.2,
    ) -> VectorMixture:
        """A mixture whose clusters sit at ``centres`` (c, dims) float32, e.g. real
        vectors from an index."""
        rng = np.random.default_rng(seed + 1)
        c, dims = centres.shape
        weights = 1.0 / np.arange(1, c + 1) ** 0.7
        rng.shuffle(weights)
        scales = spread / np.sqrt(np.arange(1, rank + 1, dtype=np.float32))
        within = _unit(rng.standard_normal((rank, dims), dtype=np.float32)) * scales[:, None]
        return cls(
            centres=np.asarray(centres, np.float32),
            weights=weights / weights.sum(),
            within=within.astype(np.float32),
            noise=noise,
        )

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, dims) float32 unit vectors."""
        picked = rng.choice(len(self.centres), size=n, p=self.weights)
        isotropic = _unit(rng.standard_normal((n, self.dims), dtype=np.float32))
        x = (
            self.centres[picked]
            + rng.standard_normal((n, len(self.within)), dtype=np.float32) @ self.within
            + self.noise * isotropic
        )
        return _unit(x)

    def chunks(self, n: int, seed: int) -> Iterator[np.ndarray]:
        """``n`` vectors in chunks of at most 100,000 rows, the same for the same seed."""
        rng = np.random.default_rng(seed)
        for first in range(0, n, _CHUNK):
            yield self.sample(min(_CHUNK, n - first), rng)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def write_space(folder: Path, mixture: VectorMixture, rows: int, seed: int) -> float:
    """Write ``rows`` vectors as the benchmark space in ``folder``; returns seconds."""
    started = time.perf_counter()
    store = LocalVectorStore(folder, SPACE, mixture.dims, 0, writer=True)
    written = 0
    for chunk in mixture.chunks(rows, seed):
        store.add(np.arange(written, written + len(chunk), dtype=np.int64), chunk)
        store.flush()
        written += len(chunk)
    return time.perf_counter() - started


def build_approximate(folder: Path, dims: int, rows: int, settings: VectorSearchSettings) -> float:
    """Build and save the approximate index over the written rows; returns seconds."""
    started = time.perf_counter()
    store = IvfVectorStore(folder, SPACE, dims, rows, writer=True, settings=settings)
    store.update_index(retrain=True)
    return time.perf_counter() - started


def rss_mb() -> dict[str, float]:
    """Resident memory of this process now, in MiB: ``rss_mb`` in all, and of it
    ``rss_file_mb`` pages of mapped files (the page cache, shared and reclaimable) and
    ``rss_anon_mb`` the process's own; ``rss_peak_mb`` the most it ever held (VmHWM,
    mapped pages included). Linux; elsewhere only the peak is known."""
    try:
        fields = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:"))
        }
        return {
            "rss_mb": fields["VmRSS"],
            "rss_anon_mb": fields["RssAnon"],
            "rss_file_mb": fields["RssFile"],
            "rss_peak_mb": fields["VmHWM"],
        }
    except (OSError, KeyError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss_mb": peak / (1024 * 1024 if platform.system() == "Darwin" else 1024)}


class _BruteForce:
    """All vectors as one float32 matrix, a product per query, the top k by partition."""

    def __init__(self, folder: Path, dims: int, rows: int) -> None:
        self.matrix = np.fromfile(folder / f"{SPACE}.f16", np.float16, rows * dims).reshape(
            rows, dims
        )
        self.matrix = self.matrix.astype(np.float32)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        scores = queries @ self.matrix.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1)


class _Rclip(_BruteForce):
    """rclip's search as written: the product, then every (score, row) pair sorted."""

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        found = []
        for similarities in queries @ self.matrix.T:
            ranked = sorted(
                zip(similarities, range(len(self.matrix)), strict=True),
                key=lambda pair: pair[0],
                reverse=True,
            )
            found.append([row for _, row in ranked[:k]])
        return np.asarray(found, np.int64)


def measure(
    method: str,
    folder: str,
    dims: int,
    rows: int,
    queries: np.ndarray,
    single_queries: int,
    settings: VectorSearchSettings,
) -> dict[str, Any]:
    """Open one method, time it and return its figures and its top 10 per query. Runs in
    a fresh process (see :func:`measure_apart`)."""
    path = Path(folder)
    started = time.perf_counter()
    searcher: Any
    if method == "bruteforce_numpy":
        searcher = _BruteForce(path, dims, rows)
    elif method == "rclip":
        searcher = _Rclip(path, dims, rows)
    elif method == "faiss_flat":
        searcher = LocalVectorStore(path, SPACE, dims, rows)
    elif method == "milvus":
        assert isinstance(settings, BenchSettings)
        searcher = _milvus_store(settings.milvus_url, path, dims, rows)
    else:
        searcher = IvfVectorStore(path, SPACE, dims, rows, settings=settings)

    def top(batch: np.ndarray, k: int) -> np.ndarray:
        found = searcher.search(batch, k)
        return np.asarray(found if isinstance(found, np.ndarray) else found.owners)

    top(queries[:1], 10)  # the first search pays for loading or mapping: part of opening
    figures: dict[str, Any] = {"open_ms": (time.perf_counter() - started) * 1000}
    # The first pass meets the index's pages unmapped (at 10M, 5 GB of lists, some not
    # even in the page cache): timed apart as "cold", then both k timed again.
    for k, suffix in ((10, "_cold"), (10, ""), (100, "_k100")):
        samples = []
        for i in range(min(single_queries, len(queries))):
            began = time.perf_counter()
            top(queries[i : i + 1], k)
            samples.append(time.perf_counter() - began)
        ms = np.array(samples) * 1000
        figures[f"p50_ms{suffix}"] = float(np.percentile(ms, 50))
        figures[f"p99_ms{suffix}"] = float(np.percentile(ms, 99))
    # The exact baselines answer only as many batches as cover their single queries: at
    # 1M rows FAISS's flat index takes minutes over a thousand queries.
    everything = method in ("spyglass", "milvus")
    answered = queries if everything else queries[: max(single_queries, _BATCH)]
    if method == "rclip":  # one query at a time is all rclip does
        answered = queries[:single_queries]
        answers = [top(answered[i : i + 1], 10) for i in range(len(answered))]
        figures["batch_qps"] = None
    else:
        began = time.perf_counter()
        answers = [top(answered[i : i + _BATCH], 10) for i in range(0, len(answered), _BATCH)]
        figures["batch_qps"] = len(answered) / (time.perf_counter() - began)
    figures.update(rss_mb())
    if method == "spyglass":
        described = searcher.describe()
        figures["index"] = described.summary
        figures["nprobe"] = described.nprobe
        figures["recall_at_10_measured_at_build"] = described.recall_at_10
    figures["top10"] = np.vstack(answers).tolist()
    return figures


@dataclass(frozen=True)
class BenchSettings(VectorSearchSettings):
    """The approximate store's settings, and where the Milvus method's rows live."""

    milvus_url: str = ""
    #: The Milvus index: ``auto`` (by size, as an index would have it: HNSW from
    #: 100,000 rows), ``exact`` (FLAT) or ``approximate`` (HNSW).
    milvus_kind: VectorIndexKind = "auto"


def _milvus_store(
    url: str,
    folder: Path,
    dims: int,
    rows: int,
    writer: bool = False,
    kind: VectorIndexKind = "auto",
) -> Any:
    from spyglass.store.milvus import MilvusVectorStore, parse_milvus_url

    return MilvusVectorStore(
        parse_milvus_url(url, folder),
        SPACE,
        dims,
        rows,
        writer=writer,
        owner="bench" if writer else None,
        settings=VectorSearchSettings(kind=kind),
    )


def load_milvus(
    url: str, folder: str, dims: int, rows: int, kind: VectorIndexKind = "auto"
) -> dict[str, Any]:
    """Copy the written rows into Milvus (unless it holds them already) and let the
    store build its index; returns seconds. Runs in a fresh process: Milvus Lite lets
    one process at a time open its file, and the measuring process is another."""
    from spyglass.store.migrate import read_rows
    from spyglass.store.milvus import release_lite

    path = Path(folder)
    started = time.perf_counter()
    # Opened to read first: a writer would delete the rows its catalogue (none) lacks.
    store = _milvus_store(url, path, dims, 0)
    reused = store.stored_rows() == rows
    store.close()
    # A previous run's rows are kept (the writer only checks them and the index type).
    store = _milvus_store(url, path, dims, rows if reused else 0, writer=True, kind=kind)
    try:
        if not reused:
            for start in range(0, rows, _CHUNK):
                stop = min(start + _CHUNK, rows)
                owners, vectors = read_rows(path, SPACE, dims, start, stop)
                store.add(owners, vectors)
                store.flush()
        summary = store.describe().summary
    finally:
        store.close()
        # This runs in a pool's worker, which is terminated without exit handlers.
        release_lite(store.location)
    return {
        "milvus_load_s": None if reused else time.perf_counter() - started,
        "milvus_index": summary,
    }


def measure_apart(*args: Any, function: Callable[..., dict[str, Any]] = measure) -> dict[str, Any]:
    """:func:`measure` (or ``function``) in a fresh (spawned) process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(function, args)
    return result


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def run(
    rows: int,
    dims: int,
    *,
    queries: int,
    baseline_queries: int,
    mixture: VectorMixture,
    settings: VectorSearchSettings,
    folder: Path,
    seed: int,
    baselines: bool = True,
    reuse_index: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """The whole benchmark over ``folder`` (written if it holds no space yet); ``say``
    is told each step as it starts (a 10M run takes the better part of an hour)."""
    written = folder / f"{SPACE}.f16"
    reuse = written.exists() and written.stat().st_size == rows * dims * 2
    if not reuse:
        say(f"writing {rows:,} vectors to {folder}")
    write_s = None if reuse else write_space(folder, mixture, rows, seed)
    saved = folder / f"{SPACE}.ivf.json"
    build_s: float | None = None
    build_peak = None
    if reuse and reuse_index and saved.exists() and json.loads(saved.read_text())["rows"] == rows:
        say(f"using the index saved in {folder}")
    else:
        say("building the approximate index")
        build_s = build_approximate(folder, dims, rows, settings)
        build_peak = rss_mb().get("rss_peak_mb")
        say(f"built in {build_s:.0f} s")
    say(f"exact top 10 of {queries} queries")
    asked = mixture.sample(queries, np.random.default_rng(seed + 1_000_003))
    matrix = np.memmap(written, dtype=np.float16, mode="r", shape=(rows, dims))
    truth = exact_top(asked, matrix, 10)
    del matrix
    results: dict[str, Any] = {
        "vectors": rows,
        "dim": dims,
        "queries": queries,
        "baseline_queries": baseline_queries,
        "write_s": write_s,
        "build_s": build_s,
        # Of the benchmark's process, which built the index: mapped rows read included.
        "build_rss_peak_mb": build_peak,
    }
    methods = {}
    skipped = {}
    milvus_url = settings.milvus_url if isinstance(settings, BenchSettings) else ""
    if milvus_url:
        say(f"loading {rows:,} vectors into {milvus_url}")
        kind = settings.milvus_kind if isinstance(settings, BenchSettings) else "auto"
        results.update(
            measure_apart(milvus_url, str(folder), dims, rows, kind, function=load_milvus)
        )
    for method, single in (
        ("spyglass", queries),
        ("milvus", queries),
        ("faiss_flat", baseline_queries),
        ("bruteforce_numpy", baseline_queries),
        ("rclip", max(1, baseline_queries // 5)),
    ):
        if method == "milvus" and not milvus_url:
            continue
        if method not in ("spyglass", "milvus") and not baselines:
            continue
        needed, available = rows * dims * 4, available_memory()
        exact = method not in ("spyglass", "milvus")
        if exact and available is not None and needed > available // 2:
            # The exact baselines hold every row as float32: at 10M x 512 that is 20 GB,
            # which is the problem the approximate store exists to solve.
            skipped[method] = (
                f"needs {needed / 2**30:.1f} GiB of float32 rows, more than half of the "
                f"{available / 2**30:.1f} GiB available"
            )
            continue
        say(f"measuring {method}")
        load_before = _load_average()
        figures = measure_apart(method, str(folder), dims, rows, asked, single, settings)
        # Latency on a shared machine depends on what else runs: kept with the figures.
        figures["load_average"] = [load_before, _load_average()]
        found = np.asarray(figures.pop("top10"))
        figures["recall_at_10"] = recall_at_10(found, truth[: len(found)])
        methods[method] = figures
    ours = methods.pop("spyglass")
    results.update(ours)
    for name, figures in methods.items():
        short = {"faiss_flat": "flat", "bruteforce_numpy": "bruteforce"}.get(name, name)
        # Ratios of each method's p50 to the embedded approximate store's, from the same
        # run: above 1, the embedded store is faster.
        results[f"speedup_vs_{short}"] = figures["p50_ms"] / ours["p50_ms"]
        results[f"speedup_vs_{short}_k100"] = figures["p50_ms_k100"] / ours["p50_ms_k100"]
        if figures["batch_qps"] is not None:
            results[f"batch_speedup_vs_{short}"] = ours["batch_qps"] / figures["batch_qps"]
    results["baselines"] = methods
    if skipped:
        results["baselines_skipped"] = skipped
    results["cpu_count"] = os.cpu_count()
    results["machine"] = platform.processor() or platform.machine()
    return results


def _load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def seeded_mixture(index_folder: Path, dims: int | None, clusters: int, seed: int) -> VectorMixture:
    """Clusters around ``clusters`` real vectors of an index's image space."""
    from spyglass.store.index import Index

    with Index.open(index_folder) as index:
        store = index.stores[index.info.image_space]
        owners = store.visible_owners()
        picked = np.random.default_rng(seed).choice(
            owners, min(clusters, len(owners)), replace=False
        )
        centres = store.fetch(np.sort(picked))
    if dims is not None and dims != centres.shape[1]:
        raise click.UsageError(f"--dim {dims}, but the index's vectors have {centres.shape[1]}")
    return VectorMixture.around(_unit(centres), seed=seed)


def _print(results: dict[str, Any]) -> None:
    keys = [
        "build_s",
        "open_ms",
        "p50_ms_cold",
        "rss_mb",
        "rss_anon_mb",
        "rss_peak_mb",
        "p50_ms",
        "p99_ms",
        "p50_ms_k100",
        "p99_ms_k100",
        "batch_qps",
        "recall_at_10",
    ]
    baselines = results["baselines"]
    click.echo(
        f"{results['vectors']:,} vectors x {results['dim']} dims, {results['queries']} queries"
    )
    click.echo(f"spyglass index: {results['index']}")
    click.echo(f"{'':14}{'spyglass':>14}" + "".join(f"{m[:13]:>14}" for m in baselines))
    for key in keys:
        cells = [results.get(key)] + [baselines[m].get(key) for m in baselines]
        text = ["-" if v is None else f"{v:,.3f}" if v < 10 else f"{v:,.1f}" for v in cells]
        click.echo(f"{key:14}" + "".join(f"{t:>14}" for t in text))
    for key in sorted(k for k in results if "speedup" in k):
        click.echo(f"{key:30} {results[key]:.1f}x")
    for method, why in results.get("baselines_skipped", {}).items():
        click.echo(f"{method} skipped: {why}")


@click.command("search")
@click.option("--vectors", "rows", default=100_000, show_default=True, help="Rows in the space.")
@click.option("--dim", "dims", default=512, show_default=True, help="Dimensions per vector.")
@click.option("--queries", default=1000, show_default=True, help="Held-out queries.")
@click.option(
    "--baseline-queries",
    default=50,
    show_default=True,
    help="Single queries timed for the exact baselines (at 1M each takes about a second).",
)
@click.option("--clusters", default=1000, show_default=True, help="Clusters in the mixture.")
@click.option(
    "--seed-index",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Cluster around real vectors from this index instead of random centres.",
)
@click.option("--nprobe", type=int, default=None, help="Clusters probed (default: measured).")
@click.option("--codes", default=None, help="FAISS codes: SQ8 or PQ{m}x4fs (default: by budget).")
@click.option(
    "--memory-budget",
    type=ByteSize(),
    default=None,
    help="Memory the index may take, e.g. 600MiB or 4GiB; a plain number is MiB (picks "
    "8-bit or 4-bit PQ codes).",
)
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the vectors and index here (reused by a later run of the same size).",
)
@click.option(
    "--baselines/--no-baselines",
    default=True,
    show_default=True,
    help="Also time the exact baselines (skipped anyway when their rows do not fit in RAM).",
)
@click.option(
    "--reuse-index",
    is_flag=True,
    help="With --folder: measure the index a previous run saved there, if it covers the "
    "same rows, instead of building it again (build_s is then null).",
)
@click.option(
    "--milvus",
    "milvus_url",
    default=None,
    metavar="URL",
    help="Also measure the Milvus store over the same rows: 'lite' (Milvus Lite, a file "
    "in the folder), milvus:///path/file.db, or milvus://HOST:PORT/COLLECTION.",
)
@click.option(
    "--milvus-index",
    type=click.Choice(["auto", "FLAT", "HNSW"]),
    default="auto",
    show_default=True,
    help="The Milvus index: by size as an index would have it (HNSW from 100,000 rows), "
    "or the one named.",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write results as JSON.")
@click.option(
    "--from-json",
    "earlier",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Results of earlier runs (--out files) to plot; with it, nothing is run. Repeatable.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Draw p50 latency and Recall@10 against the number of vectors into this PNG, "
    "one point per result (this run's, or those of --from-json).",
)
def command(
    rows: int,
    dims: int,
    queries: int,
    baseline_queries: int,
    clusters: int,
    seed_index: Path | None,
    nprobe: int | None,
    codes: str | None,
    memory_budget: int | None,
    folder: Path | None,
    baselines: bool,
    reuse_index: bool,
    milvus_url: str | None,
    milvus_index: str,
    seed: int,
    as_json: bool,
    out: str | None,
    earlier: tuple[Path, ...],
    plot: Path | None,
) -> None:
    """Approximate search against exact baselines: speed, memory, Recall@10."""
    if earlier:
        if plot is None:
            raise click.UsageError("--from-json only draws a plot: give --plot FILE")
        plot_against_size([json.loads(path.read_text()) for path in earlier], plot)
        return
    if seed_index is not None:
        mixture = seeded_mixture(seed_index, dims, clusters, seed)
        dims = mixture.dims
    else:
        mixture = VectorMixture.synthetic(dims, clusters=clusters, seed=seed)
    settings = BenchSettings(
        kind="approximate",
        build_in_background=False,
        nprobe=nprobe,
        codes=codes,
        memory_budget=memory_budget,
    )
    scratch = None
    if folder is None:
        scratch = tempfile.mkdtemp(prefix="spyglass-bench-search-")
        folder = Path(scratch)
    folder.mkdir(parents=True, exist_ok=True)
    if milvus_url:
        url = f"milvus://{folder.absolute()}/milvus.db" if milvus_url == "lite" else milvus_url
        kinds: dict[str, VectorIndexKind] = {"FLAT": "exact", "HNSW": "approximate"}
        settings = replace(settings, milvus_url=url, milvus_kind=kinds.get(milvus_index, "auto"))
    try:
        results = run(
            rows,
            dims,
            queries=queries,
            baseline_queries=baseline_queries,
            mixture=mixture,
            settings=settings,
            folder=folder,
            seed=seed,
            baselines=baselines,
            reuse_index=reuse_index,
            say=lambda line: click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True),
        )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        _print(results)
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    if plot is not None:
        plot_against_size([results], plot)


def plot_against_size(results: list[dict[str, Any]], path: Path) -> None:
    """Single-query p50 and p99 (k = 10) and Recall@10 of the approximate store against
    the number of vectors, one point per result (as ``run`` returns them), with the
    exact store's p50 where it was measured; a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    results = sorted(results, key=lambda r: r["vectors"])
    sizes = [r["vectors"] for r in results]
    figure, (latency, recall) = plt.subplots(1, 2, figsize=(10, 3.8))
    latency.plot(sizes, [r["p50_ms"] for r in results], "o-", label="spyglass p50")
    latency.plot(sizes, [r["p99_ms"] for r in results], "o--", alpha=0.6, label="spyglass p99")
    cold = [(r["vectors"], r["p50_ms_cold"]) for r in results if r.get("p50_ms_cold")]
    if cold:  # runs since the first pass is timed apart (older ones timed only it)
        latency.plot(*zip(*cold, strict=True), "x", color="C0", label="p50, first pass")
    exact = [
        (r["vectors"], r["baselines"]["faiss_flat"]["p50_ms"])
        for r in results
        if "faiss_flat" in r.get("baselines", {})
    ]
    if exact:
        latency.plot(*zip(*exact, strict=True), "s:", color="grey", label="exact store p50")
    latency.set(xscale="log", yscale="log", xlabel="vectors", ylabel="ms per query (k = 10)")
    latency.legend()
    recall.plot(sizes, [r["recall_at_10"] for r in results], "o-")
    recall.axhline(0.95, color="grey", linestyle=":", label="goal 0.95")
    recall.set(xscale="log", xlabel="vectors", ylabel="Recall@10 against exact", ylim=(0.9, 1.0))
    recall.legend()
    dims = sorted({r["dim"] for r in results})
    cores = sorted({int(r["cpu_count"]) for r in results if r.get("cpu_count")})
    figure.suptitle(
        f"spyglass bench search: {', '.join(map(str, dims))}-d vectors, "
        f"{', '.join(map(str, cores))} cores"
    )
    for result in results:
        load = result.get("load_average") or [None]
        loaded = f" (load {max(v for v in load if v is not None):.0f})" if any(load) else ""
        latency.annotate(
            f"{result['p50_ms']:.1f} ms{loaded}",
            (result["vectors"], result["p50_ms"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
