"""Metadata and filters: header metadata recorded at ingest, filters turned into the
images they keep, and every kind of query searched among those images only, checked
against brute force (NumPy over the stored vectors, with the set of kept images worked
out from what the collection's plan wrote, not through the filter code)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.cli import main
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.errors import InvalidQuery
from spyglass.query.filters import (
    Filters,
    allowed_ids,
    count_facets,
    parse_date,
    top_folder_sql,
)
from spyglass.query.methods import method_names
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.store.catalogue import SCHEMA_VERSION
from spyglass.store.index import CATALOGUE_FILE, Index

from .conftest import EditedCollection
from .filtered_collection import Planned, utc


@pytest.fixture
def collection(filter_collection: list[Planned]) -> list[Planned]:
    return filter_collection


@pytest.fixture
def engine(filtered_index: Path, bundled: Encoder) -> Iterator[Spyglass]:
    with Spyglass(bundled, Index.open(filtered_index)) as opened:
        yield opened


def ids_of(engine: Spyglass, planned: list[Planned]) -> dict[Path, int]:
    found = {}
    for item in planned:
        state = engine.index.catalogue.file(str(item.path))
        assert state is not None, item.path
        found[item.path] = state.image_id
    return found


def kept(engine: Spyglass, collection: list[Planned], keep: Callable[[Planned], bool]) -> list[int]:
    ids = ids_of(engine, collection)
    return sorted(ids[p.path] for p in collection if keep(p))


ROOT_FOLDER: Callable[[list[Planned]], Path] = lambda c: c[0].path.parents[2]  # noqa: E731


def test_headers_are_recorded_at_ingest(engine: Spyglass, collection: list[Planned]) -> None:
    ids = ids_of(engine, collection)
    rows = {
        r[0]: r[1:]
        for r in engine.index.catalogue.execute(
            "SELECT image_id, taken_at, make, model, latitude, longitude FROM image_meta"
        )
    }
    assert set(rows) == set(ids.values())  # a row for every image, EXIF or not
    for item in collection:
        taken, make, model, latitude, longitude = rows[ids[item.path]]
        if item.camera is None:
            assert (taken, make, model, latitude) == (None, None, None, None)
            continue
        assert f"{make} {model}" == item.camera
        assert taken == item.date
        if item.gps:
            assert latitude == pytest.approx(48 + 51 / 60 + 30 / 3600)
            assert longitude == pytest.approx(2 + 17 / 60 + 40 / 3600)
        else:
            assert latitude is None and longitude is None


def filter_cases(root: Path) -> list[tuple[Filters, Callable[[Planned], bool]]]:
    return [
        (Filters.parse(under=[str(root / "site-a")]), lambda p: p.folder == "site-a"),
        (
            Filters.parse(under=[str(root / "site-b" / "room-watch")]),
            lambda p: p.folder == "site-b" and p.label == "watch",
        ),
        (Filters.parse(after="2020"), lambda p: p.date >= utc(2020, 1, 1, 0)),
        (
            Filters.parse(after="2019-03", before="2019-08-10"),
            lambda p: utc(2019, 3, 1, 0) <= p.date < utc(2019, 8, 11, 0),
        ),
        (Filters.parse(before="2016"), lambda p: p.date < utc(2017, 1, 1, 0)),
        (Filters.parse(camera="nikon"), lambda p: (p.camera or "").startswith("NIKON")),
        (Filters.parse(camera="eos 5"), lambda p: p.camera == "Canon EOS 5D"),
        (Filters.parse(has_gps=True), lambda p: p.gps),
        (Filters.parse(has_gps=False), lambda p: not p.gps),
        (Filters.parse(formats=["png"]), lambda p: p.format == "PNG"),
        (Filters.parse(formats=["jpg", "PNG"]), lambda p: True),
        (Filters.parse(min_size="200x150"), lambda p: p.width >= 200 and p.height >= 150),
        (
            Filters.parse(under=[str(root / "site-b")], formats=["jpeg"], camera="d750"),
            lambda p: (
                p.folder == "site-b"
                and p.format == "JPEG"
                and p.camera is not None
                and "D750" in p.camera
            ),
        ),
        (Filters.parse(camera="Leica"), lambda p: False),
    ]


def test_filters_keep_what_was_written(engine: Spyglass, collection: list[Planned]) -> None:
    for filters, keep in filter_cases(ROOT_FOLDER(collection)):
        got = allowed_ids(engine.index.catalogue, filters)
        assert got.dtype == np.int64
        assert got.tolist() == kept(engine, collection, keep), filters.describe()


def brute_force(
    engine: Spyglass, space: str, query: np.ndarray, among: list[int], k: int
) -> list[int]:
    """The filtered exact search, in NumPy: every kept image scored, best first, ties
    by id."""
    if not among:
        return []
    ids = np.asarray(among, np.int64)
    scores = engine.index.stores[space].fetch(ids) @ query
    order = np.lexsort((ids, -scores))
    return ids[order][:k].tolist()


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


QUERY_KINDS = ("text", "image", "image+text", "marks")


def query_and_reference(
    engine: Spyglass, kind: str, probe: int, good: int, bad: int
) -> tuple[Query, str, np.ndarray]:
    """A query of ``kind`` (method sum, no re-ranking) and the space and vector it
    searches with, built by hand from the stored vectors and the model's text vector."""
    info = engine.encoder.info
    text = engine.encoder.embed_texts(["a wrist watch"])[0]
    fetch = lambda space, i: engine.index.stores[space].fetch(np.array([i]))[0]  # noqa: E731
    plain = {"method": "sum", "rerank": "none", "k": 30}
    if kind == "text":
        return Query((TextTerm("a wrist watch"),), **plain), info.text_space, unit(text)
    if kind == "image":
        query = Query((ImageTerm(image_id=probe),), **plain)
        return query, info.image_space, unit(fetch(info.image_space, probe))
    if kind == "image+text":
        terms = (ImageTerm(image_id=probe, weight=0.5), TextTerm("a wrist watch", 0.5))
        vector = unit(0.5 * fetch(info.text_space, probe) + 0.5 * text)
        return Query(terms, **plain), info.text_space, vector
    query = Query((TextTerm("a wrist watch"),), positives=(good,), negatives=(bad,), **plain)
    vector = unit(text + fetch(info.text_space, good) - fetch(info.text_space, bad))
    return query, info.text_space, vector


