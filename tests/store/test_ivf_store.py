"""The approximate store beyond the contract: the factory's choice, the saved index's
life (built, reopened without training or loading the rows, extended, retrained,
discarded when stale), and a CI-sized check of the approximate path against exact.

The 200k test uses 256 dimensions rather than CLIP's 512 so that it stays well under a
minute on a 2-core machine; the code path is the same (docs/performance.md has 512-d).
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spyglass.bench.search import SPACE, VectorMixture, write_space
from spyglass.errors import ApproximateIndexFailed, IndexProblem
from spyglass.settings import VectorSearchSettings
from spyglass.store import ivf
from spyglass.store.factory import finish_building, open_vector_store
from spyglass.store.ivf import IvfVectorStore, choose_layout, exact_top
from spyglass.store.local import LocalVectorStore

ROWS, DIMS = 200_000, 256
#: Builds inside flush, so that a test sees the index the flush made.
NOW = VectorSearchSettings(kind="approximate", build_in_background=False)


def unit_rows(rng: np.random.Generator, n: int, dims: int = 32) -> np.ndarray:
    x = rng.normal(size=(n, dims)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)


def written(folder: Path, n: int, *, dims: int = 32, seed: int = 0, settings=NOW):
    """A writer store of ``n`` clustered rows (owner = row), flushed (so built)."""
    store = IvfVectorStore(folder, "joint", dims, 0, writer=True, settings=settings)
    vectors = np.vstack(list(VectorMixture.synthetic(dims, clusters=50, seed=seed).chunks(n, seed)))
    store.add(np.arange(n), vectors)
    store.flush()
    return store, vectors


def record(folder: Path) -> dict:
    return json.loads((folder / "joint.ivf.json").read_text())


# -- the factory --------------------------------------------------------------------------


def test_factory_searches_small_spaces_exactly_and_large_ones_approximately(tmp_path: Path):
    settings = VectorSearchSettings(approximate_from_rows=1000)
    small = open_vector_store(tmp_path, "joint", 8, 0, settings=settings)
    assert type(small) is LocalVectorStore
    (tmp_path / "joint.f16").write_bytes(bytes(1000 * 8 * 2))
    (tmp_path / "joint.ids").write_bytes(np.arange(1000, dtype=np.int64).tobytes())
    large = open_vector_store(tmp_path, "joint", 8, 1000, settings=settings)
    assert isinstance(large, IvfVectorStore)
    # A writer may cross the threshold while it indexes, so it gets the store that can.
    assert isinstance(open_vector_store(tmp_path, "joint", 8, 0, writer=True), IvfVectorStore)
    exact = VectorSearchSettings(kind="exact")
    assert type(open_vector_store(tmp_path, "joint", 8, 1000, settings=exact)) is LocalVectorStore


def test_below_the_threshold_the_store_searches_exactly_and_builds_nothing(tmp_path: Path):
    settings = replace(NOW, kind="auto", approximate_from_rows=5000)
    store, _ = written(tmp_path, 4000, settings=settings)
    assert store.describe().kind == "exact"
    assert not (tmp_path / "joint.ivf").exists()
    more = unit_rows(np.random.default_rng(1), 1000)
    store.add(np.arange(4000, 5000), more)
    store.flush()  # reaches the threshold: the index is built
    assert store.describe().kind == "approximate"
    assert (tmp_path / "joint.ivf").exists()


def test_memory_budget_picks_the_codes():
    assert choose_layout(1_000_000, 512).codes == "SQ8"
    # 8-bit codes need 520 MB for a million 512-d rows; 4-bit PQ128 needs 72 MB.
    assert choose_layout(1_000_000, 512, memory_budget=600 * 2**20).codes == "SQ8"
    assert choose_layout(1_000_000, 512, memory_budget=100 * 2**20).codes == "PQ128x4fs"
    assert choose_layout(1_000_000, 512, memory_budget=35 * 2**20).codes == "PQ32x4fs"
    with pytest.raises(IndexProblem, match="cannot hold"):
        choose_layout(1_000_000, 512, memory_budget=10 * 2**20)
    assert choose_layout(1_000_000, 512).lists == 4096  # about 4 x sqrt(rows)


def test_a_budget_that_excludes_8_bit_codes_builds_pq(tmp_path: Path):
    n, dims = 3000, 32
    budget = n * (dims + 8)  # the 8-bit codes alone fill it
    store, _ = written(tmp_path, n, dims=dims, settings=replace(NOW, memory_budget=budget))
    assert record(tmp_path)["layout"].endswith("x4fs")
    assert "PQ" in store.describe().summary


# -- the saved index ----------------------------------------------------------------------


def test_a_reader_maps_the_saved_index_without_training_or_loading_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import faiss

    writer, vectors = written(tmp_path, 3000)
    queries = vectors[:5]
    expected = writer.search(queries, 10)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reader must not do this")

    monkeypatch.setattr(ivf, "train_ivf", refuse)
    monkeypatch.setattr(LocalVectorStore, "_index", refuse)  # the exact path's full load
    reader = IvfVectorStore(tmp_path, "joint", 32, 3000, settings=NOW)
    got = reader.search(queries, 10)
    np.testing.assert_array_equal(got.owners, expected.owners)
    assert reader._loaded is not None
    lists = faiss.downcast_InvertedLists(reader._loaded.index.invlists)
    assert type(lists).__name__ == "OnDiskInvertedLists"  # memory-mapped, not read in


def test_rows_added_after_the_save_are_found_by_a_reader(tmp_path: Path):
    settings = replace(NOW, save_growth=10.0, retrain_growth=10.0)
    writer, _ = written(tmp_path, 3000, settings=settings)
    rng = np.random.default_rng(2)
    more = unit_rows(rng, 200)
    writer.add(np.arange(3000, 3200), more)
    writer.flush()
    assert record(tmp_path)["rows"] == 3000  # not saved again: 200 rows are few
    reader = IvfVectorStore(tmp_path, "joint", 32, 3200, settings=settings)
    got = reader.search(more[:20], 1)
    assert got.owners[:, 0].tolist() == list(range(3000, 3020))


def test_the_writer_saves_again_once_enough_rows_are_new_and_retrains_after_growth(
    tmp_path: Path,
):
    settings = replace(NOW, save_growth=0.1, retrain_growth=2.0)
    writer, _ = written(tmp_path, 3000, settings=settings)
    rng = np.random.default_rng(3)
    writer.add(np.arange(3000, 3400), unit_rows(rng, 400))
    writer.flush()  # 400 new rows >= 10% of 3000: saved again, same clusters
    assert (record(tmp_path)["rows"], record(tmp_path)["trained_rows"]) == (3400, 3000)
    writer.add(np.arange(3400, 6000), unit_rows(rng, 2600))
    writer.flush()  # 6000 >= 2 x 3000: trained again
    assert (record(tmp_path)["rows"], record(tmp_path)["trained_rows"]) == (6000, 6000)


def test_a_writer_discards_an_index_over_rows_never_committed(tmp_path: Path):
    written(tmp_path, 3000)
    (tmp_path / "joint.ivf.tmp").write_bytes(b"half a save")
    # The catalogue committed 2000 rows: the writer cuts the rest, so the index is stale.
    writer = IvfVectorStore(tmp_path, "joint", 32, 2000, writer=True, settings=NOW)
    assert not (tmp_path / "joint.ivf").exists()
    assert not (tmp_path / "joint.ivf.tmp").exists()
    assert writer.describe().kind == "exact"


def test_a_reader_behind_the_writer_never_returns_rows_it_has_not_seen(tmp_path: Path):
    _, vectors = written(tmp_path, 3000)
    reader = IvfVectorStore(tmp_path, "joint", 32, 2500, settings=NOW)  # saw 2500 rows
    got = reader.search(vectors[2900:2950], 20)
    assert got.owners.max() < 2500
    assert (got.owners >= 0).all()


def test_a_reader_picks_up_a_newer_saved_index_on_reload(tmp_path: Path):
    writer, _ = written(tmp_path, 3000)
    reader = IvfVectorStore(tmp_path, "joint", 32, 3000, settings=NOW)
    assert reader.describe().rows == 3000
    old = reader._loaded
    writer.add(np.arange(3000, 6000), unit_rows(np.random.default_rng(4), 3000))
    writer.flush()  # doubled: retrained and saved
    reader.reload(6000)
    assert reader.describe().rows == 6000
    assert reader._loaded is not old and reader._loaded.record.trained_rows == 6000


def test_a_background_build_serves_searches_exactly_until_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    release = threading.Event()
    train = ivf.train_ivf

    def slow_train(*args, **kwargs):
        release.wait(timeout=60)
        return train(*args, **kwargs)

    monkeypatch.setattr(ivf, "train_ivf", slow_train)
    settings = replace(NOW, build_in_background=True)
    store = IvfVectorStore(tmp_path, "joint", 32, 0, writer=True, settings=settings)
    vectors = unit_rows(np.random.default_rng(5), 3000)
    store.add(np.arange(3000), vectors)
    store.flush()  # returns while the index trains
    assert store.building
    assert "being built" in store.describe().summary
    got = store.search(vectors[:3], 1)  # exact meanwhile
    assert got.owners[:, 0].tolist() == [0, 1, 2]
    release.set()
    store.wait_for_index()
    assert store.describe().kind == "approximate"


def test_a_failed_build_does_not_fail_the_flush(tmp_path: Path):
    store = IvfVectorStore(
        tmp_path, "joint", 32, 0, writer=True, settings=replace(NOW, codes="PQ7x4fs")
    )
    store.add(np.arange(100), unit_rows(np.random.default_rng(6), 100))
    assert store.flush() == 100  # rows are durable; the index could not be built
    assert "not built" in store.describe().summary
    with pytest.raises(IndexProblem, match="PQ7x4fs"):
        store.wait_for_index()


def test_crops_with_few_probes_still_return_each_owner_once(tmp_path: Path):
    settings = replace(NOW, nprobe=1, rescore=8)
    store = IvfVectorStore(tmp_path, "joint", 32, 0, writer=True, settings=settings)
    vectors = np.vstack(list(VectorMixture.synthetic(32, clusters=50).chunks(4000, 0)))
    store.add(np.repeat(np.arange(400), 10), vectors)  # ten crops per image
    store.flush()
    got = store.search(vectors[:5], 30)
    for row in got.owners:
        assert len(set(row.tolist())) == 30 and (row >= 0).all()


# -- CI-sized: approximate against exact --------------------------------------------------


@pytest.fixture(scope="module")
def large_space(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VectorMixture]:
    folder = tmp_path_factory.mktemp("ivf-200k")
    mixture = VectorMixture.synthetic(DIMS, seed=0)
    write_space(folder, mixture, ROWS, seed=0)
    IvfVectorStore(folder, SPACE, DIMS, ROWS, writer=True, settings=NOW).update_index()
    return folder, mixture


def test_approximate_search_at_200k_is_within_its_stated_recall_of_exact(large_space):
    import faiss

    folder, mixture = large_space
    store = open_vector_store(folder, SPACE, DIMS, ROWS)  # default settings: auto
    assert isinstance(store, IvfVectorStore)
    method = store.describe()
    assert method.kind == "approximate" and method.recall_at_10 is not None
    assert method.recall_at_10 >= 0.95  # stated: the target it chose nprobe for
    queries = mixture.sample(200, np.random.default_rng(7))
    matrix = np.memmap(folder / f"{SPACE}.f16", np.float16, mode="r", shape=(ROWS, DIMS))
    truth = exact_top(queries, matrix, 10)
    faiss.cvar.indexIVF_stats.reset()
    got = store.search(queries, 10)
    scanned = faiss.cvar.indexIVF_stats.ndis
    recall = (
        np.mean([len(np.intersect1d(a, b)) for a, b in zip(got.owners, truth, strict=True)]) / 10
    )
    assert recall >= 0.95
    assert recall >= method.recall_at_10 - 0.03  # held-out queries: as stated, give or take
    # Approximate in what it looks at (a few percent of the rows), exact in its scores.
    assert scanned < 0.1 * ROWS * len(queries)
    exact_scores = np.einsum("qkd,qd->qk", matrix[got.owners].astype(np.float32), queries)
    np.testing.assert_allclose(got.scores, exact_scores, atol=1e-5)


def test_hidden_rows_at_200k_are_skipped_and_k_results_still_come_back(large_space):
    folder, mixture = large_space
    store = open_vector_store(folder, SPACE, DIMS, ROWS)
    hidden = np.arange(ROWS)[np.arange(ROWS) % 10 != 0]  # 90% of the images deleted
    store.set_hidden(hidden.tolist())
    got = store.search(mixture.sample(20, np.random.default_rng(8)), 10)
    assert (got.owners >= 0).all() and (got.owners % 10 == 0).all()


def test_an_index_opens_its_spaces_through_the_factory_with_its_settings(tmp_path: Path):
    from spyglass.encoders.base import EncoderInfo
    from spyglass.store.catalogue import NewImage
    from spyglass.store.index import Index

    info = EncoderInfo("hand-made", "1", {"joint": 32})
    vectors = unit_rows(np.random.default_rng(9), 500)
    images = [NewImage(f"{i:064x}", 1, 1, "png") for i in range(500)]
    files = [(f"/photos/{i}.png", 1, 1, i) for i in range(500)]
    with Index.open_for_writing(tmp_path, info, vector_search=NOW) as index:
        index.commit(images, {"joint": vectors}, files)
    with Index.open(tmp_path, vector_search=NOW) as index:
        assert index.stores["joint"].describe().kind == "approximate"  # type: ignore[attr-defined]
    with Index.open(tmp_path) as index:  # default: 500 rows are searched exactly
        assert type(index.stores["joint"]) is LocalVectorStore


def test_a_writer_builds_the_index_of_rows_indexed_before_there_was_one(tmp_path: Path):
    before = LocalVectorStore(tmp_path, "joint", 32, 0, writer=True)
    before.add(np.arange(3000), unit_rows(np.random.default_rng(10), 3000))
    before.flush()
    writer = IvfVectorStore(tmp_path, "joint", 32, 3000, writer=True, settings=NOW)
    assert writer.describe().kind == "exact"
    writer.maintain()
    assert writer.describe().kind == "approximate"
    assert record(tmp_path)["rows"] == 3000


# -- failed builds ------------------------------------------------------------------------


def test_a_failed_save_is_told_once_and_the_space_stays_searchable_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A full disk while FAISS writes the index (FAISS says only that the write failed):
    the rows are durable, searches are exact, the failure is raised once by
    wait_for_index with the disk named, this writer does not try again at every flush,
    and the next writer builds the index."""
    import shutil

    import faiss

    def full_disk(index: object, path: str) -> None:
        raise RuntimeError("Error in FileIOWriter: write failed")

    monkeypatch.setattr(faiss, "write_index", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0))
    trained = []
    train = ivf.train_ivf
    monkeypatch.setattr(ivf, "train_ivf", lambda *a, **k: trained.append(1) or train(*a, **k))
    store, vectors = written(tmp_path, 3000)  # builds inside the flush, which succeeds
    assert len(store) == 3000 and not (tmp_path / "joint.ivf").exists()
    assert not (tmp_path / "joint.ivf.tmp").exists()
    method = store.describe()
    assert method.kind == "exact" and "not built: the disk holding" in method.summary
    exact = LocalVectorStore(tmp_path, "joint", 32, 3000).search(vectors[:20], 10)
    got = store.search(vectors[:20], 10)
    np.testing.assert_array_equal(got.owners, exact.owners)
    with pytest.raises(ApproximateIndexFailed, match=r"disk holding .* is full") as failed:
        store.wait_for_index()
    assert "\n" not in str(failed.value) and "'joint'" in str(failed.value)
    store.wait_for_index()  # told once
    store.add(np.arange(3000, 3500), unit_rows(np.random.default_rng(11), 500))
    store.flush()
    assert trained == [1]  # not again in this process
    monkeypatch.undo()
    again = IvfVectorStore(tmp_path, "joint", 32, 3500, writer=True, settings=NOW)
    again.maintain()
    assert again.describe().kind == "approximate" and record(tmp_path)["rows"] == 3500


