"""Metadata filters as Milvus expressions (spyglass.store.milvus_filters): the same
images as the catalogue's SQL (``allowed_ids``), for generated filters over generated
images with awkward folder names and camera texts; a search given the filters (``where=``)
goes through the expression, never an id list; a 0.1% selection still returns k.

The images are written twice, independently: as catalogue rows (SQLite, the reference)
and as Milvus rows with fields read back from that catalogue (``filter_fields``), which
is what an index does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spyglass.query.filter_fields import filter_fields
from spyglass.query.filters import Filters, allowed_ids
from spyglass.store.base import FilterableStore, FilterFields
from spyglass.store.catalogue import Catalogue
from spyglass.store.memory import MemoryVectorStore
from spyglass.store.milvus import MilvusVectorStore, parse_milvus_url
from spyglass.store.milvus_filters import expression, literal

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

DIMS = 16
#: Folder names a filter must take literally: LIKE wildcards, quotes, a backslash, a
#: line feed, spaces, non-ASCII; "50x"/"5x0" would match "50%"/"5_0" read as patterns.
SEGMENTS = ["a b", "50%", "50x", "5_0", "5x0", "it's", 'say "hi"', "back\\slash", "n\nl"]
SEGMENTS += ["ünïcødé", "日本", "plain", "Plain", "%", "_", "tab\there", "odd\ufffe"]
CAMERAS = [
    ("Canon", "EOS 5D"),
    ("NIKON CORPORATION", "D750"),
    ("nikon", "d7_0"),
    ("Sony", "A7 100%"),
    ("Bäck\\", "Sla\\sh"),
    ("Odd\uffff", "Stand-in"),
    ("100%", "ok_\ufdd0\ufffe"),
    (None, "Model only"),
    ("Make only", None),
    (None, None),
]
FORMATS = ["JPEG", "PNG", "GIF", "WEBP"]
ROOT = "/cases"


def make_images(seed: int, n: int) -> list[dict]:
    """``n`` images: 1-3 files each in nested awkward folders, EXIF time or not, file
    times in ns, a camera or not, GPS or not, format and size."""
    rng = random.Random(seed)
    images = []
    for i in range(n):
        paths = set()
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            depth = rng.choice([0, 1, 2, 3])
            folder = "/".join([ROOT, *(rng.choice(SEGMENTS) for _ in range(depth))])
            paths.add(f"{folder}/img-{i}-{len(paths)}.jpg")
        make, model = rng.choice(CAMERAS)
        has_meta = rng.random() < 0.8
        images.append(
            {
                "id": i + 1,
                "paths": sorted(paths),
                "mtimes": [rng.randrange(10**18, 2 * 10**18) for _ in paths],
                "taken": rng.choice([None, float(rng.randrange(10**9, 2 * 10**9))]),
                "make": make,
                "model": model,
                "gps": rng.random() < 0.3,
                "meta": has_meta,
                "format": rng.choice(FORMATS),
                "width": rng.choice([0, 120, 640, 1920]),
                "height": rng.choice([0, 90, 480, 1080]),
            }
        )
    return images


def write_catalogue(path: Path, images: list[dict]) -> Catalogue:
    catalogue = Catalogue(path, create=True)
    with catalogue.transaction():
        for image in images:
            catalogue.execute(
                "INSERT INTO images (id, content_hash, width, height, format, alive, added_at) "
                "VALUES (?, ?, ?, ?, ?, 1, 0)",
                (image["id"], f"h{image['id']}", image["width"], image["height"], image["format"]),
            )
            for file, mtime in zip(image["paths"], image["mtimes"], strict=True):
                catalogue.execute(
                    "INSERT INTO files (path, image_id, size, mtime_ns, indexed_at) "
                    "VALUES (?, ?, 1, ?, 0)",
                    (file, image["id"], mtime),
                )
            if image["meta"]:
                catalogue.execute(
                    "INSERT INTO image_meta (image_id, taken_at, make, model, latitude) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        image["id"],
                        image["taken"],
                        image["make"],
                        image["model"],
                        48.0 if image["gps"] else None,
                    ),
                )
    return catalogue


def folders_above(path: str) -> list[str]:
    """The text of ``path`` up to each of its slashes: the folders it is under."""
    return [path[:i] for i, c in enumerate(path) if c == "/"]


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIMS)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)


def milvus_store(folder: Path, name: str = "joint") -> MilvusVectorStore:
    location = parse_milvus_url(f"milvus://{folder}/vectors.db", folder)
    return MilvusVectorStore(location, name, DIMS, 0, writer=True, owner="filters")


class Pool:
    """The generated images in a catalogue and, rows with fields, in Milvus."""

    def __init__(self, folder: Path, n: int = 300) -> None:
        self.images = make_images(7, n)
        self.catalogue = write_catalogue(folder / "catalogue.sqlite", self.images)
        self.ids = np.array([im["id"] for im in self.images], np.int64)
        self.vectors = unit_rows(np.random.default_rng(3), len(self.ids))
        self.store = milvus_store(folder)
        self.store.add(self.ids, self.vectors)
        self.store.flush_with_fields(filter_fields(self.catalogue, self.ids.tolist()))
        self.query = unit_rows(np.random.default_rng(4), 1)
        self.folders = sorted(
            {f for im in self.images for p in im["paths"] for f in folders_above(p)}
        )
        self.dates = sorted(
            {im["taken"] for im in self.images if im["taken"] is not None}
            | {min(im["mtimes"]) / 1e9 for im in self.images}
        )


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    made = Pool(tmp_path_factory.mktemp("milvus-filters"))
    yield made
    made.store.close()
    made.catalogue.close()


def case_flips(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.swapcase() if f else c for c, f in zip(text, flips, strict=True))


@st.composite
def filters_over(draw: st.DrawFn, pool: Pool) -> Filters:
    """Filters aimed at the pool: its folders (with and without a trailing slash, and
    near misses), its exact dates, substrings of its cameras in any case, LIKE
    wildcards."""
    under: list[str] = []
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 2))):
            folder = draw(st.sampled_from(pool.folders)) or "/"
            folder = draw(st.sampled_from([folder, folder + "/", folder[:-1] or "/", folder + "x"]))
            under.append(folder)
    after = before = None
    if draw(st.booleans()):
        after = draw(st.sampled_from(pool.dates))
    if draw(st.booleans()):
        before = draw(st.sampled_from(pool.dates)) + draw(st.sampled_from([0.0, 1e-6, 1.0]))
    camera = None
    if draw(st.booleans()):
        make, model = draw(st.sampled_from(CAMERAS))
        whole = f"{make or ''} {model or ''}"
        start = draw(st.integers(0, len(whole)))
        stop = draw(st.integers(start, len(whole)))
        camera = case_flips(draw, whole[start:stop]) or draw(st.sampled_from(["%", "_", "\\", " "]))
    return Filters(
        under=tuple(under),
        after=after,
        before=before,
        camera=camera,
        has_gps=draw(st.sampled_from([None, True, False])),
        formats=tuple(draw(st.lists(st.sampled_from(FORMATS), max_size=2, unique=True))),
        min_width=draw(st.sampled_from([0, 0, 1, 640, 641])),
        min_height=draw(st.sampled_from([0, 0, 90, 1080])),
    )


def kept_by_milvus(pool: Pool, filters: Filters) -> list[int]:
    """Every owner the store's search returns under ``filters`` (k = all rows)."""
    found = pool.store.search(pool.query, len(pool.ids), where=filters)
    return sorted(owner for owner, _ in found.row(0))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_expression_keeps_what_the_sql_keeps(pool: Pool, data: st.DataObject) -> None:
    """Generated filters over generated images: the Milvus expression keeps exactly
    the images ``allowed_ids`` (the catalogue's SQL) keeps. Where no exact expression
    exists (a camera text holding a stand-in noncharacter, or a NUL), the store
    says so and the search goes back to the id list."""
    filters = data.draw(filters_over(pool))
    want = allowed_ids(pool.catalogue, filters).tolist()
    if expression(filters) is None:
        assert not pool.store.filters_inside(filters)
        return
    assert pool.store.filters_inside(filters)
    assert kept_by_milvus(pool, filters) == want, (filters, expression(filters))