def assert_filtered_searches_are_brute_force(
    engine: Spyglass,
    collection: list[Planned],
    kind: str,
    after_each: Callable[[Filters], None] = lambda filters: None,
) -> None:
    """Every filter case, at k = 3 and 30: the engine's ranking is the brute-force
    ranking of the kept images; ``after_each(filters)`` checks more after each search."""
    ids = ids_of(engine, collection)
    watches = [ids[p.path] for p in collection if p.label == "watch"]
    probe, good, bad = watches[0], watches[1], ids[collection[0].path]
    query, space, vector = query_and_reference(engine, kind, probe, good, bad)
    for filters, keep in filter_cases(ROOT_FOLDER(collection)):
        among = kept(engine, collection, keep)
        for k in (3, 30):
            got = engine.search(replace(query, filters=filters, k=k))
            want = brute_force(engine, space, vector, among, k)
            assert [r.image_id for r in got] == want, (kind, filters.describe(), k)
            after_each(filters)


@pytest.mark.parametrize("kind", QUERY_KINDS)
def test_filtered_search_is_the_filtered_brute_force(
    engine: Spyglass, collection: list[Planned], kind: str
) -> None:
    """For every query kind and every filter: exactly the brute-force ranking of the
    kept images, all of them when fewer than k. A search that filtered its top results
    afterwards would return fewer (the kept images are few and mostly not the best)."""
    assert_filtered_searches_are_brute_force(engine, collection, kind)