def test_running_out_of_memory_while_building_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(ivf, "train_ivf", out_of_memory)
    store, _ = written(tmp_path, 3000, settings=replace(NOW, build_in_background=True))
    failure = finish_building([store])
    assert isinstance(failure, ApproximateIndexFailed)
    assert "'joint' was not built: out of memory" in str(failure)
    assert finish_building([store]) is None  # told once; not built again in this process


def test_a_budget_too_small_for_any_layout_is_told_with_the_size_needed(tmp_path: Path):
    store = IvfVectorStore(
        tmp_path, "joint", 32, 0, writer=True, settings=replace(NOW, memory_budget=1000)
    )
    store.add(np.arange(3000), unit_rows(np.random.default_rng(12), 3000))
    store.flush()
    failure = finish_building([store])
    assert "a memory budget of 1000 B cannot hold an approximate index of 3,000 rows" in str(
        failure
    )
    assert "it needs at least 38 KiB" in str(failure)  # 9 bytes a row (PQ2x4fs) + centroids


# -- the memory budget --------------------------------------------------------------------


def test_a_memory_budget_makes_spaces_approximate_once_their_float32_rows_exceed_it(
    tmp_path: Path,
):
    (tmp_path / "joint.f16").write_bytes(bytes(1000 * 8 * 2))
    (tmp_path / "joint.ids").write_bytes(np.arange(1000, dtype=np.int64).tobytes())
    fits = VectorSearchSettings(memory_budget=1000 * 8 * 4)
    assert type(open_vector_store(tmp_path, "joint", 8, 1000, settings=fits)) is LocalVectorStore
    tight = VectorSearchSettings(memory_budget=1000 * 8 * 4 - 1)
    assert isinstance(open_vector_store(tmp_path, "joint", 8, 1000, settings=tight), IvfVectorStore)
    assert not VectorSearchSettings(kind="exact", memory_budget=1).wants_approximate(10, 8)