def test_every_awkward_folder_is_matched_as_written(pool: Pool) -> None:
    """Each folder the pool has, taken as ``--under``: the same images as SQL, and at
    least one; a folder whose name would match others as a pattern ("50%", "5_0") keeps
    only its own."""
    for folder in pool.folders:
        if not folder:
            continue
        filters = Filters(under=(folder,))
        want = allowed_ids(pool.catalogue, filters).tolist()
        if "\ufffe" in folder:  # a stand-in: no exact pattern, the id list instead
            assert not pool.store.filters_inside(filters)
            continue
        assert want and kept_by_milvus(pool, filters) == want, folder
    for folder, lookalike in (("50%", "50x"), ("5_0", "5x0")):
        under = {
            im["id"]
            for im in pool.images
            if any(p.startswith(f"{ROOT}/{folder}/") for p in im["paths"])
        }
        alike = {
            im["id"]
            for im in pool.images
            if any(p.startswith(f"{ROOT}/{lookalike}/") for p in im["paths"])
        }
        assert alike - under, "a pattern reading would keep these too"
        assert kept_by_milvus(pool, Filters(under=(f"{ROOT}/{folder}",))) == sorted(under)


def test_literals_escape_what_milvus_reads_specially() -> None:
    assert literal('a"b\\c\nd\re') == '"a\\"b\\\\c\\nd\\re"'
    assert expression(Filters(under=("/a/b/",))) == 'paths like "%\ufdd1/a/b/%"'
    assert expression(Filters(under=("/a", "/b_c"))) == (
        '(paths like "%\ufdd1/a/%" or paths like "%\ufdd1/b\ufdd0c/%")'
    )
    assert expression(Filters(under=("/a\ufdd1",))) is None
    assert expression(Filters(camera="50%_X\\")) == 'camera like "%50\ufffe\ufdd0x\uffff%"'
    assert expression(Filters(camera="odd\uffff")) is None
    assert expression(Filters(camera="a\x00b")) is None
    assert expression(Filters()) == ""


