"""Every vector store keeps one contract, checked against the brute-force reference
(MemoryVectorStore): the embedded exact store, and the approximate store in every layout
it can take (8-bit codes in memory, 4-bit PQ codes, the saved file memory-mapped with
rows added since, and that file's lists searched on a device as a GPU would: without a
row selector) with every cluster probed, where it must return exactly what the
reference returns.

Vectors are rounded to float16 first so that the on-disk precision does not make
scores differ from the reference's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spyglass.errors import IndexCorrupt
from spyglass.settings import VectorSearchSettings
from spyglass.store.base import VectorStore
from spyglass.store.gpu import DeviceChoice
from spyglass.store.ivf import IvfVectorStore
from spyglass.store.local import LocalVectorStore
from spyglass.store.memory import MemoryVectorStore

DIMS = 16
#: Every cluster probed: the candidates then hold every row and the result is exact.
EXHAUSTIVE = VectorSearchSettings(
    kind="approximate", nprobe=1024, rescore=1000, build_in_background=False
)
LAYOUTS = {
    "sq8": EXHAUSTIVE,
    "pq": replace(EXHAUSTIVE, codes="PQ8x4fs"),
    # The writer saves its first index only: the rows of later flushes reach a reader
    # through its own in-memory index beside the memory-mapped file.
    "mapped": replace(EXHAUSTIVE, retrain_growth=1000.0, save_growth=1000.0),
    # No index, and float32 copies of the rows over the budget: every search reads the
    # float16 rows (what an approximate store whose index failed to build does at 10M).
    "streamed": VectorSearchSettings(kind="exact", memory_budget=1),
}


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIMS)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)


class SimulatedDevice:
    """A stand-in for a GPU (none on CI): ``place`` keeps the CPU index and searches it
    the way FAISS's GPU indexes can, with nprobe but no row selector, counting searches.
    What it checks is the store's side: asking for more candidates, dropping rows
    outside the selection, merging the rows added since the save, widening."""

    where = "simulated device"

    def __init__(self) -> None:
        self.searches = 0

    def place(self, index):
        device = self

        class Placed:
            def search(self, queries: np.ndarray, k: int, nprobe: int) -> np.ndarray:
                import faiss

                device.searches += 1
                params = faiss.SearchParametersIVF(nprobe=nprobe)
                return index.search(queries, k, params=params)[1]

        return Placed()


class Reopened:
    """A writer that builds and saves the index at each flush, searched through a
    reader opened afterwards: the saved file memory-mapped, and rows added since the
    last save held apart (what a search process sees while indexing goes on)."""

    dims = DIMS

    def __init__(
        self, folder: Path, settings: VectorSearchSettings, device: DeviceChoice | None = None
    ) -> None:
        self.folder, self.settings, self.device = folder, settings, device
        self.writer = IvfVectorStore(folder, "joint", DIMS, 0, writer=True, settings=settings)
        self.hidden: dict[int, bool] = {}

    def reader(self) -> IvfVectorStore:
        reader = IvfVectorStore(
            self.folder, "joint", DIMS, len(self.writer), settings=self.settings, device=self.device
        )
        for owner, hidden in self.hidden.items():
            reader.set_hidden([owner], hidden)
        return reader

    def __len__(self) -> int:
        return len(self.writer)

    def add(self, owners: np.ndarray, vectors: np.ndarray) -> None:
        self.writer.add(owners, vectors)

    def flush(self) -> int:
        return self.writer.flush()

    def set_hidden(self, owners, hidden: bool = True) -> None:
        for owner in owners:
            self.hidden[int(owner)] = hidden

    def search(self, queries: np.ndarray, k: int, among: np.ndarray | None = None):
        return self.reader().search(queries, k, among=among)

    def fetch(self, owners: np.ndarray) -> np.ndarray:
        return self.reader().fetch(owners)

    def visible_owners(self) -> np.ndarray:
        return self.reader().visible_owners()


def milvus_lite_store(folder: Path) -> VectorStore:
    """A Milvus Lite store (FLAT: exact) in a fresh .db under ``folder``; skipped without
    the milvus extra. Milvus Lite runs inside this process: nothing else is needed."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from spyglass.store.milvus import MilvusVectorStore, parse_milvus_url

    location = parse_milvus_url(f"milvus://{folder}/vectors.db", folder)
    return MilvusVectorStore(location, "joint", DIMS, 0, writer=True, owner="contract")


