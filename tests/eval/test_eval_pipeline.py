"""The harness as a library: its numbers against a brute-force computation from the
index's stored vectors, the issue-2 floors on all of Caltech-101, index reuse, and the
pieces that need no model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import (
    DatasetRules,
    IndexedCollection,
    LabelledCollection,
    class_phrase,
    default_index_dir,
    open_collection,
    read_collection,
)
from spyglass.eval.protocols.image import run_image
from spyglass.eval.protocols.running import RunSettings
from spyglass.eval.protocols.text import run_text
from spyglass.eval.report import markdown_table
from spyglass.eval.suite import comparable, differences
from spyglass.eval.variants import Variant, select_variants


def brute_force_ap(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP with ties broken pessimistically, by sorting (score desc, relevant last)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], bool(relevant[i])))
    found, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if relevant[i]:
            found += 1
            total += found / rank
    return total / int(relevant.sum())


@pytest.fixture(scope="module")
def caltech(caltech_engine) -> IndexedCollection:
    engine, labelled = caltech_engine
    columns = tuple(labelled.rows[0])
    collection = LabelledCollection(labelled.root, DatasetRules(), tuple(labelled.rows), columns)
    return IndexedCollection.attach(engine, collection)


def test_text_protocol_matches_brute_force_and_the_floor(caltech) -> None:
    result = run_text(caltech, [Variant("sum")])
    summed = result.method("sum")
    assert summed.queries == 100
    assert summed.metrics["mAP"] >= 0.42  # issue 2's floor; ~0.46 measured
    info = caltech.engine.encoder.info
    vectors = caltech.engine.index.stores[info.text_space].fetch(caltech.ids)
    labels = caltech.column("label")
    for label, ap in zip(summed.query_names, summed.per_query_ap, strict=True):
        text = caltech.engine.encoder.embed_texts([f"a photo of a {class_phrase(label)}"])[0]
        expected = brute_force_ap(vectors @ text, labels == label)
        # float32 sums in another order may swap items whose scores differ by ~1e-7
        assert ap == pytest.approx(expected, abs=2e-3), label
    assert np.mean(summed.per_query_ap) == pytest.approx(summed.metrics["mAP"])


def test_image_protocol_matches_brute_force_and_the_floor(caltech) -> None:
    result = run_image(caltech, [Variant("sum")], sample=200, settings=RunSettings(seed=1))
    summed = result.method("sum")
    assert summed.queries == 200
    assert summed.metrics["mAP"] >= 0.70  # issue 2's floor; ~0.76 measured
    info = caltech.engine.encoder.info
    vectors = caltech.engine.index.stores[info.image_space].fetch(caltech.ids)
    labels = caltech.column("label")
    position = {row["path"]: p for p, row in enumerate(caltech.rows)}
    for path, ap in zip(summed.query_names[:40], summed.per_query_ap[:40], strict=True):
        q = position[path]
        others = np.arange(len(caltech)) != q
        scores = vectors[others] @ vectors[q]
        expected = brute_force_ap(scores, (labels == labels[q])[others])
        assert ap == pytest.approx(expected, abs=2e-3), path


def test_a_second_run_reuses_the_index(small_caltech, bundled) -> None:
    collection = read_collection(small_caltech.folder)
    first, _ = open_collection(collection, bundled, small_caltech.index_dir)
    first.engine.close()
    again, report = open_collection(collection, bundled, small_caltech.index_dir)
    again.engine.close()
    assert report.embedded == 0 and report.added == 0
    assert len(again) == 60
    assert again.ids.tolist() == first.ids.tolist()


def test_default_index_dirs_keep_folders_and_models_apart(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    one = default_index_dir(cache, tmp_path / "a" / "pacs", "bundled")
    two = default_index_dir(cache, tmp_path / "b" / "pacs", "bundled")
    assert one != two and one.parent.name.startswith("pacs-") and one.name == "bundled"
    assert default_index_dir(cache, tmp_path / "b" / ".." / "a" / "pacs", "bundled") == one
    path_model = default_index_dir(cache, tmp_path / "a" / "pacs", "/models/clip vit")
    assert path_model.parent == one.parent
    assert "/" not in path_model.name and " " not in path_model.name
    # Another version of the same name (a new default image model) is kept apart.
    versions = {default_index_dir(cache, tmp_path / "a" / "pacs", "bundled", v) for v in "ab"}
    assert len(versions) == 2 and one not in versions
    assert all(v.parent == one.parent and v.name.startswith("bundled@") for v in versions)


def write_labels(folder: Path, rows: list[dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_dataset_rules_and_overrides(tmp_path: Path) -> None:
    rows = [
        {"path": "images/a.jpg", "label": "Faces_easy", "is_background": "0"},
        {"path": "images/b.jpg", "label": "BACKGROUND_Google", "is_background": "1"},
        {"path": "images/c.jpg", "label": "car_side", "is_background": "0"},
    ]
    write_labels(tmp_path / "caltech101", rows)
    known = read_collection(tmp_path / "caltech101")
    assert [r["path"] for r in known.rows] == ["images/c.jpg"] and known.excluded == 2
    write_labels(tmp_path / "mine", rows)
    generic = read_collection(tmp_path / "mine", exclude=[("label", "car_side")])
    assert len(generic.rows) == 2
    with pytest.raises(InvalidQuery, match="no such column"):
        read_collection(tmp_path / "mine", exclude=[("colour", "red")])
    assert class_phrase("car_side") == "car side"
    assert class_phrase("Faces  easy") == "faces easy"


def test_variants_follow_the_registry() -> None:
    assert [v.name for v in select_variants("text", ["default"])] == ["sum"]
    names = [v.name for v in select_variants("image", ["sum"], ["none"])]
    assert names == ["sum"]
    with pytest.raises(InvalidQuery, match="unknown re-ranking"):
        select_variants("text", ["sum"], ["no-such"])
    with pytest.raises(InvalidQuery, match="unknown method"):
        select_variants("text", ["no-such"])


def test_check_ignores_timings_only() -> None:
    from spyglass.eval.metrics import Estimate
    from spyglass.eval.results import MethodResult, ProtocolResult

    def report(map_value: float, seconds: float) -> str:
        method = MethodResult(
            "sum", {"mAP": map_value}, Estimate(map_value, 0.1, 0.9), 3, 0, seconds,
            ["a"], [map_value], [], [], [],
        )  # fmt: skip
        result = ProtocolResult("text", "d", "m", "i", {}, {"images": 3}, [method], ["mAP"])
        return markdown_table(result)

    same = differences(comparable(report(0.5, 0.01)), comparable(report(0.5, 0.09)))
    assert same == []
    changed = differences(comparable(report(0.5, 0.01)), comparable(report(0.6, 0.01)))
    assert any("0.600" in line for line in changed)


def test_a_full_ranking_reranks_only_the_top(caltech) -> None:
    """Evaluation ranks everything; re-rankers must still see only the top
    RERANK_DEPTH, as users' searches do, with the method's order below them."""
    from spyglass.query.rerank import RERANK_DEPTH, reranker_names
    from spyglass.query.terms import Query, TextTerm

    rerankers = [name for name in reranker_names() if name != "none"]
    if not rerankers:
        pytest.skip("no re-ranker registered")
    terms = (TextTerm("a photo of a bonsai"),)
    plain = caltech.engine.searcher.rank(Query(terms, k=caltech.index_size))
    for name in rerankers:
        reranked = caltech.engine.searcher.rank(Query(terms, k=caltech.index_size, rerank=name))
        assert len(reranked) == len(plain)
        top = {i for i, _ in plain[:RERANK_DEPTH]}
        assert {i for i, _ in reranked[:RERANK_DEPTH]} == top
        # Below the top, the method's order (the engine may adjust those scores).
        assert [i for i, _ in reranked[RERANK_DEPTH:]] == [i for i, _ in plain[RERANK_DEPTH:]]


def test_an_evaluation_waits_for_another_one_indexing(small_caltech, bundled) -> None:
    import threading

    from spyglass.errors import IndexLocked
    from spyglass.store.index import Index

    collection = read_collection(small_caltech.folder)
    first, _ = open_collection(collection, bundled, small_caltech.index_dir)
    first.engine.close()
    holder = Index.open_for_writing(small_caltech.index_dir, bundled.info)
    try:
        with pytest.raises(IndexLocked):
            open_collection(collection, bundled, small_caltech.index_dir, lock_wait=0.0)
        threading.Timer(1.0, holder.close).start()
        waited, report = open_collection(
            collection, bundled, small_caltech.index_dir, lock_wait=30.0
        )
        waited.engine.close()
        assert report.embedded == 0 and len(waited) == 60
    finally:
        holder.close()