@pytest.mark.parametrize(
    "task", ["image+text", "feedback"], ids=["composed-methods", "feedback-methods"]
)
def test_every_method_returns_only_kept_images(
    engine: Spyglass, collection: list[Planned], task: str
) -> None:
    ids = ids_of(engine, collection)
    watches = [ids[p.path] for p in collection if p.label == "watch"]
    filters = Filters.parse(under=[str(ROOT_FOLDER(collection) / "site-b")])
    among = set(kept(engine, collection, lambda p: p.folder == "site-b"))
    for method in method_names(task):
        if method == "pic2word":
            continue  # trains a mapping first (minutes); it searches through the same path
        if task == "feedback":
            query = Query(
                (TextTerm("a wrist watch"),),
                positives=(watches[1],),
                negatives=(ids[collection[2].path],),
                method=method,
                k=8,
                filters=filters,
            )
        else:
            query = Query(
                (ImageTerm(image_id=watches[0], weight=0.5), TextTerm("on a table", 0.5)),
                method=method,
                k=8,
                filters=filters,
            )
        got = [r.image_id for r in engine.search(query)]
        assert len(got) == 8 and set(got) <= among, method


def test_filters_alone_browse_newest_first(engine: Spyglass, collection: list[Planned]) -> None:
    ids = ids_of(engine, collection)
    query = Query(k=5, filters=Filters.parse(formats=["jpeg"]))
    got = [r.image_id for r in engine.search(query)]
    jpegs = sorted(
        (p for p in collection if p.format == "JPEG"), key=lambda p: (-p.date, ids[p.path])
    )
    assert got == [ids[p.path] for p in jpegs[:5]]
    paged = engine.search(Query(k=5, offset=5, filters=Filters.parse(formats=["jpeg"])))
    assert [r.image_id for r in paged] == [ids[p.path] for p in jpegs[5:10]]


