"""Re-indexing embeds only what changed; renames and copies are recognised by content."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from spyglass.engine import Spyglass
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.store.index import Index


def open_engine(index_dir: Path, encoder) -> Spyglass:
    return Spyglass(encoder, Index.open_for_writing(index_dir, encoder.info))


def test_add_delete_rename_duplicate_then_reindex(
    small_folder: Path, tmp_path: Path, bundled, data_root: Path
):
    index_dir = tmp_path / "index"
    with open_engine(index_dir, bundled) as engine:
        first = engine.add([str(small_folder)])
    assert (first.added, first.embedded, first.linked, first.removed) == (12, 12, 0, 0)

    # Change the folder: 2 new files, 1 deleted, 1 renamed, 1 duplicated, 1 touched.
    extra = sorted((data_root / "caltech101" / "images" / "camera").iterdir())[:2]
    for n, path in enumerate(extra):
        shutil.copy2(path, small_folder / f"camera-{n}.jpg")
    (small_folder / "ant.jpg").unlink()
    (small_folder / "bass.jpg").rename(small_folder / "fish.jpg")
    shutil.copy2(small_folder / "anchor.jpg", small_folder / "anchor-copy.jpg")
    os.utime(small_folder / "brain.jpg", ns=(1, 1))  # new mtime, same bytes

    with open_engine(index_dir, bundled) as engine:
        second = engine.add([str(small_folder)])
        status = engine.status()
        fish = engine.search(Query((ImageTerm(path=str(small_folder / "fish.jpg")),), k=1))[0]
        anchors = engine.search(Query((ImageTerm(path=str(small_folder / "anchor.jpg")),), k=1))[0]
        everything = engine.search(Query((TextTerm("a photo"),), k=100))

    assert second.embedded == 2, "only the two new photos are embedded"
    assert (second.added, second.linked, second.removed, second.changed) == (2, 2, 2, 0)
    assert second.unchanged == 10  # the 10 original paths left, the touched one included
    assert (
        status.images == 14
    )  # files: 12 - 1 deleted - 1 renamed-away + 1 renamed-to + 1 copy + 2 new
    assert status.unique_images == 13  # the copy shares its content
    assert status.embedded == 14  # every content ever embedded, the deleted ant included
    found = {p for r in everything for p in r.paths}
    assert str(small_folder / "ant.jpg") not in found
    assert str(small_folder / "bass.jpg") not in found
    assert fish.path == str(small_folder / "fish.jpg") and fish.score > 0.99
    assert set(anchors.paths) == {
        str(small_folder / "anchor.jpg"),
        str(small_folder / "anchor-copy.jpg"),
    }
    assert len(everything) == 13

    # A third run finds nothing to do.
    with open_engine(index_dir, bundled) as engine:
        third = engine.add([str(small_folder)])
    assert (third.embedded, third.added, third.linked, third.removed, third.unchanged) == (
        0,
        0,
        0,
        0,
        14,
    )


def test_changed_content_is_embedded_again_and_old_content_leaves(
    small_folder: Path, tmp_path: Path, bundled
):
    index_dir = tmp_path / "index"
    with open_engine(index_dir, bundled) as engine:
        engine.add([str(small_folder)])
    shutil.copy2(small_folder / "bonsai.jpg", small_folder / "accordion.jpg")  # overwrite
    with open_engine(index_dir, bundled) as engine:
        report = engine.add([str(small_folder)])
        results = engine.search(Query((TextTerm("an accordion"),), k=20))
    assert report.embedded == 0 and report.changed == 1  # bonsai's content was known
    bonsai = next(r for r in results if str(small_folder / "bonsai.jpg") in r.paths)
    assert str(small_folder / "accordion.jpg") in bonsai.paths
    assert len(results) == 11  # the accordion photo's content has no file left


def test_one_index_covers_several_folders(
    small_folder: Path, tmp_path: Path, bundled, data_root: Path
):
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted((data_root / "photos" / "images").iterdir())[:3]:
        shutil.copy2(path, other / path.name)
    index_dir = tmp_path / "index"
    with open_engine(index_dir, bundled) as engine:
        engine.add([str(small_folder)])
        report = engine.add([str(other)])
        status = engine.status()
    assert report.added == 3 and report.removed == 0, "indexing one folder leaves the other alone"
    assert status.images == 15
    assert status.roots == sorted([str(small_folder), str(other)])


def test_a_second_writer_is_refused_while_the_first_holds_the_index(tmp_path: Path, bundled):
    import pytest

    from spyglass.errors import IndexLocked

    first = Index.open_for_writing(tmp_path / "index", bundled.info)
    with pytest.raises(IndexLocked, match="being written by pid"):
        Index.open_for_writing(tmp_path / "index", bundled.info)
    first.close()
    Index.open_for_writing(tmp_path / "index", bundled.info).close()  # free again
