"""Filters on an index whose vectors live in Milvus (Milvus Lite, in this process): the
filter fields are written with the rows (by ``spyglass index`` and by ``--copy-to``),
kept right when an image gains or loses a path, and every search with filters is one
Milvus expression on them (no list of ids is made), with the results of the filtered
brute force, as on the embedded store (tests/casework/test_filters.py)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from spyglass.cli import main
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.query.filters import Filters
from spyglass.query.methods import method_names
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.store.index import CATALOGUE_FILE, Index
from spyglass.store.milvus import MilvusVectorStore

from .filtered_collection import Planned
from .test_filters import (
    QUERY_KINDS,
    ROOT_FOLDER,
    assert_filtered_searches_are_brute_force,
    brute_force,
    filter_cases,
    ids_of,
    kept,
    query_and_reference,
)

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


@pytest.fixture(scope="module")
def milvus_engine(
    filter_collection: list[Planned], bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Spyglass]:
    """``filter_collection`` indexed straight into Milvus Lite."""
    url = f"milvus://{tmp_path_factory.mktemp('filters-milvus')}/index.db"
    root = ROOT_FOLDER(filter_collection)
    with Spyglass(bundled, Index.open_for_writing(url, bundled.info)) as writer:
        writer.add([str(root)])
    with Spyglass(bundled, Index.open(url)) as opened:
        yield opened


@pytest.fixture
def expressions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every filter expression sent to Milvus; making an id list of the kept images
    fails the test (it is what the expression replaces)."""
    sent: list[str] = []
    original = MilvusVectorStore._search

    def spy(self, queries, limit, expression):  # type: ignore[no-untyped-def]
        sent.append(expression)
        return original(self, queries, limit, expression)

    def no_list(*args: object) -> None:
        raise AssertionError("the ids the filters keep were listed for a Milvus search")

    monkeypatch.setattr(MilvusVectorStore, "_search", spy)
    monkeypatch.setattr("spyglass.search.allowed_ids", no_list)
    return sent


@pytest.mark.parametrize("kind", QUERY_KINDS)
def test_filters_run_inside_milvus_and_equal_the_filtered_brute_force(
    milvus_engine: Spyglass, filter_collection: list[Planned], kind: str, expressions: list[str]
) -> None:
    """Every query kind, every filter kind: the brute-force ranking of the kept images
    (worked out from what the collection's plan wrote), searched through one
    expression on the fields, never an ``owner in [...]`` list."""

    def through_an_expression(filters: Filters) -> None:
        assert expressions, filters.describe()
        assert all("owner in [" not in e for e in expressions), expressions
        expressions.clear()

    expressions.clear()
    assert_filtered_searches_are_brute_force(
        milvus_engine, filter_collection, kind, through_an_expression
    )


@pytest.mark.parametrize("task", ["image+text", "feedback"])
def test_every_method_returns_only_kept_images_on_milvus(
    milvus_engine: Spyglass, filter_collection: list[Planned], task: str
) -> None:
    """Feedback's random negatives still come from the kept images (their id list is
    made for them, once asked); the vector searches go through the expression."""
    engine, collection = milvus_engine, filter_collection
    ids = ids_of(engine, collection)
    watches = [ids[p.path] for p in collection if p.label == "watch"]
    filters = Filters.parse(under=[str(ROOT_FOLDER(collection) / "site-b")])
    among = set(kept(engine, collection, lambda p: p.folder == "site-b"))
    for method in method_names(task):
        if method == "pic2word":
            continue  # trains a mapping first (minutes); it searches through the same path
        terms = (
            (TextTerm("a wrist watch"),)
            if task == "feedback"
            else (ImageTerm(image_id=watches[0], weight=0.5), TextTerm("on a table", 0.5))
        )
        marks = {"positives": (watches[1],), "negatives": (ids[collection[2].path],)}
        query = Query(
            terms, method=method, k=8, filters=filters, **(marks if task == "feedback" else {})
        )  # type: ignore[arg-type]
        got = [r.image_id for r in engine.search(query)]
        assert len(got) == 8 and set(got) <= among, method


def test_copy_to_milvus_copies_the_filter_fields(
    filtered_index: Path,
    filter_collection: list[Planned],
    bundled: Encoder,
    tmp_path: Path,
    expressions: list[str],
) -> None:
    """``spyglass index --copy-to milvus://``: the copy's searches with filters run on
    the copied fields and equal the filtered brute force."""
    url = f"milvus://{tmp_path}/copy.db"
    outcome = CliRunner().invoke(main, ["index", "--index", str(filtered_index), "--copy-to", url])
    assert outcome.exit_code == 0, outcome.output
    collection = filter_collection
    with Spyglass(bundled, Index.open(url)) as engine:
        ids = ids_of(engine, collection)
        watches = [ids[p.path] for p in collection if p.label == "watch"]
        query, space, vector = query_and_reference(engine, "text", watches[0], 0, 0)
        for filters, keep in filter_cases(ROOT_FOLDER(collection)):
            got = engine.search(replace(query, filters=filters, k=30))
            want = brute_force(engine, space, vector, kept(engine, collection, keep), 30)
            assert [r.image_id for r in got] == want, filters.describe()
    assert expressions and all("owner in [" not in e for e in expressions)


