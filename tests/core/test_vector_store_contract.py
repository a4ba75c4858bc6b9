"""Every vector store behaves like the brute-force reference (MemoryVectorStore).

Vectors are rounded to float16 first so that the local store's on-disk precision does
not make scores differ from the reference's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spyglass.errors import IndexCorrupt
from spyglass.store.base import VectorStore
from spyglass.store.local import LocalVectorStore
from spyglass.store.memory import MemoryVectorStore

DIMS = 16


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIMS)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)


@pytest.fixture(params=["memory", "local"])
def make_store(request, tmp_path: Path):
    def make() -> VectorStore:
        if request.param == "memory":
            return MemoryVectorStore(DIMS)
        return LocalVectorStore(tmp_path / "vectors", "joint", DIMS, 0, writer=True)

    return make


def filled(
    make_store, owners: np.ndarray, vectors: np.ndarray
) -> tuple[VectorStore, MemoryVectorStore]:
    store, reference = make_store(), MemoryVectorStore(DIMS)
    for s in (store, reference):
        s.add(owners, vectors)
        s.flush()
    return store, reference


def assert_same(
    store: VectorStore, reference: MemoryVectorStore, queries: np.ndarray, k: int
) -> None:
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


# -- the local store's durability ------------------------------------------------------


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


def test_equal_scores_are_ordered_by_owner(make_store):
    """Ties break by owner id in every store (FAISS alone returns them in reverse)."""
    rng = np.random.default_rng(3)
    vectors = unit_rows(rng, 60)
    vectors[[11, 25, 40]] = vectors[5]  # four owners, one vector
    store, reference = filled(make_store, np.arange(60), vectors)
    got = store.search(vectors[5:6], 6)
    assert got.owners[0, :4].tolist() == [5, 11, 25, 40]
    assert_same(store, reference, vectors[5:6], 6)