def test_facets_count_what_was_written(engine: Spyglass, collection: list[Planned]) -> None:
    root = ROOT_FOLDER(collection)
    counted = count_facets(engine.index.catalogue)
    assert counted.total == len(collection)
    assert counted.folders == {
        str(root / "site-a"): sum(p.folder == "site-a" for p in collection),
        str(root / "site-b"): sum(p.folder == "site-b" for p in collection),
    }
    assert counted.formats == {
        "JPEG": sum(p.format == "JPEG" for p in collection),
        "PNG": sum(p.format == "PNG" for p in collection),
    }
    assert counted.gps == {
        "yes": sum(p.gps for p in collection),
        "no": sum(not p.gps for p in collection),
    }
    assert counted.cameras["Canon EOS 5D"] == sum(p.camera == "Canon EOS 5D" for p in collection)
    years: dict[str, int] = {}
    for p in collection:
        year = str(1970 + int(p.date // (365.2425 * 86400)))
        years[year] = years.get(year, 0) + 1
    assert counted.years == dict(sorted(years.items()))
    narrowed = count_facets(engine.index.catalogue, Filters.parse(formats=["png"]))
    assert narrowed.total == counted.formats["PNG"] and set(narrowed.formats) == {"PNG"}


def test_bad_filter_values_are_one_line_errors() -> None:
    for arguments in (
        {"after": "yesterday"},
        {"before": "2020-13-01"},
        {"min_size": "big"},
        {"formats": ["heic"]},
        {"under": ["relative/folder"]},
        {"after": "2021", "before": "2020"},
    ):
        with pytest.raises(InvalidQuery) as caught:
            Filters.parse(**arguments)  # type: ignore[arg-type]
        assert "\n" not in str(caught.value)
    assert parse_date("2020-02", "after") == (utc(2020, 2, 1, 0), utc(2020, 3, 1, 0))


def test_filters_survive_a_round_trip_through_json(collection: list[Planned]) -> None:
    filters = Filters.parse(
        under=[str(ROOT_FOLDER(collection))],
        after="2019-03-01",
        before="2021",
        camera="nikon",
        has_gps=False,
        formats=["jpg"],
        min_size="100x80",
    )
    assert Filters.from_json(json.loads(json.dumps(filters.to_json()))) == filters


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_cli_search_takes_the_filters(
    filtered_index: Path, collection: list[Planned], engine: Spyglass
) -> None:
    root = ROOT_FOLDER(collection)
    index = ["--index", str(filtered_index)]
    status, out = run(
        "search", "a wrist watch", "--under", str(root / "site-a"), "--no-gps",
        "--min-size", "200x150", "-k", "30", "--json", *index,
    )  # fmt: skip
    assert status == 0
    got = sorted(r["id"] for r in json.loads(out))
    assert got == kept(
        engine,
        collection,
        lambda p: p.folder == "site-a" and not p.gps and p.width >= 200 and p.height >= 150,
    )
    status, out = run("search", "--camera", "nikon", "--paths", *index)
    assert status == 0
    ids = ids_of(engine, collection)
    nikons = sorted(
        (p for p in collection if p.camera and "NIKON" in p.camera),
        key=lambda p: (-p.date, ids[p.path]),  # newest first, ties by id
    )
    assert out.splitlines() == [str(p.path) for p in nikons][:10]
    status, out = run("search", "--camera", "nikon", "-k", "1", *index)
    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(nikons[0].date))
    assert status == 0 and out.startswith(f"{taken}  #{ids[nikons[0].path]} ")  # dated
    status, out = run("info", *index)
    cameras = sum(p.camera is not None for p in collection)
    gps = sum(p.gps for p in collection)
    assert f"metadata: {cameras} with EXIF capture time, {cameras} camera, {gps} GPS\n" in out
    status, out = run("search", "a watch", "--after", "last week", *index)
    assert status == 2 and len(out.strip().splitlines()) == 1 and "after" in out


def test_saved_searches_and_case_files_keep_the_filters(
    filtered_index: Path, collection: list[Planned], tmp_path: Path, engine: Spyglass
) -> None:
    import shutil

    index = tmp_path / "index"
    shutil.copytree(filtered_index, index)
    args = ["--index", str(index)]
    assert run("saved", "save", "pngs", "a watch", "--format", "png", "-k", "30", *args)[0] == 0
    status, out = run("saved", "run", "pngs", "--json", *args)
    assert status == 0
    pngs = kept(engine, collection, lambda p: p.format == "PNG")
    assert sorted(r["id"] for r in json.loads(out)) == pngs
    case = tmp_path / "case.json"
    status, _ = run("search", "a watch", "--format", "png", "--export", str(case), *args)
    assert status == 0
    document = json.loads(case.read_text())
    assert document["search"]["filters"] == {"formats": ["PNG"]}
    assert "filtered: format PNG" in document["query"]
    status, out = run("verify", str(case), *args)
    assert status == 0, out


def test_an_index_made_before_headers_were_kept_gets_them_at_the_next_run(
    collection: list[Planned], bundled: Encoder, tmp_path: Path, filtered_index: Path
) -> None:
    """A schema version 1 catalogue (no image_meta): searchable with filters read-only
    (EXIF filters then keep nothing, the date falls back to mtime), migrated when next
    opened for writing, and its headers read by the next `spyglass index` without
    embedding anything again."""
    import shutil

    index = tmp_path / "index"
    shutil.copytree(filtered_index, index)
    with sqlite3.connect(index / CATALOGUE_FILE) as db:
        db.execute("DROP TABLE image_meta")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with Spyglass(bundled, Index.open(index)) as old:
        assert len(allowed_ids(old.index.catalogue, Filters.parse(camera="nikon"))) == 0
        dated = allowed_ids(old.index.catalogue, Filters.parse(before="2016"))
        assert len(dated) == len(collection)  # no EXIF time: every mtime is in 2015
    status, out = run("index", str(ROOT_FOLDER(collection)), "--index", str(index))
    assert status == 0, out
    with Spyglass(bundled, Index.open(index)) as migrated:
        catalogue = migrated.index.catalogue
        assert catalogue.meta("schema_version") == str(SCHEMA_VERSION)
        nikons = allowed_ids(catalogue, Filters.parse(camera="nikon")).tolist()
        assert nikons == kept(
            migrated, collection, lambda p: bool(p.camera and "NIKON" in p.camera)
        )
        assert catalogue.counts()["embedded"] == len(collection)  # nothing embedded twice


def test_collapsed_groups_list_only_the_kept_members(
    edited_index: Path, edited: EditedCollection, bundled: Encoder
) -> None:
    """A near-duplicate group shows the members the filters keep: the half-size copy
    of an image is one of its group, until a minimum size leaves it out."""
    from PIL import Image

    from spyglass.casework.duplicates import DuplicateRule

    source = next(iter(edited.copies))
    with Image.open(source) as opened:
        width, height = opened.size
    with Spyglass(bundled, Index.open(edited_index)) as engine:
        ids = {
            name: engine.index.catalogue.file(str(path)).image_id  # type: ignore[union-attr]
            for name, path in {"source": source, **edited.copies[source]}.items()
        }
        query = Query((ImageTerm(image_id=ids["source"]),), k=3)
        plain = engine.search_collapsed(query, DuplicateRule())[0]
        assert plain.image_id == ids["source"] and ids["half"] in plain.duplicates
        big = Filters.parse(min_size=f"{width // 2 + 1}x{height // 2 + 1}")
        filtered = engine.search_collapsed(replace(query, filters=big), DuplicateRule())[0]
        assert filtered.image_id == ids["source"]
        assert ids["half"] not in filtered.duplicates
        assert set(filtered.duplicates) == set(plain.duplicates) - {ids["half"]}


def python_top_folder(path: str, roots: list[str]) -> str:
    """The reference, written out: the folder just inside the innermost root holding
    ``path`` (the root for a file directly in it), else the file's own folder."""
    for root in sorted(roots, key=len, reverse=True):
        prefix = root.rstrip("/") + "/"
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            return prefix + rest.split("/", 1)[0] if "/" in rest else root
    return str(PurePosixPath(path).parent)


folder_names = st.text(alphabet=st.sampled_from(list("ab_%' ü0.-")), min_size=1, max_size=4).filter(
    lambda name: name not in (".", "..")
)


@settings(max_examples=300, deadline=None)
@given(
    path=st.lists(folder_names, min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 5), max_size=3),
    others=st.lists(st.lists(folder_names, min_size=1, max_size=3), max_size=2),
)
def test_top_folder_in_sql_is_the_folder_just_inside_the_innermost_root(
    path: list[str], cuts: list[int], others: list[list[str]]
) -> None:
    """Roots are prefixes of the file's folder (nested ones too) and unrelated folders;
    the SQL must agree with the reference on every path."""
    file_path = "/" + "/".join(path)
    prefixes = ["/" + "/".join(path[:cut]) for cut in cuts if 0 < cut < len(path)]
    root_paths = sorted({*prefixes, *("/" + "/".join(o) for o in others)})
    expression, args = top_folder_sql("p", root_paths)
    with sqlite3.connect(":memory:") as db:
        (found,) = db.execute(f"SELECT {expression} FROM (SELECT ? AS p)", [*args, file_path])
    assert found[0] == python_top_folder(file_path, root_paths)


def test_facets_are_kept_until_the_catalogue_changes(
    own_collection: tuple[EditedCollection, Path], bundled: Encoder
) -> None:
    """A reader (as the server is) keeps its facet counts while nothing changes, and
    counts again when another process indexes, even when no image is added: a copy of an
    indexed image in a new folder adds a path, not an image."""
    collection, folder = own_collection
    source = next(iter(collection.copies))
    copy = collection.root / "copied-here" / source.name
    with (
        Spyglass(bundled, Index.open(folder)) as reader,
        Spyglass(bundled, Index.open_for_writing(folder, bundled.info)) as writer,
    ):
        first = reader.facets()
        assert reader.facets() is first
        assert str(copy.parent) not in first.folders
        images = reader.index.count()
        copy.parent.mkdir()
        shutil.copyfile(source, copy)
        writer.add([str(collection.root)])
        assert writer.index.count() == images  # the same content: no new image
        again = reader.facets()
        assert again is not first and again.folders[str(copy.parent)] == 1
        assert writer.facets().folders[str(copy.parent)] == 1