@pytest.fixture(
    params=[
        "memory",
        "local",
        "ivf-sq8",
        "ivf-pq",
        "ivf-mapped",
        "ivf-device",
        "ivf-streamed",
        "milvus-lite",
    ]
)
def make_store(request, tmp_path: Path) -> Callable[[], VectorStore]:
    def make() -> VectorStore:
        kind = request.param
        if kind == "memory":
            return MemoryVectorStore(DIMS)
        if kind == "milvus-lite":
            return milvus_lite_store(tmp_path)
        if kind == "local":
            return LocalVectorStore(tmp_path / "vectors", "joint", DIMS, 0, writer=True)
        layout = kind.removeprefix("ivf-")
        if layout == "mapped":
            return Reopened(tmp_path / "vectors", LAYOUTS["mapped"])  # type: ignore[return-value]
        if layout == "device":
            device = DeviceChoice(find=lambda mode: SimulatedDevice())
            return Reopened(tmp_path / "vectors", LAYOUTS["mapped"], device)  # type: ignore[return-value]
        return IvfVectorStore(
            tmp_path / "vectors", "joint", DIMS, 0, writer=True, settings=LAYOUTS[layout]
        )

    return make


def filled(make_store, owners: np.ndarray, vectors: np.ndarray):
    store, reference = make_store(), MemoryVectorStore(DIMS)
    for s in (store, reference):
        s.add(owners, vectors)
        s.flush()
    return store, reference


def assert_same(store, reference: MemoryVectorStore, queries: np.ndarray, k: int) -> None:
    got, want = store.search(queries, k), reference.search(queries, k)
    np.testing.assert_array_equal(got.owners, want.owners)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_search_matches_brute_force(make_store):
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng, 300)
    store, reference = filled(make_store, np.arange(300), vectors)
    queries = unit_rows(rng, 7)
    for k in (1, 10, 300, 400):
        assert_same(store, reference, queries, k)
    result = store.search(queries, 400)
    assert (result.owners[:, 300:] == -1).all() and np.isneginf(result.scores[:, 300:]).all()


def test_hidden_owners_never_come_back_until_shown(make_store):
    rng = np.random.default_rng(1)
    store, reference = filled(make_store, np.arange(100), unit_rows(rng, 100))
    hidden = list(range(0, 100, 3))
    for s in (store, reference):
        s.set_hidden(hidden)
    queries = unit_rows(rng, 5)
    result = store.search(queries, 100)
    assert not set(result.owners.ravel().tolist()) & set(hidden)
    assert_same(store, reference, queries, 50)
    assert sorted(store.visible_owners().tolist()) == [i for i in range(100) if i not in hidden]
    for s in (store, reference):
        s.set_hidden(hidden[:5], False)
    assert_same(store, reference, queries, 100)


def test_several_rows_per_owner_score_by_best_row(make_store):
    rng = np.random.default_rng(2)
    owners = np.repeat(np.arange(40), 5)  # five crops per image
    store, reference = filled(make_store, owners, unit_rows(rng, 200))
    queries = unit_rows(rng, 4)
    assert_same(store, reference, queries, 10)
    assert_same(store, reference, queries, 40)
    result = store.search(queries, 40)
    for row in result.owners:
        assert len(set(row.tolist())) == 40  # each owner once


def test_fetch_returns_each_owners_first_row(make_store):
    rng = np.random.default_rng(3)
    owners = np.repeat(np.arange(10), 2)
    vectors = unit_rows(rng, 20)
    store, _ = filled(make_store, owners, vectors)
    np.testing.assert_allclose(store.fetch(np.array([3, 0, 9])), vectors[[6, 0, 18]], atol=1e-3)
    with pytest.raises(KeyError):
        store.fetch(np.array([10]))


def test_adding_after_search_is_seen(make_store):
    rng = np.random.default_rng(4)
    store, reference = filled(make_store, np.arange(50), unit_rows(rng, 50))
    queries = unit_rows(rng, 3)
    store.search(queries, 5)
    more = unit_rows(rng, 50)
    for s in (store, reference):
        s.add(np.arange(50, 100), more)
        s.flush()
    assert len(store) == 100
    assert_same(store, reference, queries, 20)


