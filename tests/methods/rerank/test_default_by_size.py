"""What ``--rerank default`` means, by kind of query and collection size (issue #8, item
8): k-reciprocal re-ranking hurt small collections, so the default applies it only where
`spyglass eval rerank` measured it to help (docs/methods.md)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from spyglass.encoders import Encoder, load_encoder
from spyglass.engine import Spyglass
from spyglass.query.methods import TASKS
from spyglass.query.rerank import (
    KRECIPROCAL_MIN_IMAGES,
    collection_size,
    describe_default_reranker,
    get_reranker,
    resolve_reranker,
)
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.settings import RuntimeSettings
from spyglass.store.index import Index


def open_index(folder: Path, index_dir: Path, encoder: Encoder) -> Spyglass:
    engine = Spyglass(encoder, Index.open_for_writing(index_dir, encoder.info))
    engine.add([str(folder)])
    return engine


def names(engine: Spyglass, query: Query) -> list[str]:
    return [Path(result.path).name for result in engine.search(query)]


# -- the policy alone ----------------------------------------------------------------------


def test_default_is_kreciprocal_for_image_queries_from_the_measured_size_only() -> None:
    for size in (0, 42, 100, KRECIPROCAL_MIN_IMAGES - 1):
        assert resolve_reranker("default", "image", size) == "none", size
    for size in (KRECIPROCAL_MIN_IMAGES, 1_000, 1_000_000):
        assert resolve_reranker("default", "image", size) == "kreciprocal", size
    # Listings of the defaults, which know no collection: the rule for a large one.
    assert resolve_reranker("default", "image") == "kreciprocal"
    assert describe_default_reranker("image") == (
        f"kreciprocal from {KRECIPROCAL_MIN_IMAGES:,} images, else none"
    )
    assert get_reranker("default", "image", 42) is get_reranker("none")
    assert get_reranker("default", "image", 10_000) is get_reranker("kreciprocal")


def test_default_is_none_for_every_other_kind_of_query_at_any_size() -> None:
    for task in set(TASKS) - {"image"}:
        for size in (None, 42, KRECIPROCAL_MIN_IMAGES, 10_000):
            assert resolve_reranker("default", task, size) == "none", (task, size)
        assert describe_default_reranker(task) == "none"


def test_a_named_reranking_applies_whatever_the_collection_size() -> None:
    for name in ("none", "aqe", "kreciprocal"):
        for task in TASKS:
            for size in (None, 5, 42, 10_000):
                assert resolve_reranker(name, task, size) == name


# -- end to end: the 42 photos of the issue, and a collection at the threshold ----------------


@pytest.fixture(scope="module")
def photos_engine(
    photos, bundled: Encoder, runtime: RuntimeSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Spyglass]:
    """The 42 photos, embedded as when the issue was filed: the bundled model with its
    float image model and its attribute channel off (version 1 vectors). The rule is
    about re-ranking, not the model; with the channel on, "old coins" ranks the coins
    photo 6th with or without k-reciprocal re-ranking, and with the int8 image model
    re-ranking keeps it 4th, so the issue's observation cannot be seen there."""
    float_model = {k: v for k, v in bundled.info.spec.items() if k != "image_model"}
    encoder = load_encoder({**float_model, "colour_weight": 0.0, "style_weight": 0.0}, runtime)
    engine = open_index(photos.root / "images", tmp_path_factory.mktemp("photos-index"), encoder)
    yield engine
    engine.close()


@pytest.mark.parametrize(
    "text, photo",
    [("old coins", "33_coins.jpg"), ("a chinese temple by a lake", "44_china.jpg")],
)
def test_on_the_42_photos_the_default_finds_what_the_plain_ranking_finds(
    photos_engine: Spyglass, text: str, photo: str
) -> None:
    """The issue's observation: k-reciprocal re-ranking, the old default, pushed these
    photos out of the top 5 (coins 2nd -> beyond 5th)."""
    assert collection_size(photos_engine.index) == 42
    default = names(photos_engine, Query((TextTerm(text),), k=42))
    plain = names(photos_engine, Query((TextTerm(text),), k=42, rerank="none"))
    reranked = names(photos_engine, Query((TextTerm(text),), k=42, rerank="kreciprocal"))
    assert photo in default[:5], default[:5]
    assert default == plain
    # The ablation: the old default would have lost the photo.
    assert photo not in reranked[:5], reranked[:5]


def test_on_the_42_photos_an_image_query_is_not_reranked_by_default(
    photos_engine: Spyglass,
) -> None:
    coins = next(
        r.id for r in photos_engine.index.catalogue.iter_images() if r.path.endswith("coins.jpg")
    )
    query = Query((ImageTerm(image_id=coins),), k=42)
    plain = Query((ImageTerm(image_id=coins),), k=42, rerank="none")
    assert names(photos_engine, query) == names(photos_engine, plain)


def test_from_the_threshold_on_image_queries_are_reranked_by_default(
    data_root: Path, bundled: Encoder, tmp_path: Path
) -> None:
    """The size reaches the policy from the index: a collection of exactly
    KRECIPROCAL_MIN_IMAGES Caltech-101 images gets k-reciprocal re-ranking."""
    with (data_root / "caltech101" / "labels.csv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["is_background"] == "0"]
    rows.sort(key=lambda r: r["path"])
    chosen = rows[:: len(rows) // KRECIPROCAL_MIN_IMAGES][:KRECIPROCAL_MIN_IMAGES]
    farm = tmp_path / "caltech"
    for row in chosen:
        (farm / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        (farm / row["path"]).symlink_to(data_root / "caltech101" / row["path"])
    engine = open_index(farm, tmp_path / "index", bundled)
    try:
        assert collection_size(engine.index) == KRECIPROCAL_MIN_IMAGES
        first = next(engine.index.catalogue.iter_images()).id
        ranked = {
            rerank: names(engine, Query((ImageTerm(image_id=first),), k=50, rerank=rerank))
            for rerank in ("default", "none", "kreciprocal")
        }
        assert ranked["default"] == ranked["kreciprocal"] != ranked["none"]
    finally:
        engine.close()