def test_a_budget_given_later_retrains_the_index_to_fit_it(tmp_path: Path):
    written(tmp_path, 3000)
    assert record(tmp_path)["layout"].endswith("SQ8")
    budget = 3000 * (32 + 8)  # below what the 8-bit codes take
    writer = IvfVectorStore(
        tmp_path, "joint", 32, 3000, writer=True, settings=replace(NOW, memory_budget=budget)
    )
    writer.maintain()
    assert record(tmp_path)["layout"].endswith("x4fs")
    assert ivf.IvfLayout.parse(record(tmp_path)["layout"]).memory(3000, 32) <= budget


# -- many lists ---------------------------------------------------------------------------


def test_many_rows_find_their_list_through_groups_as_well_as_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """From ``_GROUPED_FROM_LISTS`` lists on, added rows are assigned through groups of
    lists (FAISS's flat assignment would take an hour at 10M rows): the rows land in
    their nearest list or one nearly as near, and recall is that of the flat
    assignment."""
    rows = np.vstack(list(VectorMixture.synthetic(32, clusters=50, seed=3).chunks(20_000, 3)))
    layout = ivf.IvfLayout(256, "SQ8")
    flat = ivf.train_ivf(rows, layout)
    grouped = ivf.train_ivf(rows, layout)
    ivf._add_rows(flat, rows, 0, len(rows))
    monkeypatch.setattr(ivf, "_GROUPED_FROM_LISTS", 256)
    calls = []
    assign = ivf.GroupAssigner.__call__
    monkeypatch.setattr(ivf.GroupAssigner, "__call__", lambda s, x: calls.append(1) or assign(s, x))
    ivf._add_rows(grouped, rows, 0, len(rows))
    assert calls  # the groups were used
    centroids = grouped.quantizer.reconstruct_n(0, 256)
    nearest = np.argmax(rows[:2000] @ centroids.T, axis=1)
    found = ivf.GroupAssigner(centroids)(rows[:2000])
    assert np.mean(found == nearest) > 0.95
    lost = (rows[:2000] * centroids[nearest]).sum(1) - (rows[:2000] * centroids[found]).sum(1)
    assert lost.mean() < 0.005 and np.percentile(lost, 99) < 0.05  # when not the nearest
    want = ivf.measure_recall(flat, rows, 50, nprobes=(8, 16))
    got = ivf.measure_recall(grouped, rows, 50, nprobes=(8, 16))
    for nprobe, recall in want.items():
        assert got[nprobe] >= recall - 0.02