def test_a_search_with_filters_sends_one_expression_not_an_id_list(pool: Pool, monkeypatch):
    """``where=`` reaches Milvus as the expression on the fields: no ``owner in [...]``
    however many images the filters keep (here most of them), and the ranking is the
    filtered brute force."""
    sent: list[str] = []
    original = MilvusVectorStore._search

    def spy(self, queries, limit, expression):
        sent.append(expression)
        return original(self, queries, limit, expression)

    monkeypatch.setattr(MilvusVectorStore, "_search", spy)
    filters = Filters(formats=("JPEG", "PNG", "GIF"))
    kept = allowed_ids(pool.catalogue, filters)
    assert len(kept) > len(pool.ids) // 2
    got = pool.store.search(pool.query, 10, where=filters)
    reference = MemoryVectorStore(DIMS)
    reference.add(pool.ids, pool.vectors)
    reference.flush()
    want = reference.search(pool.query, 10, among=kept)
    assert [o for o, _ in got.row(0)] == [o for o, _ in want.row(0)]
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert sent and all("owner in [" not in e and "format in [" in e for e in sent)
    assert isinstance(pool.store, FilterableStore)


def test_a_selection_of_a_tenth_of_a_percent_still_returns_k(tmp_path: Path) -> None:
    """2,000 images, 2 of them under /rare (0.1%) and far from the query: both come
    back, then nothing else; a filter over the top results would find none."""
    rng = np.random.default_rng(5)
    n = 2000
    ids = np.arange(1, n + 1, dtype=np.int64)
    vectors = unit_rows(rng, n)
    query = vectors[0:1]
    rare = {int(i) for i in np.argsort(vectors @ query[0])[:2] + 1}  # the two farthest
    fields = {
        int(i): FilterFields(
            paths=(f"/rare/{i}.jpg",) if int(i) in rare else (f"/common/{i}.jpg",),
            date=1.6e9,
            format="JPEG",
            width=10,
            height=10,
            camera=" ",
            has_gps=False,
        )
        for i in ids
    }
    store = milvus_store(tmp_path)
    store.add(ids, vectors)
    store.flush_with_fields(fields)
    got = store.search(query, 10, where=Filters(under=("/rare",)))
    assert sorted(o for o, _ in got.row(0)) == sorted(rare)
    assert len(got.row(0)) == 2
    store.close()


