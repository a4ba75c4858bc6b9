"""What the Milvus store adds to the contract (tests/store/test_vector_store_contract.py
runs it exact, FLAT): HNSW past the size threshold with a stated recall, recovery from
rows a crash left uncommitted, one catalogue per collection, ties deeper than the first
request, the URL forms and where each keeps its catalogue, and one-line errors.

Milvus Lite runs inside the test's process (a temporary .db); nothing else is needed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spyglass.errors import IndexLocked, IndexNotFound, IndexProblem, MissingDependency
from spyglass.settings import VectorSearchSettings
from spyglass.store.memory import MemoryVectorStore
from spyglass.store.milvus import MilvusLocation, MilvusVectorStore, parse_milvus_url

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

DIMS = 32


def unit_rows(rng: np.random.Generator, n: int, dims: int = DIMS) -> np.ndarray:
    x = rng.normal(size=(n, dims)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)


def lite(tmp_path: Path) -> MilvusLocation:
    return parse_milvus_url(f"milvus://{tmp_path}/vectors.db", tmp_path)


def test_past_the_threshold_the_store_switches_to_hnsw_within_the_stated_recall(tmp_path):
    """FLAT below ``approximate_from_rows``, HNSW from there on. Stated bound:
    Recall@10 >= 0.95 against the brute-force reference (HNSW at ef 128 over 3,000
    random 32-d rows)."""
    settings = VectorSearchSettings(approximate_from_rows=2000)
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng, 3000)
    store = MilvusVectorStore(lite(tmp_path), "joint", DIMS, 0, writer=True, settings=settings)
    reference = MemoryVectorStore(DIMS)
    for s in (store, reference):
        s.add(np.arange(1500), vectors[:1500])
        s.flush()
    assert store.describe().kind == "exact" and "FLAT" in store.describe().summary
    for s in (store, reference):
        s.add(np.arange(1500, 3000), vectors[1500:])
        s.flush()
    assert store.describe().kind == "approximate" and "HNSW" in store.describe().summary
    queries = unit_rows(rng, 50)
    got, want = store.search(queries, 10), reference.search(queries, 10)
    hits = sum(len(np.intersect1d(g, w)) for g, w in zip(got.owners, want.owners, strict=True))
    assert hits / want.owners.size >= 0.95
    # A reader opened afterwards finds the HNSW index the writer built.
    reader = MilvusVectorStore(lite(tmp_path), "joint", DIMS, 3000, settings=settings)
    assert reader.describe().kind == "approximate"


def test_a_writer_deletes_rows_a_crash_left_beyond_the_committed_ones(tmp_path):
    rng = np.random.default_rng(1)
    vectors = unit_rows(rng, 15)
    store = MilvusVectorStore(lite(tmp_path), "joint", DIMS, 0, writer=True, owner="a")
    store.add(np.arange(10), vectors[:10])
    committed = store.flush()
    store.add(np.arange(10, 15), vectors[10:])
    store.flush()  # in Milvus, but the catalogue never recorded these 5 rows
    # A reader sees the committed rows only, though Milvus holds 15.
    reader = MilvusVectorStore(lite(tmp_path), "joint", DIMS, committed)
    assert reader.visible_owners().tolist() == list(range(10))
    assert set(reader.search(vectors[10:], 15).owners.ravel().tolist()) <= set(range(10)) | {-1}
    # The next writer deletes them: adding the same images again gives no duplicate.
    writer = MilvusVectorStore(lite(tmp_path), "joint", DIMS, committed, writer=True, owner="a")
    assert writer.stored_rows() == 10
    writer.add(np.arange(10, 15), vectors[10:])
    assert writer.flush() == 15
    found = writer.search(vectors[10:11], 15)
    assert sorted(found.owners[0].tolist()) == list(range(15))  # each owner once


def test_a_collection_is_written_by_one_catalogue_only(tmp_path):
    first = MilvusVectorStore(lite(tmp_path), "joint", DIMS, 0, writer=True, owner="a")
    first.add(np.arange(3), unit_rows(np.random.default_rng(2), 3))
    first.flush()
    with pytest.raises(IndexLocked, match="another catalogue"):
        MilvusVectorStore(lite(tmp_path), "joint", DIMS, 0, writer=True, owner="b")
    with pytest.raises(IndexProblem, match="holds 32-d vectors, not 16-d"):
        MilvusVectorStore(lite(tmp_path), "joint", 16, 0, writer=True, owner="a")
    # Neither refused writer deleted the first one's rows.
    assert len(MilvusVectorStore(lite(tmp_path), "joint", DIMS, 3).visible_owners()) == 3


def test_ties_deeper_than_the_first_request_are_ordered_by_owner(tmp_path):
    """Forty owners share one vector: a request for 3 gets 3 + 8 results from Milvus in
    no promised order among equals (Milvus Lite returns them in row order, and here rows
    run in decreasing owner order), so the store asks again for more until the last
    result scores below the third."""
    rng = np.random.default_rng(3)
    vectors = unit_rows(rng, 100)
    tied = rng.permutation(100)[:40]
    vectors[tied] = vectors[tied[0]]
    owners = np.arange(100)[::-1]
    store = MilvusVectorStore(lite(tmp_path), "joint", DIMS, 0, writer=True, owner="a")
    store.add(owners, vectors)
    store.flush()
    first = sorted(owners[tied].tolist())
    assert store.search(vectors[tied[:1]], 3).owners[0].tolist() == first[:3]
    store.set_hidden(first[:2])
    assert store.search(vectors[tied[:1]], 3).owners[0].tolist() == first[2:5]


def test_urls_name_milvus_lite_or_a_server_and_where_the_catalogue_lives(tmp_path):
    here = parse_milvus_url(f"milvus://{tmp_path}/photos.db", Path("/data"))
    assert here.lite and here.uri == str(tmp_path / "photos.db")
    assert here.catalogue == tmp_path / "photos.db.catalogue"
    server = parse_milvus_url("milvus://user:secret@milvus.lan:19540/case_42", Path("/data"))
    assert not server.lite and server.uri == "http://milvus.lan:19540"
    assert server.catalogue == Path("/data/milvus/milvus.lan-19540/case_42")
    assert server.collection("joint.crops") == "case_42_joint_crops"
    assert server.token == "user:secret" and "secret" not in server.describe()
    default = parse_milvus_url("milvus://milvus.lan", Path("/data"))
    assert default.uri == "http://milvus.lan:19530" and default.prefix == "spyglass"
    chosen = parse_milvus_url(
        "milvus://milvus.lan/x?catalogue=/srv/cat&shards=4&replicas=2", Path("/data")
    )
    assert chosen.catalogue == Path("/srv/cat")
    assert (chosen.shards, chosen.replicas) == (4, 2) and default.shards is None
    with pytest.raises(IndexProblem, match="shards must be a whole number"):
        parse_milvus_url("milvus://host/x?shards=0", Path("/data"))
    with pytest.raises(IndexProblem, match=r"names a \.db file"):
        parse_milvus_url("milvus:///tmp/photos", Path("/data"))
    with pytest.raises(IndexProblem, match="letters, digits and underscores"):
        parse_milvus_url("milvus://host/case-42", Path("/data"))


def test_an_index_url_with_no_index_yet_is_not_found(tmp_path):
    from spyglass.store.index import Index

    with pytest.raises(IndexNotFound, match="create one with: spyglass index PATH --index"):
        Index.open(f"milvus://{tmp_path}/none.db")


def test_without_pymilvus_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(MissingDependency, match=r'pip install "spyglass\[milvus\]"'):
        MilvusVectorStore(lite(tmp_path), "joint", DIMS, 0, writer=True)


def test_a_milvus_lite_file_open_in_another_process_is_one_line(tmp_path):
    """Milvus Lite serves a file to one process at a time."""
    database = tmp_path / "held.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pymilvus import MilvusClient
                MilvusClient({str(database)!r})
                print("open", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        location = parse_milvus_url(f"milvus://{database}", tmp_path)
        with pytest.raises(IndexLocked, match="serves one process at a time"):
            MilvusVectorStore(location, "joint", DIMS, 0, writer=True)
    finally:
        holder.communicate("", timeout=60)


def test_an_index_in_milvus_resumes_after_a_crash_without_duplicates(tmp_path):
    """A crash between the rows reaching Milvus and the catalogue's transaction leaves
    rows no catalogue records: the next writer deletes them, so committing the same
    images again stores each once; a second writer of the same URL is refused."""
    from spyglass.encoders.base import EncoderInfo
    from spyglass.store.catalogue import NewImage
    from spyglass.store.index import Index

    info = EncoderInfo("hand-made", "1", {"joint": DIMS}, "joint", "joint")
    url = f"milvus://{tmp_path}/photos.db"
    rng = np.random.default_rng(4)
    vectors = unit_rows(rng, 8)
    images = [NewImage(f"h{i}", 8, 8, "JPEG") for i in range(8)]
    with Index.open_for_writing(url, info) as index:
        assert index.folder == tmp_path / "photos.db.catalogue"
        index.commit(
            images[:4], {"joint": vectors[:4]}, [(f"/p/{i}.jpg", 1, 0, i) for i in range(4)]
        )
        with pytest.raises(IndexLocked, match="is being written by pid"):
            Index.open_for_writing(url, info)
        # The crash: the next batch's rows are in Milvus, the catalogue never heard of them.
        index.stores["joint"].add(np.arange(4, 8), vectors[4:])
        index.stores["joint"].flush()
    with Index.open_for_writing(url, info) as index:
        files = [(f"/p/{i}.jpg", 1, 0, i - 4) for i in range(4, 8)]
        assert index.commit(images[4:], {"joint": vectors[4:]}, files) == [4, 5, 6, 7]
    with Index.open(url) as index:
        store = index.stores["joint"]
        assert len(store) == 8 and index.count() == 8
        assert store.stored_rows() == 8
        found = store.search(vectors, 8)
        assert [sorted(row) for row in found.owners.tolist()] == [list(range(8))] * 8


def test_feedback_samples_milvus_rows_by_position_like_the_embedded_store(tmp_path):
    """Marks draw random images as negatives by row position (work bounded by the
    count drawn): the Milvus store lists its rows' owners once and draws the same
    images as the embedded store holding the same rows."""
    from spyglass.query import sampling
    from spyglass.store.local import LocalVectorStore

    rng = np.random.default_rng(5)
    owners, vectors = np.repeat(np.arange(150), 2), unit_rows(rng, 300)
    milvus = MilvusVectorStore(lite(tmp_path), "joint", DIMS, 0, writer=True, owner="a")
    local = LocalVectorStore(tmp_path / "vectors", "joint", DIMS, 0, writer=True)
    for store in (milvus, local):
        store.add(owners, vectors)
        store.flush()
        store.set_hidden(range(0, 150, 7))
    assert isinstance(milvus, sampling.OwnersByRow)
    marked = np.array([3, 4, 5], np.int64)
    drawn = sampling.sample_by_position(milvus, 40, marked)
    assert drawn is not None and len(drawn) == 40
    assert not set(drawn.tolist()) & (set(range(0, 150, 7)) | {3, 4, 5})
    np.testing.assert_array_equal(drawn, sampling.sample_by_position(local, 40, marked))
