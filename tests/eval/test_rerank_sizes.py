"""`spyglass eval rerank`: re-ranking measured on seeded random collections of given
sizes, each searched as an index of its own images only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spyglass.cli import main
from spyglass.engine import Spyglass
from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import open_collection, read_collection
from spyglass.eval.sizes import collection_sizes, draw_positions, parse_run, parse_sizes
from spyglass.eval.variants import registered_rerankers
from spyglass.query.rerank import resolve_reranker
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.store.index import Index


def test_a_drawn_collection_ranks_as_an_index_of_its_images_alone(
    small_caltech, bundled, tmp_path: Path
) -> None:
    """The folder's index also holds the other members and the 8 rows the caltech101
    rules leave out; inside ``restricted_to`` none of them may show up, and every
    re-ranking must order what it would order in an index built from the drawn files."""
    collection, _ = open_collection(
        read_collection(small_caltech.folder), bundled, small_caltech.index_dir
    )
    everything = collection.engine.index.count()
    assert everything == 68
    # 45 images: more than k-reciprocal's 2 k1 = 40, so every re-ranking re-orders.
    positions = draw_positions(len(collection), 45, draw=0, seed=0)
    farm = tmp_path / "drawn"
    for p in positions:
        path = collection.rows[p]["path"]
        (farm / path).parent.mkdir(parents=True, exist_ok=True)
        (farm / path).symlink_to(small_caltech.folder / path)
    alone = Spyglass(bundled, Index.open_for_writing(tmp_path / "drawn-index", bundled.info))
    alone.add([str(farm)])

    def paths_alone(query: Query) -> list[str]:
        ids = [i for i, _ in alone.searcher.rank(query)]
        records = alone.index.catalogue.images(ids)
        return [str(Path(records[i].path).relative_to(farm)) for i in ids]

    kinds = [(TextTerm("a photo of a bonsai"),), (TextTerm("a photo of a watch"),)]
    try:
        with collection.restricted_to(positions) as drawn:
            assert len(drawn) == 45
            # An image query, named by its id in the folder's index / by its drawn file.
            kinds.append((ImageTerm(image_id=int(drawn.ids[0])),))
            for terms in kinds:
                for rerank in ("none", *registered_rerankers()):
                    ranked = drawn.engine.searcher.rank(Query(terms, k=everything, rerank=rerank))
                    members = drawn.positions_of([i for i, _ in ranked])
                    assert len(ranked) == 45 and (members >= 0).all(), rerank
                    paths = [drawn.rows[p]["path"] for p in members]
                    if isinstance(terms[0], ImageTerm):
                        terms = (ImageTerm(path=str(farm / drawn.rows[0]["path"])),)
                    assert paths == paths_alone(Query(terms, k=45, rerank=rerank)), rerank
        # Outside the block, the whole index is searched again.
        assert len(collection.engine.searcher.rank(Query(kinds[0], k=everything))) == 68
    finally:
        alone.close()
        collection.engine.close()


def test_sizes_cap_at_the_folder_and_draws_are_seeded_per_size() -> None:
    assert collection_sizes([100, 1000, 10000], 42) == [42]
    assert collection_sizes([10000, 100, 1000], 2748) == [100, 1000, 2748]
    first = draw_positions(2748, 100, draw=0, seed=0)
    assert len(set(first.tolist())) == 100 and list(first) == sorted(first)
    assert np.array_equal(first, draw_positions(2748, 100, draw=0, seed=0))
    assert not np.array_equal(first, draw_positions(2748, 100, draw=1, seed=0))
    assert not np.array_equal(first, draw_positions(2748, 100, draw=0, seed=1))
    assert np.array_equal(draw_positions(42, 100, draw=3, seed=0), np.arange(42))
    assert parse_sizes("100, 1000,10000") == (100, 1000, 10000)
    assert parse_run("fashion:caption").dataset == "fashion"
    for bad in ("", "1", "ten", "100,x"):
        with pytest.raises(InvalidQuery):
            parse_sizes(bad)
    for bad in ("caltech101", "caltech101:composed", ":text"):
        with pytest.raises(InvalidQuery):
            parse_run(bad)


def test_the_rerank_command_pools_draws_and_pairs_each_reranking_with_none(
    small_caltech, tmp_path: Path
) -> None:
    # The folder is named caltech101, so the caltech101 rules apply: 60 images.
    args = ["eval", "rerank", "--data", str(small_caltech.folder.parent)]
    args += ["--index-root", str(tmp_path / "indexes"), "--run", "caltech101:text"]
    args += ["--run", "caltech101:image", "--sizes", "30,1000", "--draws", "2"]
    args += ["--queries", "20", "-q"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output + str(result.exception)
    report = json.loads(result.stdout)
    rows = {(r["protocol"], r["size"]): r for r in report["rows"]}
    assert set(rows) == {("text", 30), ("text", 60), ("image", 30), ("image", 60)}
    for (protocol, size), row in rows.items():
        whole = size == 60
        assert row["whole_folder"] == whole and row["draws"] == (1 if whole else 2)
        assert row["queries"] > 0
        if protocol == "image":  # --queries 20 split over the draws
            assert row["queries"] + row["excluded_queries"] == (20 if whole else 2 * 10)
        else:  # every class a drawn collection holds, in each draw
            assert row["queries"] <= 5 * row["draws"]
        assert [r["rerank"] for r in row["rerankers"]] == registered_rerankers()
        for reranked in row["rerankers"]:
            # Paired over the same queries: the mean gain is the difference of the means.
            difference = reranked["mAP"]["mean"] - row["none"]["mAP"]["mean"]
            assert reranked["gain_over_none"]["mean"] == pytest.approx(difference, abs=1e-9)
            assert reranked["verdict"] in ("helps", "hurts", "same")
        assert row["default"] == resolve_reranker("default", protocol, size)
    # The whole folder without re-ranking: the numbers of `spyglass eval image`. (With
    # re-ranking they differ: there the rows the rules leave out stay in the index and in
    # the re-rankers' neighbourhoods, while a drawn collection is its members alone.)
    image_args = ["eval", "image", *small_caltech.cli_args(), "--method", "sum"]
    plain = CliRunner().invoke(main, [*image_args, "--sample", "20", "--json", "-q"])
    assert plain.exit_code == 0, plain.output
    summed = json.loads(plain.stdout)["results"][0]
    assert rows[("image", 60)]["none"]["mAP"]["mean"] == pytest.approx(
        summed["metrics"]["mAP"], abs=1e-6
    )

    table = CliRunner().invoke(main, [*args, "--markdown"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].startswith("| collection | images | query | queries |")
    assert len(lines) == 2 + 4
    assert "| caltech101 | 30 x 2 |" in table.stdout and "| 60 (all) |" in table.stdout