#: Folder names a filter takes literally (LIKE wildcards, quotes, a backslash, spaces,
#: non-ASCII) and a look-alike each would match if read as a pattern.
AWKWARD = [
    ("50%", "50x"),
    ("5_0", "5x0"),
    ("it's", "its"),
    ('say "hi"', "say hi"),
    ("back\\slash", "back"),
    ("two  spaces", "two spaces"),
    ("ünïcødé/日本", "unicode"),
]


def test_awkward_folders_and_paths_that_move(
    data_root: Path, bundled: Encoder, tmp_path: Path, expressions: list[str]
) -> None:
    """``--under`` each awkward folder keeps exactly the images put there, and not
    their look-alikes'; an image copied into another folder is found under it too
    (its rows' fields were rewritten), and once its first file is deleted no longer
    under the first folder."""
    root = tmp_path / "photos"
    sources = sorted((data_root / "caltech101").rglob("*.jpg"))[: 2 * len(AWKWARD)]
    placed: dict[str, list[Path]] = {}
    for n, (folder, lookalike) in enumerate(AWKWARD):
        for name, source in ((folder, sources[2 * n]), (lookalike, sources[2 * n + 1])):
            target = root / name / f"{n}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(source) as image:
                image.convert("RGB").resize((96, 72)).save(target, "JPEG")
            placed.setdefault(name, []).append(target)
    url = f"milvus://{tmp_path}/awkward.db"

    def check(engine: Spyglass) -> None:
        text = engine.encoder.embed_texts(["a photo"])[0]
        for name, files in placed.items():
            expressions.clear()
            got = engine.search(
                Query(
                    (TextTerm("a photo"),),
                    method="sum",
                    rerank="none",
                    k=50,
                    filters=Filters.parse(under=[str(root / name)]),
                )
            )
            among = sorted({engine.index.catalogue.file(str(f)).image_id for f in files})  # type: ignore[union-attr]
            space = engine.encoder.info.text_space
            assert [r.image_id for r in got] == brute_force(
                engine, space, text / np.linalg.norm(text), among, 50
            ), name
            assert expressions and all("owner in [" not in e for e in expressions)

    with Spyglass(bundled, Index.open_for_writing(url, bundled.info)) as writer:
        writer.add([str(root)])
        check(writer)
        # The image in "50x" gains a path in "50%": same bytes, no new row.
        moved = placed["50x"][0]
        copy = root / "50%" / "copied.jpg"
        shutil.copyfile(moved, copy)
        writer.add([str(root)])
        placed["50%"].append(moved)
        check(writer)
        # ...and loses its first one: it stays under "50%" only.
        moved.unlink()
        writer.add([str(root)])
        placed["50x"].remove(moved)
        placed["50%"].remove(moved)
        placed["50%"].append(copy)
        check(writer)


def test_headers_read_after_a_copy_reach_the_milvus_fields(
    filtered_index: Path,
    filter_collection: list[Planned],
    bundled: Encoder,
    tmp_path: Path,
    expressions: list[str],
) -> None:
    """An index made before headers were kept (no ``image_meta``), copied into Milvus:
    its rows have no camera. The next ``spyglass index`` reads the headers, and the
    rows' fields take them in the same transaction: a camera filter then keeps the
    Nikons, through the expression."""
    old = tmp_path / "old"
    shutil.copytree(filtered_index, old)
    with sqlite3.connect(old / CATALOGUE_FILE) as db:
        db.execute("DROP TABLE image_meta")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    url = f"milvus://{tmp_path}/old.db"
    runner = CliRunner()
    copied = runner.invoke(main, ["index", "--index", str(old), "--copy-to", url])
    assert copied.exit_code == 0, copied.output
    collection = filter_collection
    nikon = Filters.parse(camera="nikon")
    with Spyglass(bundled, Index.open(url)) as engine:
        query = Query((TextTerm("a wrist watch"),), method="sum", rerank="none", k=30)
        assert engine.search(replace(query, filters=nikon)) == []
    indexed = runner.invoke(main, ["index", str(ROOT_FOLDER(collection)), "--index", url])
    assert indexed.exit_code == 0, indexed.output
    with Spyglass(bundled, Index.open(url)) as engine:
        expressions.clear()
        got = [r.image_id for r in engine.search(replace(query, filters=nikon))]
        among = kept(engine, collection, lambda p: bool(p.camera and "NIKON" in p.camera))
        text = engine.encoder.embed_texts(["a wrist watch"])[0]
        space = engine.encoder.info.text_space
        assert got == brute_force(engine, space, text / np.linalg.norm(text), among, 30)
        assert among and expressions and all("owner in [" not in e for e in expressions)
