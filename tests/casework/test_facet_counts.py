"""The filter panel's stored counts (``facet_counts``): kept by every change to a real
index equal to a full recount by the reference SQL, read by ``count_facets`` and
``Engine.facets`` without filters, and counted once for a catalogue made before them."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from PIL import Image

from spyglass.encoders import Encoder
from spyglass.encoders.base import EncoderInfo
from spyglass.engine import Spyglass
from spyglass.image_meta import HeaderMeta
from spyglass.ingest.header_backfill import backfill_header_meta
from spyglass.query.filters import Filters, count_facets, narrowed_facets, recount_facets
from spyglass.store.catalogue import FACET_COUNTS_KEPT, HEADERS_BACKFILLED, FileState, NewImage
from spyglass.store.facet_counts import counts_are_kept, stored_facets
from spyglass.store.index import CATALOGUE_FILE, Index

INFO = EncoderInfo("hand-made", "1", {"joint": 4})
YEAR = 365.2425 * 86400
#: Roots the machine may add (nested ones too); "a" is indexed from the start.
ROOTS = ("a", "b", "a/x", "b/y/z")
FOLDERS = ("", "x", "x/q", "y", "y/z", "y/z/w")
CAMERAS = ((None, None), ("Canon", "EOS 5D"), ("NIKON CORPORATION", "D750"), (None, "D750"))

metas = st.one_of(
    st.none(),
    st.builds(
        lambda taken, camera, gps: HeaderMeta(
            taken_at=None if taken is None else (40 + taken) * YEAR,
            make=camera[0],
            model=camera[1],
            latitude=48.8 if gps else None,
            longitude=2.3 if gps else None,
        ),
        st.one_of(st.none(), st.integers(0, 3)),
        st.sampled_from(CAMERAS),
        st.booleans(),
    ),
)
places = st.tuples(st.sampled_from(("a", "b")), st.sampled_from(FOLDERS), st.integers(0, 9))


class FacetUpkeep(RuleBasedStateMachine):
    """Random changes to a real index; after each, the stored counts are a full
    recount's (order included) and still marked kept."""

    def __init__(self) -> None:
        super().__init__()
        self.scratch = Path(tempfile.mkdtemp(prefix="facet-upkeep-"))
        self.folder = self.scratch / "index"
        self.index = Index.open_for_writing(self.folder, INFO)
        self.hashes = 0

    def teardown(self) -> None:
        self.index.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def path(self, place: tuple[str, str, int]) -> str:
        root, folder, n = place
        return str(self.scratch / root / folder / f"f{n}.jpg")

    def paths(self) -> list[str]:
        return [r[0] for r in self.index.catalogue.execute("SELECT path FROM files ORDER BY path")]

    def image_ids(self) -> list[int]:
        return [r[0] for r in self.index.catalogue.execute("SELECT id FROM images ORDER BY id")]

    @initialize()
    def first_root(self) -> None:
        self.index.add_roots([str(self.scratch / "a")])

    @rule(
        new=st.lists(
            st.tuples(places, st.sampled_from(("JPEG", "PNG")), metas, st.integers(0, 30)),
            min_size=1,
            max_size=4,
        ),
        on_disk=st.booleans(),
    )
    def commit_new_images(
        self, new: list[tuple[tuple[str, str, int], str, HeaderMeta | None, int]], on_disk: bool
    ) -> None:
        """New contents at new or existing paths (an existing path then shows other
        bytes); without header metadata, a real file whose header the back-fill reads."""
        images, files = [], []
        for position, (place, form, meta, years) in enumerate(new):
            self.hashes += 1
            images.append(NewImage(f"h{self.hashes}", 10, 10, form, meta))
            path = self.path(place)
            if meta is None and on_disk:
                write_jpeg(Path(path), camera=years % 2 == 0, gps=years % 3 == 0)
            files.append((path, 100, int((20 + years) * YEAR * 1e9), position))
        unique = {f[0]: f for f in files}  # one file row per path
        self.index.commit(
            images, {"joint": np.ones((len(images), 4), np.float32)}, list(unique.values())
        )

    @precondition(lambda self: bool(self.image_ids()))
    @rule(data=st.data(), place=places)
    def show_an_image_at_a_path(self, data: st.DataObject, place: tuple[str, str, int]) -> None:
        """A copy (a new path) or a path now showing another existing (maybe dead) image."""
        image = data.draw(st.sampled_from(self.image_ids()))
        self.index.commit([], {}, [FileState(self.path(place), image, 100, 7 * 10**17)])

    @precondition(lambda self: bool(self.paths()))
    @rule(data=st.data(), place=places)
    def rename(self, data: st.DataObject, place: tuple[str, str, int]) -> None:
        old = data.draw(st.sampled_from(self.paths()))
        new = self.path(place)
        state = self.index.catalogue.file(old)
        assert state is not None
        self.index.commit([], {}, [FileState(new, state.image_id, state.size, state.mtime_ns)])
        if new != old:
            self.index.remove_files([old])

    @precondition(lambda self: bool(self.paths()))
    @rule(data=st.data())
    def remove_files(self, data: st.DataObject) -> None:
        paths = data.draw(st.lists(st.sampled_from(self.paths()), min_size=1, max_size=3))
        self.index.remove_files(paths)

    @rule()
    def read_headers_later(self) -> None:
        """The back-fill of a catalogue made before headers were kept (their images'
        files opened again: those written with EXIF get a date, camera or position)."""
        self.index.catalogue.set_meta(HEADERS_BACKFILLED, "0")
        backfill_header_meta(self.index.catalogue)

    @rule(root=st.sampled_from(ROOTS))
    def add_root(self, root: str) -> None:
        self.index.add_roots([str(self.scratch / root)])

    @rule()
    def reopen(self) -> None:
        self.index.close()
        self.index = Index.open_for_writing(self.folder, INFO)

    @invariant()
    def stored_counts_are_a_full_recount(self) -> None:
        catalogue = self.index.catalogue
        assert counts_are_kept(catalogue)
        stored = stored_facets(catalogue)
        assert stored is not None
        reference = recount_facets(catalogue)
        assert stored == reference
        assert [list(v.items()) if isinstance(v, dict) else v for v in vars(stored).values()] == [
            list(v.items()) if isinstance(v, dict) else v for v in vars(reference).values()
        ]


