"""The ingest pipeline's decoders: worker processes or threads, decoding ahead of the
encoder, give the vectors of one image at a time; bad files are skipped as before; a
Ctrl-C or a SIGKILL leaves no worker process behind."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.errors import ImageRejected
from spyglass.images import open_image_file
from spyglass.settings import IngestSettings
from spyglass.store.index import Index

#: Added to the 12 photos; the truncated one sorts among them, so that the second
#: batch has a hole where it was.
ADDED = ("ba-truncated.jpg", "zz-notes.jpg", "zz-copy.jpg", "zz-pipe.jpg")


def bad_and_good(folder: Path) -> Path:
    """``folder`` plus a truncated JPEG, text named .jpg, a copy and a FIFO."""
    photos = sorted(folder.glob("*.jpg"))
    (folder / "ba-truncated.jpg").write_bytes(photos[0].read_bytes()[:400])
    (folder / "zz-notes.jpg").write_text("not a photo")
    shutil.copy(photos[1], folder / "zz-copy.jpg")
    os.mkfifo(folder / "zz-pipe.jpg")
    return folder


def stored_vectors(index_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """space -> file name -> its stored row (float16 on disk, as float32)."""
    with Index.open(index_dir) as index:
        files = index.catalogue.files_under("/")
        owners = np.array([state.image_id for state in files.values()], np.int64)
        return {
            space: {
                Path(path).name: np.asarray(row, np.float32)
                for path, row in zip(files, store.fetch(owners), strict=True)
            }
            for space, store in index.stores.items()
        }


@pytest.mark.parametrize("decode_in", ["processes", "threads"])
def test_decoders_give_the_vectors_of_one_image_at_a_time_and_skip_bad_files(
    small_folder: Path, bundled: Encoder, tmp_path: Path, decode_in: str
) -> None:
    folder = bad_and_good(small_folder)
    # Batches of 4 with one decoded ahead, commits of 5: files cross batches and commit
    # groups while others are still being decoded.
    settings = IngestSettings(
        batch_size=4,
        commit_every=5,
        decode_in="processes" if decode_in == "processes" else "threads",
        decode_ahead_batches=1,
    )
    children: list[int] = []
    with Spyglass(bundled, Index.open_for_writing(tmp_path / "index", bundled.info), settings) as e:
        report = e.add(
            [str(folder)],
            progress=lambda _: children.append(len(multiprocessing.active_children())),
        )
    assert (max(children) > 0) == (decode_in == "processes")
    assert (report.added, report.linked) == (12, 1)
    assert sorted((Path(s.path).name, s.reason) for s in report.skipped) == [
        ("ba-truncated.jpg", "truncated"),
        ("zz-notes.jpg", "not-an-image"),
        ("zz-pipe.jpg", "special-file"),
    ]
    stored = stored_vectors(tmp_path / "index")
    photos = sorted(p for p in small_folder.glob("*.jpg") if p.name not in ADDED)
    one_at_a_time = [
        bundled.embed_pixels(
            bundled.preprocess(
                open_image_file(p, max_pixels=settings.max_pixels, max_bytes=1 << 29).image
            )[None]
        )
        for p in photos
    ]
    for space, rows in stored.items():
        assert sorted(rows) == sorted([p.name for p in photos] + ["zz-copy.jpg"])
        for photo, alone in zip(photos, one_at_a_time, strict=True):
            np.testing.assert_allclose(rows[photo.name], alone[space][0], atol=2e-3)
        np.testing.assert_array_equal(rows["zz-copy.jpg"], rows[photos[1].name])


def test_decoder_threads_write_each_image_into_the_encoders_input(
    small_folder: Path, bundled: Encoder
) -> None:
    """The encoder's thread gets one array the decoders filled, row by row, not 32
    arrays to stack while the model waits; a file that failed leaves its row out."""
    from concurrent.futures import ThreadPoolExecutor

    from spyglass.ingest.decoder import Decoder
    from spyglass.ingest.reader import FoundFile, read_and_hash

    photos = sorted(small_folder.glob("*.jpg"))[:3]
    bad = small_folder / "bad.jpg"
    bad.write_text("not a photo")
    reads = [
        read_and_hash(FoundFile(str(p), p.stat().st_size, 0), 1 << 29)
        for p in [photos[0], bad, *photos[1:]]
    ]
    with ThreadPoolExecutor(2) as threads:
        batch = Decoder(bundled, IngestSettings(batch_size=4), [], threads).batch()
        for read in reads:
            batch.add(read)
        decoded = []
        for row, item in enumerate(batch.items):
            with contextlib.suppress(ImageRejected):
                decoded.append((row, item.result()))
    assert [row for row, _ in decoded] == [0, 2, 3]
    rows = decoded[0][1].pixels.base
    assert rows is not None and rows.shape == (4, 3, 224, 224)
    assert all(d.pixels.base is rows for _, d in decoded)
    pixels = batch.pixels(decoded)
    expected = [
        bundled.preprocess(open_image_file(p, max_pixels=10**8, max_bytes=1 << 29).image)
        for p in photos
    ]
    np.testing.assert_array_equal(pixels, np.stack(expected))


class WatchedEncoder:
    """The bundled encoder, counting preprocessed images; each ``embed_pixels`` records
    whether the next batch was being decoded while it ran."""

    def __init__(self, inner: Any, batch_size: int, files: int) -> None:
        self.inner = inner
        self.info = inner.info
        self.batch_size = batch_size
        self.files = files
        self.preprocessed = 0
        self.lock = threading.Condition()
        self.overlapped: list[bool] = []

    def preprocess(self, image: Any) -> np.ndarray:
        with self.lock:
            self.preprocessed += 1
            self.lock.notify_all()
        pixels: np.ndarray = self.inner.preprocess(image)
        return pixels

    def embed_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        embedded = len(self.overlapped) * self.batch_size
        # A file of the next batch has started (the last batch has none to wait for).
        wanted = min(embedded + len(pixels) + 1, self.files)
        with self.lock:
            # Returns at once when the pipeline decodes ahead; times out when it does not.
            seen = self.lock.wait_for(lambda: self.preprocessed >= wanted, timeout=10)
        self.overlapped.append(bool(seen))
        result: dict[str, np.ndarray] = self.inner.embed_pixels(pixels)
        return result

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        result: np.ndarray = self.inner.embed_texts(texts)
        return result


def test_the_next_batch_is_decoded_while_the_encoder_embeds_one(
    many_images: Path, bundled: Encoder, tmp_path: Path
) -> None:
    encoder = WatchedEncoder(bundled, batch_size=8, files=40)
    settings = IngestSettings(batch_size=8, decode_ahead_batches=1)
    index = Index.open_for_writing(tmp_path / "index", bundled.info)
    files = sorted(many_images.glob("*.jpg"))[:40]
    with Spyglass(encoder, index, settings) as engine:  # type: ignore[arg-type]
        report = engine.add([str(f) for f in files])
    assert report.embedded == 40
    # Each batch found the next one decoding (without decoding ahead: only the last).
    assert encoder.overlapped == [True] * 5


def test_decoding_processes_leave_ctrl_c_to_their_parent(bundled: Encoder) -> None:
    """A terminal's Ctrl-C reaches every process of its group: a worker that took it
    would print a traceback whenever it was waiting for work when the keys were hit."""
    from concurrent.futures import ThreadPoolExecutor

    from spyglass.ingest.decoder import Decoder

    with ThreadPoolExecutor(1) as threads:
        decoder = Decoder(bundled, IngestSettings(decode_in="processes"), [], threads)
        try:
            assert decoder.uses_processes
            in_worker = decoder._pool().submit(signal.getsignal, signal.SIGINT).result()
        finally:
            decoder.close()
    assert in_worker == signal.SIG_IGN


#: Indexes with decoding in worker processes; exits 130 on Ctrl-C, as the CLI does.
SCRIPT = textwrap.dedent(
    """
    import sys
    from spyglass.encoders import load_encoder
    from spyglass.engine import Spyglass
    from spyglass.settings import IngestSettings, RuntimeSettings
    from spyglass.store.index import Index

    encoder = load_encoder("bundled", RuntimeSettings.from_environment())
    settings = IngestSettings(decode_in="processes", commit_every=16, batch_size=8)
    index = Index.open_for_writing(sys.argv[2], encoder.info)
    try:
        with Spyglass(encoder, index, settings) as engine:
            engine.add([sys.argv[1]])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    """
)


def start_indexing(images: Path, index_dir: Path) -> subprocess.Popen[str]:
    """The script in a process group of its own, like a shell's foreground job; returns
    once two groups are committed."""
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(images), str(index_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    owners = index_dir / "vectors" / "joint.ids"  # 8 bytes per committed image
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if owners.exists() and owners.stat().st_size >= 32 * 8:
            return process
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"indexing ended or stalled before two commits: {process.communicate()}")


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_gone(group: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not group_alive(group):
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_stops_the_decoding_processes_quietly(photo_variants: Any, tmp_path: Path) -> None:
    images = photo_variants(tmp_path / "images", 400, side=160)
    process = start_indexing(images, tmp_path / "index")
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted"], stderr
    assert wait_until_gone(process.pid, 10), "a decoding process outlived the interrupt"


def test_decoding_processes_leave_when_their_parent_is_killed(
    photo_variants: Any, tmp_path: Path
) -> None:
    images = photo_variants(tmp_path / "images", 400, side=160)
    process = start_indexing(images, tmp_path / "index")
    process.kill()
    process.communicate(timeout=30)
    try:
        assert wait_until_gone(process.pid, 15), "decoding processes outlived a SIGKILL"
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
