"""The same real images indexed into the embedded store and into Milvus Lite (started
by the test, inside this process) answer every kind of query alike: text, image,
image+text, marks, and a region of an image searched among crops. An embedded index
copied into Milvus (``spyglass index --copy-to``) answers alike too, and nothing is
embedded again for it.

Milvus keeps the vectors rounded to float16 as the embedded store does, so the scores
agree to float32 rounding and the rankings are the same.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from spyglass.encoders.base import Encoder
from spyglass.engine import Spyglass
from spyglass.errors import IndexProblem
from spyglass.query.filters import Filters
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.settings import IngestSettings
from spyglass.store.index import Index
from spyglass.store.local import LocalVectorStore
from spyglass.store.milvus import MilvusVectorStore

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

CLASSES = ["accordion", "airplanes", "anchor", "ant", "barrel", "bass", "beaver", "bonsai"]
#: 2 photos of each class: 16 images, each embedded with a 2x2 grid of crops.
PER_CLASS = 2
K = 6


@pytest.fixture(scope="module")
def photos(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = data_root / "caltech101" / "images"
    folder = tmp_path_factory.mktemp("photos")
    for name in CLASSES:
        for path in sorted((source / name).iterdir())[:PER_CLASS]:
            shutil.copy2(path, folder / f"{name}-{path.name}")
    return folder


def build(photos: Path, index: str, encoder: Encoder) -> None:
    with Spyglass(
        encoder, Index.open_for_writing(index, encoder.info), IngestSettings(crop_grid=2)
    ) as engine:
        engine.add([str(photos)])


@pytest.fixture(scope="module")
def embedded(
    photos: Path, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Spyglass]:
    folder = str(tmp_path_factory.mktemp("embedded"))
    build(photos, folder, bundled)
    with Spyglass(bundled, Index.open(folder)) as engine:
        yield engine


@pytest.fixture(scope="module")
def in_milvus(
    photos: Path, bundled: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Spyglass]:
    url = f"milvus://{tmp_path_factory.mktemp('milvus')}/vectors.db"
    build(photos, url, bundled)
    with Spyglass(bundled, Index.open(url)) as engine:
        yield engine


def queries(photos: Path) -> dict[str, Query]:
    accordion = str(sorted(photos.glob("accordion-*"))[0])
    return {
        "text": Query((TextTerm("a musical instrument"),), k=K),
        "image": Query((ImageTerm(image_id=3),), k=K),
        "image+text": Query((ImageTerm(path=accordion), TextTerm("a ship")), k=K),
        "marks": Query((TextTerm("an animal"),), k=K, positives=(6, 7), negatives=(0,)),
        "marks alone": Query((), k=K, positives=(8, 9)),
        # A region of an image: searched among the crops of every image.
        "crop": Query((ImageTerm(image_id=5, region=(0.0, 0.0, 0.5, 0.5)),), k=K),
    }


def ranking(engine: Spyglass, query: Query) -> list[tuple[str, float]]:
    return [(Path(r.path).name, round(r.score, 4)) for r in engine.search(query)]


def test_milvus_lite_index_answers_every_query_like_the_embedded_one(
    embedded: Spyglass, in_milvus: Spyglass, photos: Path
) -> None:
    assert all(isinstance(s, LocalVectorStore) for s in embedded.index.stores.values())
    assert all(isinstance(s, MilvusVectorStore) for s in in_milvus.index.stores.values())
    # The crop space holds 4 rows per image: owners there are scored by their best row.
    assert len(in_milvus.index.stores["joint.crops"]) == 4 * len(CLASSES) * PER_CLASS
    for name, query in queries(photos).items():
        want = ranking(embedded, query)
        assert len(want) == K, name
        assert ranking(in_milvus, query) == want, name


def test_with_filters_milvus_answers_every_query_like_the_embedded_one(
    embedded: Spyglass, in_milvus: Spyglass, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every query kind, crops included, under a size filter keeping about half of the
    images: the same rankings as the embedded store (which searches the id list), with
    every Milvus search, in the image and the crop spaces, filtered by one expression on
    the rows' fields."""
    widths = sorted(w for (w,) in embedded.index.catalogue.execute("SELECT width FROM images"))
    filters = Filters(min_width=widths[len(widths) // 2])
    sent: list[tuple[str, str]] = []
    original = MilvusVectorStore._search

    def spy(self, queries, limit, expression):  # type: ignore[no-untyped-def]
        sent.append((self.space, expression))
        return original(self, queries, limit, expression)

    monkeypatch.setattr(MilvusVectorStore, "_search", spy)
    for name, query in queries(photos).items():
        filtered = replace(query, filters=filters)
        want = ranking(embedded, filtered)
        assert want, name
        assert ranking(in_milvus, filtered) == want, name
    assert {space for space, _ in sent} >= {"joint", "joint.crops"}
    assert all("width >= " in e and "owner in [" not in e for _, e in sent)


def test_copy_to_milvus_answers_alike_without_embedding_again(
    embedded: Spyglass, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spyglass.cli.indexing import index_command

    url = f"milvus://{tmp_path}/copy.db"

    def no_embedding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the copy embedded an image")

    monkeypatch.setattr(type(embedded.encoder), "embed_pixels", no_embedding)
    result = CliRunner().invoke(
        index_command, ["--index", str(embedded.index.folder), "--copy-to", url, "--json"]
    )
    assert result.exit_code == 0, result.output
    monkeypatch.undo()
    with Spyglass(embedded.encoder, Index.open(url)) as copied:
        assert copied.index.milvus is not None
        assert copied.index.catalogue.counts() == embedded.index.catalogue.counts()
        for name, query in queries(photos).items():
            assert ranking(copied, query) == ranking(embedded, query), name
    # Copying again into the same place is refused: it would double every row.
    again = CliRunner().invoke(
        index_command, ["--index", str(embedded.index.folder), "--copy-to", url]
    )
    assert isinstance(again.exception, IndexProblem)
    assert "already holds 16 images" in str(again.exception)


def test_the_commands_take_a_milvus_url_as_index(embedded: Spyglass, photos: Path, tmp_path):
    """`spyglass index PATH --index milvus:///file.db`, then `spyglass search` and
    `spyglass info` with the same URL; the catalogue lands next to the file."""
    from spyglass.cli import main

    url = f"milvus://{tmp_path}/cli.db"
    indexed = CliRunner().invoke(
        main, ["index", str(photos), "--index", url, "--crops", "2", "-q", "--json"]
    )
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.stdout)["added"] == len(CLASSES) * PER_CLASS
    assert (tmp_path / "cli.db.catalogue" / "catalogue.sqlite").is_file()
    found = CliRunner().invoke(
        main, ["search", "a musical instrument", "-k", str(K), "--index", url, "--json"]
    )
    assert found.exit_code == 0, found.output
    text = queries(photos)["text"]
    want = [Path(r.path).name for r in embedded.search(text)]
    assert [Path(hit["path"]).name for hit in json.loads(found.stdout)] == want
    info = CliRunner().invoke(main, ["info", "--index", url])
    assert "Milvus Lite FLAT index" in info.output
