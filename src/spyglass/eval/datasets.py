"""Labelled collections: a folder of images plus ``labels.csv``, indexed once per model.

A labelled collection is the layout of ``../shared/data``::

    FOLDER/labels.csv    path,label[,more label columns]   (path relative to FOLDER)
    FOLDER/images/...

The harness indexes FOLDER with the engine (incrementally, so a second run embeds
nothing), then maps every labelled row to the image id that holds its content. Vectors
are never recomputed: queries by example name indexed ids, which the engine answers from
the vectors already in the index's stores.

Known folders (``caltech101``, ``pacs``, ``fashion``, ``clothing``, ``photos``) come with
rules: which rows to leave out, which column is the attribute of composed queries, which
column holds captions. Any other folder works with the generic defaults.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from spyglass.encoders.base import Encoder
from spyglass.engine import Spyglass
from spyglass.errors import IndexLocked, InvalidQuery
from spyglass.ingest.pipeline import IngestReport, ProgressCallback
from spyglass.query.terms import Query
from spyglass.store.index import Index

LABELS_FILE = "labels.csv"


@dataclass(frozen=True)
class DatasetRules:
    """What the harness knows about a labelled folder."""

    #: Column holding the class of an image (text, image, few-shot, feedback protocols).
    label: str = "label"
    #: Rows left out of the collection: (column, value) pairs, any one matching.
    exclude: tuple[tuple[str, str], ...] = ()
    #: Composed protocol: the attribute a query changes, and how its text reads.
    attribute: str | None = None
    modifier: str = "in {}"
    #: Caption protocol: the column with one description per image.
    caption: str | None = None
    #: Whether class names make sensible text queries (not for package names).
    class_queries: bool = True
    about: str = ""


#: Rules for the folders of ``../shared/data`` (by folder name).
KNOWN_DATASETS: dict[str, DatasetRules] = {
    "caltech101": DatasetRules(
        exclude=(("is_background", "1"), ("label", "Faces_easy")),
        about="BACKGROUND_Google (clutter, no class) and Faces_easy (the Faces photos "
        "cropped again) are left out: 2,748 images, 100 classes",
    ),
    "pacs": DatasetRules(attribute="domain", modifier="as a {}"),
    "fashion": DatasetRules(attribute="baseColour", modifier="in {}", caption="caption"),
    "clothing": DatasetRules(),
    "photos": DatasetRules(caption="caption", class_queries=False),
}


def rules_for(folder: Path) -> DatasetRules:
    return KNOWN_DATASETS.get(folder.name, DatasetRules())


def class_phrase(label: str) -> str:
    """A class label as words for a text query: ``car_side`` -> ``car side``."""
    return re.sub(r"\s+", " ", label.replace("_", " ")).strip().lower()


@dataclass(frozen=True)
class LabelledCollection:
    """The rows of a folder's ``labels.csv`` that take part, with the folder's rules."""

    folder: Path
    rules: DatasetRules
    #: Rows kept, in file order; ``path`` is relative to ``folder``.
    rows: tuple[Mapping[str, str], ...]
    columns: tuple[str, ...]
    #: Rows left out by ``rules.exclude``.
    excluded: int = 0

    @property
    def name(self) -> str:
        return self.folder.name

    def require_column(self, column: str, purpose: str) -> None:
        if column not in self.columns:
            raise InvalidQuery(
                f"{self.folder / LABELS_FILE} has no column '{column}' ({purpose}); "
                f"its columns are: {', '.join(self.columns)}"
            )

    def attribute_and_object(
        self, attribute: str | None, object_column: str | None, purposes: tuple[str, str]
    ) -> tuple[str, str]:
        """The label columns of queries that name an attribute of an object (colour of
        a garment, domain of a picture): those given, else the folder's rules', both
        checked to exist. ``purposes`` say what each column is for, for the messages
        (("the attribute a query changes", "the object a query keeps"))."""
        attribute = attribute or self.rules.attribute
        if attribute is None:
            raise InvalidQuery(
                f"say which label column holds {purposes[0]}: --attribute COLUMN "
                f"(columns: {', '.join(self.columns)})"
            )
        object_column = object_column or self.rules.label
        self.require_column(attribute, purposes[0])
        self.require_column(object_column, purposes[1])
        return attribute, object_column


def absolute_path(path: str | Path) -> Path:
    """Absolute and normalised (``..`` resolved, links kept), as the indexer records
    paths: ``../data`` and ``/work/data`` name the same collection and index."""
    return Path(os.path.normpath(os.path.abspath(os.path.expanduser(str(path)))))


def read_collection(
    folder: str | Path,
    *,
    label: str | None = None,
    exclude: Sequence[tuple[str, str]] = (),
    require_labels: bool = True,
) -> LabelledCollection:
    """Read ``FOLDER/labels.csv`` with the folder's known rules.

    ``label`` overrides the class column; ``exclude`` adds (column, value) rules. Without
    ``require_labels`` a folder with no labels file is a collection of no labelled rows
    (the qrels protocol brings its own judgements).
    """
    root = absolute_path(folder)
    if not root.is_dir():
        raise InvalidQuery(f"--data {folder} is not a folder")
    rules = rules_for(root)
    if label is not None:
        rules = replace(rules, label=label)
    if exclude:
        rules = replace(rules, exclude=rules.exclude + tuple(exclude))
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        if require_labels:
            raise InvalidQuery(
                f"{root} has no {LABELS_FILE}: a labelled collection is a folder of images "
                f"plus {LABELS_FILE} (column 'path' relative to the folder, then label columns)"
            )
        return LabelledCollection(root, rules, (), ())
    with labels_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = tuple(reader.fieldnames or ())
        rows = [dict(row) for row in reader]
    if "path" not in columns:
        raise InvalidQuery(f"{labels_path} needs a 'path' column (relative to {root})")
    for column, _ in rules.exclude:
        if column not in columns:
            raise InvalidQuery(f"cannot exclude by '{column}': {labels_path} has no such column")
    kept = [r for r in rows if not any(r.get(c) == v for c, v in rules.exclude)]
    return LabelledCollection(root, rules, tuple(kept), columns, len(rows) - len(kept))


# -- the index of a collection -------------------------------------------------------


def default_index_dir(
    cache_dir: Path, folder: Path, model: str, version: str | None = None
) -> Path:
    """``cache_dir/eval/<folder name>-<hash of its absolute path>/<model>[@<version>]``:
    with the model's version, a name whose vectors change (a new default image model)
    gets an index of its own instead of being refused by the old one."""
    absolute = str(absolute_path(folder))
    digest = hashlib.blake2b(absolute.encode(), digest_size=4).hexdigest()
    model_part = _file_name_part(model) or "model"
    if model_part != model:  # a path or hub id: keep distinct specs apart
        model_part += "-" + hashlib.blake2b(model.encode(), digest_size=4).hexdigest()
    if version:
        model_part += "@" + _file_name_part(version)
    return Path(cache_dir) / "eval" / f"{Path(absolute).name}-{digest}" / model_part


def _file_name_part(text: str) -> str:
    """``text`` with what a file name should not hold replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def open_collection(
    collection: LabelledCollection,
    encoder: Encoder,
    index_dir: Path,
    progress: ProgressCallback | None = None,
    lock_wait: float = 600.0,
) -> tuple[IndexedCollection, IngestReport]:
    """Index the collection's folder with ``encoder`` into ``index_dir`` (incrementally:
    nothing is embedded again when nothing changed), then open it to read.

    The write lock is held only while indexing, so several evaluations can read the same
    index at once; one that finds another indexing waits for it (up to ``lock_wait``
    seconds) and then finds nothing left to do. Close the returned collection's engine
    when done.
    """
    writer = Spyglass(encoder, _open_for_writing(index_dir, encoder, lock_wait))
    with writer:
        report = writer.add([str(collection.folder)], progress=progress)
    engine = Spyglass(encoder, Index.open(index_dir))
    try:
        return IndexedCollection.attach(engine, collection), report
    except BaseException:
        engine.close()
        raise


