"""The approximate store's candidates found on a GPU (spyglass.store.gpu), and what
happens without one.

No GPU is there in CI: a simulated device (the CPU index searched as FAISS's GPU indexes
can be, without a row selector) stands in for it, so these tests check the store's
side: which searches go to the device, the selection applied after it, the rows added
since the save merged in, and the way back to the CPU when the device fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.cli.options import vector_search_settings
from spyglass.settings import RuntimeSettings
from spyglass.store.gpu import DeviceChoice, NoDevice, find_placer, keep_selected
from spyglass.store.memory import MemoryVectorStore

from .test_vector_store_contract import (
    DIMS,
    LAYOUTS,
    Reopened,
    SimulatedDevice,
    assert_selection,
    selection_reference,
    unit_rows,
)


def indexed(folder: Path, device: DeviceChoice, rows: int = 400, later: int = 30):
    """A saved index of ``rows`` rows plus ``later`` rows added after its save, read
    through a reader on ``device``; and the brute-force reference of the same rows."""
    rng = np.random.default_rng(3)
    store = Reopened(folder, LAYOUTS["mapped"], device)
    reference = MemoryVectorStore(DIMS)
    vectors = unit_rows(rng, rows + later)
    for part in (slice(0, rows), slice(rows, rows + later)):
        for target in (store, reference):
            target.add(np.arange(rows + later)[part], vectors[part])
            target.flush()
    return store, reference, vectors


def test_candidates_come_from_the_device_and_results_equal_brute_force(tmp_path: Path):
    device = SimulatedDevice()
    store, reference, vectors = indexed(tmp_path, DeviceChoice(find=lambda mode: device))
    reader = store.reader()
    assert "on simulated device" in reader.describe().summary
    queries = unit_rows(np.random.default_rng(4), 5)
    got, want = reader.search(queries, 10), reference.search(queries, 10)
    assert got.owners.tolist() == want.owners.tolist()
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
    # Rows added since the save are found beside the device's copy.
    assert reader.search(vectors[410:411], 1).owners[0, 0] == 410
    assert device.searches == 2


def test_hidden_rows_are_dropped_after_the_device_and_a_narrow_selection_stays_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import spyglass.store.ivf as ivf

    monkeypatch.setattr(ivf, "EXACT_SELECTION_ROWS", 10)
    device = SimulatedDevice()
    store, _, vectors = indexed(tmp_path, DeviceChoice(find=lambda mode: device))
    owners = np.arange(len(vectors))
    queries = unit_rows(np.random.default_rng(5), 4)
    hidden = [int(i) for i in range(0, 430, 7)]  # a seventh of the rows
    store.set_hidden(hidden)
    got = store.search(queries, 20)
    want = selection_reference(owners, vectors, queries, 20, owners, hidden)
    assert got.owners.tolist() == [[owner for owner, _ in ranked] for ranked in want]
    assert device.searches == 1
    wide = owners[owners % 5 != 0]  # with the hidden rows out, about two thirds
    assert_selection(store, owners, vectors, queries, 20, wide, hidden=hidden)
    assert device.searches == 2
    narrow = np.arange(1, 430, 9)  # a ninth: the device would need 9x the candidates
    assert_selection(store, owners, vectors, queries, 20, narrow, hidden=hidden)
    assert device.searches == 2


def test_a_device_that_fails_leaves_the_search_on_the_cpu_and_says_why(tmp_path: Path):
    class Failing(SimulatedDevice):
        def place(self, index):
            self.searches += 1
            raise RuntimeError("CUDA error: out of memory\nmore detail")

    device = Failing()
    store, reference, _ = indexed(tmp_path, DeviceChoice(find=lambda mode: device))
    reader = store.reader()
    queries = unit_rows(np.random.default_rng(6), 3)
    for _ in range(2):
        assert (
            reader.search(queries, 8).owners.tolist()
            == reference.search(queries, 8).owners.tolist()
        )
    assert device.searches == 1  # tried once, not at every search
    assert "on the CPU (the GPU failed: CUDA error: out of memory)" in reader.describe().summary


def test_without_a_gpu_the_store_says_so(tmp_path: Path):
    """This machine's FAISS (the faiss-cpu wheel, or a GPU build with no device) has no
    GPU to offer; ``--device cpu`` turns the GPU off whatever FAISS has."""
    found = find_placer("auto")
    assert isinstance(found, NoDevice)
    store, _, _ = indexed(tmp_path, DeviceChoice("auto"))
    assert f"on the CPU ({found.reason})" in store.reader().describe().summary
    assert find_placer("off") == NoDevice("GPU turned off")
    cpu = RuntimeSettings(cache_dir=tmp_path, device="cpu")
    chosen = vector_search_settings(None, cpu)
    assert chosen is not None and chosen.gpu == "off"
    assert vector_search_settings(None, RuntimeSettings(cache_dir=tmp_path)) is None


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 300),
    data=st.data(),
)
def test_keep_selected_drops_exactly_the_rows_outside_the_bitmap(rows: int, data) -> None:
    allowed = np.array(data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
    bitmap = np.packbits(allowed, bitorder="little")
    candidates = np.array(
        data.draw(st.lists(st.integers(-1, rows + 20), min_size=1, max_size=40)), np.int64
    ).reshape(1, -1)
    kept = keep_selected(candidates, bitmap)
    for before, after in zip(candidates[0].tolist(), kept[0].tolist(), strict=True):
        inside = 0 <= before < rows and bool(allowed[before])
        assert after == (before if inside else -1)
    assert keep_selected(candidates, None) is candidates