def test_rows_of_an_image_that_gains_a_path_take_the_new_fields(tmp_path: Path) -> None:
    """``rewrite=``: an image's stored rows (crops: several) are found under its new
    folder and no longer under the one it left; its vectors are unchanged."""
    rng = np.random.default_rng(6)
    owners = np.array([1, 1, 1, 2], np.int64)
    vectors = unit_rows(rng, 4)

    def fields(path: str) -> FilterFields:
        return FilterFields((path,), None, "PNG", 5, 5, " ", False)

    store = milvus_store(tmp_path, "joint.crops")
    store.add(owners, vectors)
    store.flush_with_fields({1: fields("/old/1.png"), 2: fields("/old/2.png")})
    before = store.fetch(np.array([1, 2]))
    store.flush_with_fields({1: fields("/new/1.png")}, rewrite=[1])
    assert [o for o, _ in store.search(vectors[:1], 5, where=Filters(under=("/new",))).row(0)] == [
        1
    ]
    assert [o for o, _ in store.search(vectors[:1], 5, where=Filters(under=("/old",))).row(0)] == [
        2
    ]
    np.testing.assert_array_equal(store.fetch(np.array([1, 2])), before)
    assert len(store) == 4
    store.close()


def test_rows_flushed_without_fields_send_filters_back_to_the_id_list(tmp_path: Path) -> None:
    """A plain ``flush()`` (rows with no fields) marks the collection: no filter is
    trusted to the fields any more, and a reader opened later knows it too."""
    rng = np.random.default_rng(8)
    store = milvus_store(tmp_path)
    store.add(np.array([1, 2], np.int64), unit_rows(rng, 2))
    store.flush_with_fields(
        {i: FilterFields((f"/x/{i}",), None, "PNG", 1, 1, " ", False) for i in (1, 2)}
    )
    assert store.filters_inside(Filters(under=("/x",)))
    store.add(np.array([3], np.int64), unit_rows(rng, 1))
    store.flush()
    assert not store.filters_inside(Filters(under=("/x",)))
    location = store.location
    reader = MilvusVectorStore(location, "joint", DIMS, 3)
    assert not reader.filters_inside(Filters(min_width=1))
    with pytest.raises(ValueError):
        reader.search(unit_rows(rng, 1), 3, where=Filters(min_width=1))
    store.close()


def test_a_path_holding_the_separator_sends_under_back_to_the_id_list(tmp_path: Path) -> None:
    """The separator (U+FDD1) in a path would let ``--under`` match across two paths:
    the collection is marked, ``--under`` goes back to the id list; other filters stay
    inside."""
    store = milvus_store(tmp_path)
    store.add(np.array([1], np.int64), unit_rows(np.random.default_rng(9), 1))
    store.flush_with_fields({1: FilterFields(("/x\ufdd1/y.jpg",), None, "PNG", 1, 1, " ", False)})
    assert not store.filters_inside(Filters(under=("/x",)))
    assert store.filters_inside(Filters(formats=("PNG",)))
    assert "filters on under as id lists" in store.describe().summary
    store.close()


def test_a_collection_made_before_the_fields_keeps_the_id_list(tmp_path: Path) -> None:
    """A collection with no filter fields in its schema (made before them) opens,
    takes rows, and answers filters through ``among`` as before; it never claims to
    apply them itself."""
    import pymilvus

    location = parse_milvus_url(f"milvus://{tmp_path}/old.db", tmp_path)
    client = pymilvus.MilvusClient(uri=location.uri)
    schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("row", pymilvus.DataType.INT64, is_primary=True)
    schema.add_field("owner", pymilvus.DataType.INT64)
    schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=DIMS)
    params = client.prepare_index_params()
    params.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    client.create_collection(
        location.collection("joint"),
        schema=schema,
        index_params=params,
        consistency_level="Strong",
        properties={"spyglass.catalogue": "old"},
    )
    store = MilvusVectorStore(location, "joint", DIMS, 0, writer=True, owner="old")
    vectors = unit_rows(np.random.default_rng(10), 5)
    store.add(np.arange(1, 6, dtype=np.int64), vectors)
    store.flush_with_fields(
        {i: FilterFields((f"/x/{i}",), None, "PNG", 1, 1, " ", False) for i in range(1, 6)}
    )
    assert not store.filters_inside(Filters(under=("/x",)))
    assert "filters as id lists (no filter fields" in store.describe().summary
    got = store.search(vectors[:1], 5, among=np.array([2, 4], np.int64))
    assert sorted(o for o, _ in got.row(0)) == [2, 4]
    store.close()
