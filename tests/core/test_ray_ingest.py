"""`spyglass index --ray`: decoding and embedding on a Ray cluster's workers, the driver
committing. A worker killed mid-run loses only its batches, which go to another worker:
the index ends complete, each file once, equal to a single-machine build. A cluster that
cannot be reached is one line and an exit status, with nothing created."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.errors import IndexProblem, InvalidQuery, ModelNotFound
from spyglass.ingest.pipeline import IngestProgress
from spyglass.ingest.ray_cluster import RayCluster, RaySettings
from spyglass.ingest.ray_runner import RayIngest
from spyglass.settings import IngestSettings, RuntimeSettings
from spyglass.store.index import Index

#: Workers of the test's cluster: one is killed, the others take its batches over.
WORKERS = 3
#: Small batches and commit groups: many batches in flight, commits between them.
SETTINGS = IngestSettings(batch_size=4, commit_every=8)


@pytest.fixture(scope="module")
def photos(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """42 real Caltech-101 photos (2 of each of 21 classes), a byte-for-byte copy of one
    (linked, not embedded again) and a text file named .jpg (skipped)."""
    source = data_root / "caltech101" / "images"
    folder = tmp_path_factory.mktemp("ray-photos")
    classes = sorted(p.name for p in source.iterdir() if p.name != "BACKGROUND_Google")[:21]
    for name in classes:
        for n, image in enumerate(sorted((source / name).iterdir())[:2]):
            shutil.copy2(image, folder / f"{name}-{n}.jpg")
    shutil.copy2(folder / f"{classes[5]}-0.jpg", folder / "zz-copy.jpg")
    (folder / "zz-notes.jpg").write_text("not a photo")
    return folder


@pytest.fixture(scope="module")
def cluster(runtime: RuntimeSettings) -> Iterator[RayCluster]:
    """A local Ray cluster of WORKERS worker processes, started as `--ray local[N]`
    starts it, once for the module (Ray takes 20-30 s to start on 2 busy cores)."""
    pytest.importorskip("ray", reason='needs Ray: pip install "spyglass[ray]"')
    with RayCluster(RaySettings(address=None, local_workers=WORKERS), runtime) as started:
        yield started


def rows_by_path(index_dir: Path) -> dict[str, tuple[str, dict[str, np.ndarray]]]:
    """path -> (content hash, {space: its float16 row}), after checking that the index
    holds each content once, one row per image in every space, no file without image."""
    with Index.open(index_dir) as index:
        catalogue = index.catalogue
        hashes = dict(catalogue.execute("SELECT id, content_hash FROM images"))
        assert len(set(hashes.values())) == len(hashes), "a content embedded twice"
        files = catalogue.files_under("/")
        assert all(state.image_id in hashes for state in files.values()), "an orphan file"
        owners = np.array([state.image_id for state in files.values()], np.int64)
        vectors: dict[str, dict[str, np.ndarray]] = {}
        for space, store in index.stores.items():
            stored = store.owners().tolist()  # type: ignore[attr-defined]
            assert sorted(stored) == sorted(hashes), f"{space}: rows and images differ"
            for path, row in zip(files, store.fetch(owners), strict=True):
                vectors.setdefault(path, {})[space] = np.asarray(row, np.float16)
        return {path: (hashes[state.image_id], vectors[path]) for path, state in files.items()}


def skipped(index_dir: Path) -> list[tuple[str, str]]:
    with Index.open(index_dir) as index:
        return sorted((s.path, s.reason) for s in index.catalogue.skipped(None))


def test_a_worker_killed_mid_run_loses_only_its_batch(
    photos: Path,
    cluster: RayCluster,
    bundled: Encoder,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    clean_dir, ray_dir = tmp_path / "clean", tmp_path / "ray"
    with Spyglass(bundled, Index.open_for_writing(clean_dir, bundled.info), SETTINGS) as engine:
        clean = engine.add([str(photos)])

    killed: list[int] = []

    def kill_a_busy_worker(event: IngestProgress) -> None:
        """A third of the way in, SIGKILL the worker holding the most batches."""
        if killed or event.stage != "indexing" or event.done < event.total // 3:
            return
        busy = runner.busy_worker_pids()
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])

    index = Index.open_for_writing(ray_dir, bundled.info)
    try:
        runner = RayIngest(index, bundled, cluster, SETTINGS, kill_a_busy_worker)
        report = runner.run([str(photos)])
    finally:
        index.close()

    # Ray's driver prints a paragraph on stdout for each dead worker: it would break
    # `spyglass index --json`, and the run took care of the death.
    assert "worker died" not in capfd.readouterr().out
    assert killed, "no worker was busy a third of the way in"
    assert runner.resent_batches >= 1, "the killed worker held no batch"
    assert (report.added, report.linked, len(report.skipped)) == (42, 1, 1)
    assert (report.added, report.linked) == (clean.added, clean.linked)
    assert (
        skipped(ray_dir) == skipped(clean_dir) == [(str(photos / "zz-notes.jpg"), "not-an-image")]
    )

    built, reference = rows_by_path(ray_dir), rows_by_path(clean_dir)
    assert sorted(built) == sorted(reference), "the same files"
    for path, (content, vectors) in reference.items():
        assert built[path][0] == content, path
        assert sorted(built[path][1]) == sorted(vectors), path
        for space, expected in vectors.items():
            got = built[path][1][space].astype(np.float32)
            # Within float16 rounding: at most one float16 step apart (a batch of other
            # images may change a float32 result in its last bits).
            step = np.spacing(np.abs(expected)).astype(np.float32)
            assert np.all(np.abs(got - expected.astype(np.float32)) <= step), (path, space)


def test_a_batch_that_keeps_losing_its_worker_stops_the_run(
    photos: Path, cluster: RayCluster, bundled: Encoder, runtime: RuntimeSettings, tmp_path: Path
) -> None:
    """A file that crashes the decoder would kill worker after worker: after
    ``max_attempts`` deaths holding the same batch the run stops, naming its files, and
    what was committed is whole (a re-run without Ray finishes the job)."""
    strict = RayCluster(RaySettings(local_workers=WORKERS, max_attempts=1), runtime).connect()
    killed: list[int] = []

    def kill_a_busy_worker(event: IngestProgress) -> None:
        busy = runner.busy_worker_pids()
        if not killed and event.done >= event.total // 3 and busy:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])

    with Index.open_for_writing(tmp_path / "index", bundled.info) as index:
        runner = RayIngest(index, bundled, strict, SETTINGS, kill_a_busy_worker)
        with pytest.raises(IndexProblem, match=r"^the Ray worker holding a batch died, once"):
            runner.run([str(photos)])
        committed = index.catalogue.counts()["embedded"]
    assert killed
    with Spyglass(bundled, Index.open_for_writing(tmp_path / "index", bundled.info)) as engine:
        rerun = engine.add([str(photos)])
    assert rerun.embedded == 42 - committed
    assert sorted(rows_by_path(tmp_path / "index")) == sorted(
        str(p) for p in photos.iterdir() if p.name != "zz-notes.jpg"
    )


def test_spyglass_index_joins_a_running_cluster_by_its_address(
    photos: Path, cluster: RayCluster, tmp_path: Path
) -> None:
    """`spyglass index --ray HOST:PORT` as a second driver of the test's cluster: the
    summary on stdout is the JSON alone, stderr is empty (Ray's own output is kept out)."""
    address = cluster.ray.get_runtime_context().gcs_address
    done = subprocess.run(
        [
            *(sys.executable, "-m", "spyglass", "index", str(photos)),
            *("--index", str(tmp_path / "index"), "--ray", address, "--json", "-q"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    summary = json.loads(done.stdout)
    assert (summary["added"], summary["linked"], summary["skipped"]) == (42, 1, 1)


class RecordedSpec:
    """The bundled encoder, but recording ``spec`` as the way to load it again."""

    def __init__(self, encoder: Encoder, spec: dict[str, str]) -> None:
        self._encoder = encoder
        self.info = replace(encoder.info, spec=spec)

    def __getattr__(self, name: str) -> object:
        return getattr(self._encoder, name)


def test_a_worker_that_cannot_build_the_model_stops_the_run_with_its_error(
    photos: Path, cluster: RayCluster, bundled: Encoder, tmp_path: Path
) -> None:
    """The workers build the encoder from the spec the index records: a spec they cannot
    load is the worker's own typed error, in one line, not a Ray traceback."""
    encoder = RecordedSpec(bundled, {"kind": "no-such-kind"})
    with Index.open_for_writing(tmp_path / "index", bundled.info) as index:
        runner = RayIngest(index, encoder, cluster, SETTINGS)  # type: ignore[arg-type]
        with pytest.raises(ModelNotFound, match=r"^unknown model kind 'no-such-kind'"):
            runner.run([str(photos)])
        assert index.catalogue.counts()["embedded"] == 0


def test_an_unreachable_cluster_is_one_line_and_creates_nothing(
    photos: Path, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    index_dir = tmp_path / "index"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "spyglass", "index", str(photos)),
            *("--index", str(index_dir), "--ray", f"127.0.0.1:{port}", "-q"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 5, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot reach the Ray cluster at 127.0.0.1:{port} (connection refused); "
        "start one there with `ray start --head`, or use --ray local[N]"
    ]
    assert not index_dir.exists()


def test_without_ray_installed_the_error_names_the_extra(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spyglass.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    index_dir = tmp_path / "index"
    result = CliRunner().invoke(
        main, ["index", str(photos), "--index", str(index_dir), "--ray", "local[2]", "-q"]
    )
    assert result.exit_code == 4, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: distributed indexing needs Ray: ")
    assert 'pip install "spyglass[ray]"' in line
    assert not index_dir.exists()


@pytest.mark.parametrize(
    ("text", "address", "workers"),
    [
        ("local[3]", None, 3),
        ("10.0.0.5:6379", "10.0.0.5:6379", None),
        ("ray://head:10001", "ray://head:10001", None),
        ("auto", "auto", None),
    ],
)
def test_ray_addresses(text: str, address: str | None, workers: int | None) -> None:
    settings = RaySettings.parse(text)
    assert settings.address == address
    if workers is not None:
        assert settings.local_workers == workers


@pytest.mark.parametrize("text", ["local[0]", "local[x]", "head", "head:port", "head:70000"])
def test_malformed_ray_addresses_are_refused(text: str) -> None:
    with pytest.raises(InvalidQuery):
        RaySettings.parse(text)