FacetUpkeep.TestCase.settings = settings(
    max_examples=40,
    derandomize=True,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_stored_counts_follow_every_change = FacetUpkeep.TestCase


def write_jpeg(path: Path, *, camera: bool, gps: bool) -> None:
    exif = Image.Exif()
    if camera:
        exif[0x010F], exif[0x0110] = "Canon", "EOS R"
        exif.get_ifd(0x8769)[0x9003] = "2017:06:01 10:00:00"
    if gps:
        position = exif.get_ifd(0x8825)
        position[1], position[2] = "N", (48.0, 51.0, 30.0)
        position[3], position[4] = "E", (2.0, 17.0, 40.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, "JPEG", exif=exif)


def copied_index(filtered_index: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    shutil.copytree(filtered_index, folder)
    return folder


def test_unfiltered_counts_are_read_from_the_stored_table(
    filtered_index: Path, bundled: Encoder, tmp_path: Path
) -> None:
    """A stored count changed behind the code's back is what every unfiltered reader
    answers (so it reads the table, not the rows); filtered counts still come from
    the rows."""
    folder = copied_index(filtered_index, tmp_path)
    with Index.open(folder) as index:
        truth = recount_facets(index.catalogue)
    assert truth.formats["JPEG"] > 0
    with sqlite3.connect(folder / CATALOGUE_FILE) as db:
        db.execute(
            "UPDATE facet_counts SET n = n + 1000 WHERE facet = 'formats' AND value = 'JPEG'"
        )
    with Spyglass(bundled, Index.open(folder)) as engine:
        catalogue = engine.index.catalogue
        assert count_facets(catalogue).formats["JPEG"] == truth.formats["JPEG"] + 1000
        assert narrowed_facets(catalogue, Filters()).formats["JPEG"] == truth.formats["JPEG"] + 1000
        assert engine.facets().formats["JPEG"] == truth.formats["JPEG"] + 1000
        assert engine.facets(None).folders == truth.folders
        jpeg = count_facets(catalogue, Filters.parse(formats=["jpg"]))
        assert jpeg.formats == {"JPEG": truth.formats["JPEG"]}


def test_a_catalogue_made_before_the_counts_gets_them_from_its_next_writer(
    filtered_index: Path, bundled: Encoder, tmp_path: Path
) -> None:
    """Schema version 2 (no facet_counts): readers count by SQL and never write; the
    next writer adds the table marked not kept and counts it in full when it closes;
    later commits keep it."""
    folder = copied_index(filtered_index, tmp_path)
    with Index.open(folder) as index:
        truth = recount_facets(index.catalogue)
    with sqlite3.connect(folder / CATALOGUE_FILE) as db:
        db.execute("DROP TABLE facet_counts")
        db.execute("DELETE FROM meta WHERE key = ?", (FACET_COUNTS_KEPT,))
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with Spyglass(bundled, Index.open(folder)) as old:
        assert stored_facets(old.index.catalogue) is None
        assert old.facets() == truth
        assert not old.index.catalogue.has_table("facet_counts")
    with Index.open_for_writing(folder, bundled.info) as writer:
        assert writer.catalogue.meta(FACET_COUNTS_KEPT) == "0"
        assert stored_facets(writer.catalogue) is None
        assert count_facets(writer.catalogue) == truth
    with Index.open(folder) as reader:
        assert reader.catalogue.meta(FACET_COUNTS_KEPT) == "1"
        assert stored_facets(reader.catalogue) == truth
    with Index.open_for_writing(folder, bundled.info) as writer:
        some = writer.catalogue.execute("SELECT path FROM files ORDER BY path LIMIT 3")
        writer.remove_files(p for (p,) in some)
        assert stored_facets(writer.catalogue) == recount_facets(writer.catalogue)
        assert stored_facets(writer.catalogue) != truth
