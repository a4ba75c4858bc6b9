"""Near-duplicates: edited copies join their original, other images of the same class
do not; groups are printed largest first, the same way every time; searches can show
each group once."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from spyglass.casework.duplicates import DuplicateRule, UnionFind, group_edges
from spyglass.cli import main
from spyglass.engine import Spyglass
from spyglass.query.terms import ImageTerm, Query

from .conftest import EditedCollection, image_id


def group_of(groups: list[tuple[int, ...]], member: int) -> tuple[int, ...]:
    return next((g for g in groups if member in g), (member,))


def test_edited_copies_join_their_original_and_other_images_do_not(
    engine: Spyglass, edited: EditedCollection
) -> None:
    groups = [g.members for g in engine.duplicates()]
    for source, copies in edited.copies.items():
        original = image_id(engine, source)
        group = group_of(groups, original)
        half = image_id(engine, copies["half"])
        q30 = image_id(engine, copies["q30"])
        assert {original, half, q30} <= set(group), (source.name, group)
        label = source.parent.name
        others = {image_id(engine, p) for p in edited.by_class[label][1:]}
        assert not others & set(group), f"a distinct {label} image joined {source.name}"


def test_groups_are_connected_components_largest_first() -> None:
    # Three images chained by two links form one group; its weakest link is 0.93.
    groups = group_edges([(5, 9, 0.97), (1, 2, 0.99), (2, 7, 0.93), (3, 4, 0.95)])
    assert [g.members for g in groups] == [(1, 2, 7), (3, 4), (5, 9)]
    assert groups[0].weakest == 0.93
    joined = UnionFind()
    joined.union(4, 2)
    assert joined.find(4) == joined.find(2) == 2 and joined.find(8) == 8


def test_perceptual_hashes_join_what_the_embedding_alone_misses(
    engine: Spyglass, edited: EditedCollection
) -> None:
    with_hashes = [g.members for g in engine.duplicates(DuplicateRule())]
    cosine_only = [g.members for g in engine.duplicates(DuplicateRule(phash_distance=None))]
    joined = sum(len(g) for g in with_hashes)
    assert joined > sum(len(g) for g in cosine_only)
    assert joined >= 2 * len(edited.copies)


def test_cli_prints_and_writes_groups_the_same_way_every_time(
    edited_index: Path, tmp_path: Path
) -> None:
    runs = []
    for n in range(2):
        out = tmp_path / f"groups-{n}.json"
        result = CliRunner().invoke(
            main, ["duplicates", "--index", str(edited_index), "--json", str(out)]
        )
        assert result.exit_code == 0, result.output
        runs.append((result.stdout, json.loads(out.read_text())))
    assert runs[0] == runs[1]
    document = runs[0][1]
    sizes = [g["size"] for g in document["groups"]]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) >= 4
    assert runs[0][0].startswith(f"group 1: {sizes[0]} images")
    csv_file = tmp_path / "groups.csv"
    result = CliRunner().invoke(
        main, ["duplicates", "--index", str(edited_index), "--csv", str(csv_file)]
    )
    assert result.exit_code == 0
    assert len(csv_file.read_text().splitlines()) == 1 + sum(sizes)


def test_collapse_shows_each_group_once_with_its_size(
    engine: Spyglass, edited: EditedCollection
) -> None:
    source = next(iter(edited.copies))
    members = {image_id(engine, p) for p in [source, *edited.copies[source].values()]}
    query = Query((ImageTerm(path=str(source)),), k=8)
    plain = engine.search(query)
    collapsed = engine.search_collapsed(query)
    # Without collapsing, the copies fill the top of the list...
    assert len({r.image_id for r in plain[:4]} & members) >= 3
    # ...collapsed, the group is one result, first, and none of it comes again.
    first = collapsed[0]
    assert first.image_id in members and first.group_size >= 3
    assert set(first.duplicates) <= members | set(first.duplicates)
    later = {c.image_id for c in collapsed[1:]}
    assert not later & set(first.duplicates) and len(collapsed) == 8
    # The group size is the one `spyglass duplicates` finds.
    groups = [g.members for g in engine.duplicates()]
    assert first.group_size == len(group_of(groups, first.image_id))


def test_cli_search_collapses_duplicates(edited_index: Path, edited: EditedCollection) -> None:
    source = next(iter(edited.copies))
    args = ["search", "--image", str(source), "--index", str(edited_index), "-k", "5"]
    plain = CliRunner().invoke(main, [*args, "--json"])
    collapsed = CliRunner().invoke(main, [*args, "--json", "--collapse-duplicates"])
    text = CliRunner().invoke(main, [*args, "--collapse-duplicates"])
    assert plain.exit_code == collapsed.exit_code == text.exit_code == 0, collapsed.output
    plain_paths = [r["path"] for r in json.loads(plain.stdout)]
    hits = json.loads(collapsed.stdout)
    assert sum(Path(p).stem.startswith(source.stem) for p in plain_paths) >= 3
    assert sum(Path(h["path"]).stem.startswith(source.stem) for h in hits) == 1
    assert hits[0]["group_size"] >= 3
    assert f"(+{hits[0]['group_size'] - 1} near-duplicates)" in text.stdout.splitlines()[0]