def test_wrong_dimensions_are_refused(make_store):
    store = make_store()
    with pytest.raises(ValueError):
        store.add(np.arange(2), np.zeros((2, DIMS + 1), np.float32))


def test_equal_scores_are_ordered_by_owner(make_store):
    """Ties break by owner id in every store (FAISS alone returns them in reverse)."""
    rng = np.random.default_rng(3)
    vectors = unit_rows(rng, 60)
    vectors[[11, 25, 40]] = vectors[5]  # four owners, one vector
    store, reference = filled(make_store, np.arange(60), vectors)
    got = store.search(vectors[5:6], 6)
    assert got.owners[0, :4].tolist() == [5, 11, 25, 40]
    assert_same(store, reference, vectors[5:6], 6)


@pytest.mark.parametrize(
    "make_store", ["ivf-sq8", "ivf-pq", "ivf-mapped", "ivf-device"], indirect=True
)
def test_every_approximate_layout_searches_through_its_index(make_store):
    """The cases above would pass with exact search too: this one fails without the
    approximate path (FAISS counts the queries its inverted lists answered)."""
    import faiss

    rng = np.random.default_rng(6)
    store, _ = filled(make_store, np.arange(300), unit_rows(rng, 300))
    searched = store.reader() if isinstance(store, Reopened) else store
    assert searched.describe().kind == "approximate"
    faiss.cvar.indexIVF_stats.reset()
    searched.search(unit_rows(rng, 3), 5)
    assert faiss.cvar.indexIVF_stats.nq == 3


def test_local_store_cuts_uncommitted_rows_when_a_writer_opens(tmp_path: Path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "vectors"
    store = LocalVectorStore(folder, "joint", DIMS, 0, writer=True)
    store.add(np.arange(10), unit_rows(rng, 10))
    committed = store.flush()
    store.add(np.arange(10, 15), unit_rows(rng, 5))
    store.flush()  # written to disk, but the catalogue never recorded these 5 rows
    reader = LocalVectorStore(folder, "joint", DIMS, committed)
    assert (folder / "joint.f16").stat().st_size == 15 * DIMS * 2  # readers never cut
    assert len(reader) == 10
    writer = LocalVectorStore(folder, "joint", DIMS, committed, writer=True)
    assert (folder / "joint.f16").stat().st_size == 10 * DIMS * 2
    assert (folder / "joint.ids").stat().st_size == 10 * 8
    assert sorted(writer.visible_owners().tolist()) == list(range(10))


def test_local_store_with_fewer_rows_than_committed_is_reported_corrupt(tmp_path: Path):
    folder = tmp_path / "vectors"
    store = LocalVectorStore(folder, "joint", DIMS, 0, writer=True)
    store.add(np.arange(3), np.eye(3, DIMS, dtype=np.float32))
    store.flush()
    with pytest.raises(IndexCorrupt):
        LocalVectorStore(folder, "joint", DIMS, 5, writer=True)


@pytest.mark.parametrize("make_store", ["local", "ivf-sq8"], indirect=True)
def test_a_batch_is_answered_as_its_queries_one_by_one(make_store):
    """Batches of 4 queries or more are scored by BLAS (FAISS's wheel default sends only
    calls of 250+ queries of 512 dims there, up to 9x slower): same answers as one by
    one, ties by owner included."""
    import faiss

    from spyglass.store.local import BLAS_FROM_QUERIES

    rng = np.random.default_rng(21)
    vectors = unit_rows(rng, 300)
    vectors[150:160] = vectors[0]  # ties
    store, _ = filled(make_store, np.arange(300), vectors)
    queries = np.vstack([vectors[:40], unit_rows(rng, 24)])
    faiss.cvar.distance_compute_blas_threshold = 128_000
    batch = store.search(queries, 12)
    assert faiss.cvar.distance_compute_blas_threshold == BLAS_FROM_QUERIES * DIMS
    for i in range(0, len(queries), 7):
        single = store.search(queries[i : i + 1], 12)
        np.testing.assert_array_equal(batch.owners[i], single.owners[0])
        np.testing.assert_allclose(batch.scores[i], single.scores[0], atol=1e-5)


def selection_reference(owners: np.ndarray, vectors: np.ndarray, queries, k, among, hidden=()):
    """The filtered brute force, written out with NumPy alone: score every row, keep the
    rows whose owner is selected and not hidden, best row per owner, ties by owner."""
    keep = np.isin(owners, among) & ~np.isin(owners, list(hidden))
    scores = queries @ vectors[keep].T
    kept_owners = owners[keep]
    ranked = []
    for row in scores:
        best: dict[int, float] = {}
        for owner, score in zip(kept_owners.tolist(), row.tolist(), strict=True):
            best[owner] = max(best.get(owner, -np.inf), score)
        ranked.append(sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k])
    return ranked