def _open_for_writing(index_dir: Path, encoder: Encoder, lock_wait: float) -> Index:
    deadline = time.monotonic() + lock_wait
    while True:
        try:
            return Index.open_for_writing(index_dir, encoder.info)
        except IndexLocked:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


@dataclass
class IndexedCollection:
    """A collection attached to an engine whose index holds its images.

    Members are the distinct images of the kept rows, in row order. A row whose content
    an earlier row already showed (a duplicate file) is counted and left out; a row whose
    file the index skipped (unreadable) is counted as missing.
    """

    engine: Spyglass
    collection: LabelledCollection
    #: (m,) int64 image ids of the members.
    ids: np.ndarray
    #: The labelled row of each member.
    rows: list[Mapping[str, str]]
    missing: int = 0
    duplicates: int = 0
    #: Rows whose files the index skipped, with why (up to a few, for messages).
    missing_examples: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        top = int(self.ids.max()) + 1 if len(self.ids) else 0
        self._position = np.full(top, -1, np.int64)
        self._position[self.ids] = np.arange(len(self.ids))
        self.index_size = self.engine.index.count()

    @classmethod
    def attach(cls, engine: Spyglass, collection: LabelledCollection) -> IndexedCollection:
        """Map each kept row to its image id in ``engine``'s index."""
        indexed = engine.index.catalogue.files_under(os.path.normpath(str(collection.folder)))
        ids: list[int] = []
        rows: list[Mapping[str, str]] = []
        seen: set[int] = set()
        missing: list[str] = []
        duplicates = 0
        for row in collection.rows:
            path = os.path.normpath(str(collection.folder / row["path"]))
            state = indexed.get(path)
            if state is None:
                missing.append(row["path"])
            elif state.image_id in seen:
                duplicates += 1
            else:
                seen.add(state.image_id)
                ids.append(state.image_id)
                rows.append(row)
        if collection.rows and not ids:
            raise InvalidQuery(
                f"none of the {len(collection.rows)} images listed in "
                f"{collection.folder / LABELS_FILE} is in the index {engine.index.folder}"
            )
        return cls(
            engine,
            collection,
            np.asarray(ids, np.int64),
            rows,
            missing=len(missing),
            duplicates=duplicates,
            missing_examples=missing[:5],
        )

    @classmethod
    def whole_index(cls, engine: Spyglass) -> IndexedCollection:
        """Every image the index can find, unlabelled (for user-judged queries)."""
        info = engine.index.info
        ids = np.sort(engine.index.stores[info.text_space].visible_owners())
        collection = LabelledCollection(engine.index.folder, DatasetRules(), (), ())
        return cls(engine, collection, ids.astype(np.int64), [{} for _ in ids])

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> np.ndarray:
        """(m,) object array of one label column, one entry per member."""
        self.collection.require_column(name, "asked for by the protocol")
        return np.array([row.get(name, "") for row in self.rows], dtype=object)

    def class_labels(self) -> tuple[str, np.ndarray]:
        """The collection's class column: (its name, (m,) object array of labels)."""
        name = self.collection.rules.label
        self.collection.require_column(name, "the class of each image")
        return name, np.array([row.get(name, "") for row in self.rows], dtype=object)

    def positions_of(self, image_ids: Iterable[int]) -> np.ndarray:
        """Image ids -> member positions (-1 for images that are not members)."""
        wanted = np.asarray(list(image_ids), np.int64)
        inside = (wanted >= 0) & (wanted < len(self._position))
        result = np.full(len(wanted), -1, np.int64)
        result[inside] = self._position[wanted[inside]]
        return result

    @contextmanager
    def restricted_to(self, positions: Sequence[int] | np.ndarray) -> Iterator[IndexedCollection]:
        """The members at ``positions`` as a collection of their own.

        While the block runs, every other image of the index (the other members, rows the
        dataset's rules leave out, files labels.csv does not list) is hidden from search in
        every space, so the engine ranks and re-ranks as it would on an index holding those
        images only, and nothing is embedded again. Only the search is restricted: the
        catalogue still counts every image, so ``Index.count()`` does not change."""
        chosen = np.unique(np.asarray(positions, np.int64))
        keep = self.ids[chosen]
        stores = list(self.engine.index.stores.values())
        # Per store: what it showed and now hides, so that exactly that is shown again.
        hidden = [np.setdiff1d(store.visible_owners(), keep) for store in stores]
        for store, owners in zip(stores, hidden, strict=True):
            store.set_hidden(owners.tolist(), True)
        try:
            yield IndexedCollection(
                self.engine, self.collection, keep, [self.rows[p] for p in chosen.tolist()]
            )
        finally:
            for store, owners in zip(stores, hidden, strict=True):
                store.set_hidden(owners.tolist(), False)

    def rank(self, query: Query, leave_out: Iterable[int] = ()) -> Ranked:
        """Rank every indexed image for ``query`` through the engine, keep the members
        (minus the positions in ``leave_out``), and time the engine's work."""
        whole = replace(query, k=max(self.index_size, 1), offset=0)
        started = time.perf_counter()
        ranking = self.engine.searcher.rank(whole)
        seconds = time.perf_counter() - started
        image_ids = np.fromiter((i for i, _ in ranking), np.int64, len(ranking))
        scores = np.fromiter((s for _, s in ranking), np.float64, len(ranking))
        positions = self.positions_of(image_ids)
        keep = positions >= 0
        dropped = np.fromiter(leave_out, np.int64)
        if len(dropped):
            keep &= ~np.isin(positions, dropped)
        return Ranked(positions[keep], scores[keep], seconds)


@dataclass(frozen=True)
class Ranked:
    """A ranking of members: ``positions`` (n,) int64 best first, ``scores`` (n,) float64,
    and the seconds the engine took."""

    positions: np.ndarray
    scores: np.ndarray
    seconds: float