def test_the_failures_of_several_spaces_are_one_line():
    failure = ApproximateIndexFailed.of_all(
        [
            ApproximateIndexFailed({"image": "out of memory"}),
            ApproximateIndexFailed({"joint": "a full disk"}),
        ]
    )
    assert str(failure) == (
        "the approximate indexes were not built (space 'image': out of memory; space "
        "'joint': a full disk); their rows are searched exactly until a later run builds them"
    )


def test_without_an_index_rows_too_large_for_memory_are_read_from_the_float16_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A budget that neither the float32 copy of the exact store nor any index fits (at
    10M x 512 the copy alone is 20 GB): searches stay exact, reading the float16 rows,
    hidden owners and owners with several rows included."""
    rng = np.random.default_rng(13)
    vectors = unit_rows(rng, 3000)
    owners = np.repeat(np.arange(1000), 3)  # three rows (crops) per owner
    store = IvfVectorStore(
        tmp_path, "joint", 32, 0, writer=True, settings=replace(NOW, memory_budget=1000)
    )
    store.add(owners, vectors)
    store.flush()
    assert finish_building([store]) is not None  # no index fits 1000 bytes
    store.set_hidden([5, 6])

    def refuse(*args: object) -> None:
        raise AssertionError("the float32 copy must not be made")

    monkeypatch.setattr(LocalVectorStore, "_index", refuse)
    assert "float16 file" in store.describe().summary
    queries = vectors[[15, 18, 300, 2999]]
    got = store.search(queries, 10)
    scores = queries @ vectors.T
    for i, row in enumerate(scores):
        best = {}
        for r in np.argsort(-row):
            if owners[r] not in (5, 6):
                best.setdefault(int(owners[r]), float(row[r]))
        want = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:10]
        assert [owner for owner, _ in got.row(i)] == [owner for owner, _ in want]
        np.testing.assert_allclose([s for _, s in got.row(i)], [s for _, s in want], atol=1e-5)


def test_re_scored_rows_are_read_not_memory_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Mapped, every row re-scored brought a page-cache folio into the process (a 10M
    index looked 12 GB resident); read with pread, what is resident is the index."""
    _, vectors = written(tmp_path, 3000)
    reader = IvfVectorStore(tmp_path, "joint", 32, 3000, settings=NOW)
    reader.search(vectors[:1], 10)  # opened

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-scoring must not map the rows")

    monkeypatch.setattr(ivf.np, "memmap", refuse)
    got = reader.search(vectors[:20], 10)
    assert got.owners[:, 0].tolist() == list(range(20))