def assert_selection(store, owners, vectors, queries, k, among, hidden=()) -> None:
    got = store.search(queries, k, among=among)
    want = selection_reference(owners, vectors, queries, k, among, hidden)
    for i, ranked in enumerate(want):
        assert got.owners[i, : len(ranked)].tolist() == [o for o, _ in ranked]
        np.testing.assert_allclose(got.scores[i, : len(ranked)], [s for _, s in ranked], atol=1e-5)
        assert (got.owners[i, len(ranked) :] == -1).all()


def test_a_selection_returns_the_filtered_brute_force(make_store):
    """Only selected owners come back, exactly as brute force over the selection ranks
    them, with hidden owners still left out and crops scored by their best row."""
    rng = np.random.default_rng(30)
    owners = np.arange(400)
    vectors = unit_rows(rng, 400)
    store, _ = filled(make_store, owners, vectors)
    queries = unit_rows(rng, 4)
    among = np.sort(rng.choice(400, 120, replace=False))
    for k in (1, 10, 120, 200):
        assert_selection(store, owners, vectors, queries, k, among)
    store.set_hidden(among[:7].tolist())
    assert_selection(store, owners, vectors, queries, 30, among, hidden=among[:7].tolist())
    assert (store.search(queries, 5, among=np.zeros(0, np.int64)).owners == -1).all()


def test_a_selection_of_crops_scores_each_owner_by_its_best_row(make_store):
    rng = np.random.default_rng(31)
    owners = np.repeat(np.arange(60), 4)
    vectors = unit_rows(rng, 240)
    store, _ = filled(make_store, owners, vectors)
    among = np.array([3, 8, 9, 20, 41, 59])
    assert_selection(store, owners, vectors, unit_rows(rng, 3), 5, among)


def test_a_selection_far_from_the_query_still_returns_k(make_store):
    """A 0.1% selection whose rows all score below thousands of others: a search that
    filtered its results afterwards would return nothing; this one returns all k."""
    rng = np.random.default_rng(32)
    n = 6000
    vectors = unit_rows(rng, n)
    query = vectors[:1].copy()
    # The selected owners point away from the query: every other row outranks them.
    among = np.sort(rng.choice(np.arange(1, n), 6, replace=False))
    vectors[among] = -vectors[among] * np.sign(vectors[among] @ query.T)
    vectors = vectors.astype(np.float16).astype(np.float32)
    owners = np.arange(n)
    store, _ = filled(make_store, owners, vectors)
    assert_selection(store, owners, vectors, query, 5, among)
    assert (store.search(query, 5, among=among).owners >= 0).all()


def test_a_large_selection_goes_through_the_stores_own_filtering(make_store, monkeypatch):
    """Past EXACT_SELECTION_ROWS the IVF store filters inside its inverted lists (a
    bitmap selector, widening until k are found) instead of scoring the selected rows
    itself: same answers. (The other cases here select fewer rows than that.)"""
    import spyglass.store.ivf as ivf

    monkeypatch.setattr(ivf, "EXACT_SELECTION_ROWS", 10)
    rng = np.random.default_rng(33)
    owners = np.arange(500)
    vectors = unit_rows(rng, 500)
    store, _ = filled(make_store, owners, vectors)
    queries = unit_rows(rng, 5)
    for share in (0.04, 0.3, 0.8):
        among = np.sort(rng.choice(500, int(500 * share), replace=False))
        assert_selection(store, owners, vectors, queries, 40, among)
    store.set_hidden([int(among[0])])
    assert_selection(store, owners, vectors, queries, 40, among, hidden=[int(among[0])])
