"""The engine: an encoder and an index, passed in; everything else is built on this.

>>> from spyglass import Spyglass, Query, TextTerm, RuntimeSettings
>>> engine = Spyglass.open("my-index", runtime=RuntimeSettings.from_environment())
>>> engine.search(Query((TextTerm("a bathroom with a black waste basket"),), k=10))
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spyglass.encoders import DEFAULT_MODEL, Encoder, load_encoder, resolve_spec
from spyglass.encoders.base import CountsTokens, mismatch_message
from spyglass.errors import EncoderMismatch, InvalidQuery
from spyglass.ingest.pipeline import Ingest, IngestReport, ProgressCallback
from spyglass.query.filters import Facets, Filters, allowed_ids, count_facets, narrowed_facets
from spyglass.query.terms import Query, TextTerm
from spyglass.search import Searcher, SearchResult
from spyglass.settings import IngestSettings, RuntimeSettings, VectorSearchSettings
from spyglass.store.catalogue import SkippedFile
from spyglass.store.index import CATALOGUE_FILE, Index, holds_images

if TYPE_CHECKING:
    from spyglass.casework.casefile import CaseFile
    from spyglass.casework.duplicates import CollapsedResult, DuplicateGroup, DuplicateRule
    from spyglass.casework.explain import OcclusionSettings
    from spyglass.casework.explanation import Explanation, ReadIndexed
    from spyglass.casework.queryspec import SearchSpec
    from spyglass.casework.verify import Verification
    from spyglass.ingest.ray_cluster import RayCluster

#: Facet counts an engine keeps (one per state of the index and set of filters).
FACETS_KEPT = 32


@dataclass(frozen=True)
class IndexStatus:
    """What ``spyglass info`` reports."""

    folder: str
    #: Indexed files that can be found (copies of one content each count).
    images: int
    #: Distinct contents among them (each embedded once).
    unique_images: int
    #: Contents ever embedded, including those whose files were deleted.
    embedded: int
    skipped: int
    model: str
    model_version: str
    spaces: dict[str, int]
    roots: list[str]
    #: The G of ``spyglass index --crops G`` (0: whole images only).
    crop_grid: int = 0
    skipped_files: list[SkippedFile] = field(default_factory=list)
    #: How each space is searched now: space -> {kind, rows, summary, recall_at_10, nprobe}.
    search: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Header metadata coverage over distinct images: read, capture_time, camera, gps.
    metadata: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.folder,
            "images": self.images,
            "unique_images": self.unique_images,
            "embedded": self.embedded,
            "skipped": self.skipped,
            "model": self.model,
            "model_version": self.model_version,
            "spaces": self.spaces,
            "roots": self.roots,
            "crop_grid": self.crop_grid,
            "search": self.search,
            "metadata": self.metadata,
            "skipped_files": [
                {"path": s.path, "reason": s.reason, "message": s.message}
                for s in self.skipped_files
            ],
        }


class Spyglass:
    """Index folders and search them. Collaborators are passed in; nothing is global."""

    def __init__(
        self, encoder: Encoder, index: Index, ingest_settings: IngestSettings | None = None
    ) -> None:
        if not encoder.info.same_vectors_as(index.info):
            raise EncoderMismatch(mismatch_message(index.folder, index.info, encoder.info))
        self.encoder = encoder
        self.index = index
        self.ingest_settings = ingest_settings or IngestSettings()
        self.searcher = Searcher(encoder, index, self.ingest_settings)
        #: Facet counts by (index generation, catalogue change mark, filters), most
        #: recently used last: a filtered panel's counts read the whole catalogue
        #: (seconds at a million images; the unfiltered ones are stored in it), and a
        #: page asks again for the same ones.
        self._facets: OrderedDict[tuple[Any, ...], Facets] = OrderedDict()
        self._facets_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        folder: str | Path,
        *,
        runtime: RuntimeSettings,
        model: str | None = None,
        writable: bool = False,
        ingest_settings: IngestSettings | None = None,
        vector_search: VectorSearchSettings | None = None,
    ) -> Spyglass:
        """Open an index with the encoder that built it.

        To read, ``model`` may be left out (the index records its model). To write,
        the index is created if missing, with ``model`` or the bundled default.
        """
        if writable:
            existing = _recorded_spec(folder)
            if model is not None:
                spec: Any = resolve_spec(model)
            else:
                spec = existing or resolve_spec(DEFAULT_MODEL)
            encoder = load_encoder(spec, runtime)
            index = Index.open_for_writing(folder, encoder.info, vector_search=vector_search)
        else:
            index = Index.open(folder, vector_search=vector_search)
            try:
                if model is not None:
                    encoder = load_encoder(resolve_spec(model), runtime)
                else:
                    encoder = load_encoder(dict(index.info.spec), runtime)
            except BaseException:
                index.close()
                raise
        try:
            return cls(encoder, index, ingest_settings)
        except BaseException:
            index.close()
            raise

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Spyglass:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, paths: list[str], progress: ProgressCallback | None = None) -> IngestReport:
        """Index folders or files incrementally (only new and changed files are embedded)."""
        return Ingest(self.index, self.encoder, self.ingest_settings, progress).run(paths)

    def add_on_ray(
        self, paths: list[str], cluster: RayCluster, progress: ProgressCallback | None = None
    ) -> IngestReport:
        """:meth:`add` with decoding and embedding done by the workers of a connected Ray
        cluster (see :mod:`spyglass.ingest.ray_runner`); this process still scans,
        decides what is new and commits, so the index is the same."""
        from spyglass.ingest.ray_runner import RayIngest

        return RayIngest(self.index, self.encoder, cluster, self.ingest_settings, progress).run(
            paths
        )

    def search(self, query: Query) -> list[SearchResult]:
        return self.searcher.search(query)

    # -- case work (spyglass.casework) ---------------------------------------------------

    def count_filtered(self, filters: Filters) -> int:
        """How many images ``filters`` keep."""
        return len(allowed_ids(self.index.catalogue, filters))

    def facets(self, filters: Filters | None = None) -> Facets:
        """Images counted per folder, format, camera, year and GPS, for a filter panel:
        with ``filters``, each facet over the images the *other* filters keep
        (:func:`~spyglass.query.filters.narrowed_facets`); without, over all."""
        key = (self.index.generation(), self.index.catalogue.change_mark(), filters)
        with self._facets_lock:
            kept = self._facets.get(key)
            if kept is not None:
                self._facets.move_to_end(key)
                return kept
        if filters is None:
            counted = count_facets(self.index.catalogue)
        else:
            counted = narrowed_facets(self.index.catalogue, filters)
        with self._facets_lock:
            self._facets[key] = counted
            while len(self._facets) > FACETS_KEPT:
                self._facets.popitem(last=False)
        return counted

    def duplicates(
        self,
        rule: DuplicateRule | None = None,
        *,
        save_hashes: bool = True,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> list[DuplicateGroup]:
        """Groups of near-duplicate images, largest first (see
        :mod:`spyglass.casework.duplicates`). With a rule that compares perceptual
        hashes, images not hashed yet are hashed first (their files read once) and,
        unless ``save_hashes`` is False, the hashes kept in the index folder.
        ``progress(step, done, total)`` is told of both steps (``hashing``,
        ``searching``)."""
        from spyglass.casework.duplicates import DuplicateRule, find_duplicate_groups, hash_index

        rule = rule or DuplicateRule()
        hashes = None
        if rule.uses_hashes:
            hashes = hash_index(
                self.index,
                save=save_hashes,
                progress=(lambda d, t: progress("hashing", d, t)) if progress else None,
            )
        return find_duplicate_groups(
            self.index,
            rule,
            hashes,
            progress=(lambda d, t: progress("searching", d, t)) if progress else None,
        )

    def search_collapsed(
        self, query: Query, rule: DuplicateRule | None = None
    ) -> list[CollapsedResult]:
        """:meth:`search` with each group of near-duplicates collapsed to its best-ranked
        member, which carries the group's size and the other members' ids. Perceptual
        hashes are those ``spyglass duplicates`` kept (images without one are joined
        by cosine alone)."""
        from spyglass.casework.duplicates import DuplicateRule, collapse_duplicates
        from spyglass.casework.perceptual import PerceptualHashes

        rule = rule or DuplicateRule()
        hashes = PerceptualHashes.load(self.index) if rule.uses_hashes else None
        return collapse_duplicates(self.search, self.index, query, rule, hashes)

    def record(self, query: Query, collapse: DuplicateRule | None = None) -> SearchSpec:
        """``query`` as a case file or a saved search keeps it (copies of the query
        images' bytes, their SHA-256)."""
        from spyglass.casework.queryspec import record_query

        return record_query(self.index, query, collapse, self.ingest_settings.max_file_bytes)

    def run_recorded(self, spec: SearchSpec) -> list[SearchResult] | list[CollapsedResult]:
        """Run a recorded search as it was run (collapsed if it was)."""
        query = spec.to_query()
        if spec.collapse is not None:
            return self.search_collapsed(query, spec.collapse)
        return self.search(query)

    def case_file(
        self,
        spec: SearchSpec,
        results: Sequence[SearchResult | CollapsedResult],
        *,
        description: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> CaseFile:
        """The case file of ``results`` (see :mod:`spyglass.casework.casefile`)."""
        from spyglass.casework.casefile import make_case_file

        return make_case_file(self.index, spec, results, description=description, request=request)

    def verify(self, case: CaseFile) -> Verification:
        """Run a case file's search again and compare (see
        :mod:`spyglass.casework.verify`)."""
        from spyglass.casework.verify import verify_case

        return verify_case(self, case)

    def explain(
        self,
        query: Query,
        image_id: int,
        settings: OcclusionSettings | None = None,
        *,
        read_indexed: ReadIndexed | None = None,
        parts: Collection[str] = ("result", "query"),
    ) -> Explanation:
        """Why ``image_id`` matched ``query``: occlusion heatmaps over the result image
        and over the query image of an image query (see
        :mod:`spyglass.casework.explain`), with the score they explain. About 40 forward
        passes of the image model per image with the default settings.
        ``read_indexed(id) -> bytes`` reads indexed files (default: from the catalogue's
        paths); ``parts`` may ask for the ``result`` or the ``query`` heat alone.
        Raises :class:`UnknownImageId`, :class:`ImageNotFound` (file gone),
        :class:`ImageRejected` and :class:`InvalidQuery`."""
        from spyglass.casework.explanation import explain_result

        return explain_result(self.searcher, query, image_id, settings, read_indexed, parts)

    def paths_without_images(self, paths: Sequence[str]) -> list[str]:
        """Those of ``paths`` under which the index holds no image file, not even a
        skipped one: after :meth:`add`, the folders where nothing was found that looks
        like an image (a typo'd folder, the wrong drive), which a person should hear of."""
        from spyglass.ingest.reader import normalise_root

        empty = []
        for path in paths:
            root = normalise_root(path)
            inside = root.rstrip(os.sep)
            # Every path under the folder sorts in [folder + sep, folder + the next char).
            bounds = (root, inside + os.sep, inside + chr(ord(os.sep) + 1))
            found = any(
                self.index.catalogue.execute(
                    f"SELECT 1 FROM {table} WHERE path = ? OR (path >= ? AND path < ?) LIMIT 1",
                    bounds,
                )
                for table in ("files", "skipped")
            )
            if not found:
                empty.append(path)
        return empty

    def query_notes(self, query: Query) -> list[str]:
        """What a person should know about how ``query`` is read, one sentence each, for
        an entry point to show next to the results (the engine never prints).

        Today: a text longer than the text model reads is cut, silently by the model
        ("the query was cut at 256 tokens (it has 20,481)").
        """
        if not isinstance(self.encoder, CountsTokens):
            return []
        texts = [t.text.strip() for t in query.terms if isinstance(t, TextTerm)]
        limit = self.encoder.max_text_tokens
        notes = []
        for text in texts:
            count = self.encoder.count_tokens(text)
            if count > limit:
                what = "the query" if len(texts) == 1 else f'the text "{_opening(text)}"'
                notes.append(f"{what} was cut at {limit:,} tokens (it has {count:,})")
        return notes

    def status(self, skipped_limit: int | None = 1000) -> IndexStatus:
        return self.status_of(self.index, skipped_limit)

    @staticmethod
    def status_of(index: Index, skipped_limit: int | None = 1000) -> IndexStatus:
        """Status from the catalogue alone (no model is loaded)."""
        counts = index.catalogue.counts()
        info = index.info
        return IndexStatus(
            folder=str(index.folder),
            images=counts["files"],
            unique_images=counts["images"],
            embedded=counts["embedded"],
            skipped=counts["skipped"],
            model=info.name,
            model_version=info.version,
            spaces=dict(info.spaces),
            roots=index.catalogue.roots(),
            crop_grid=int(index.catalogue.meta("crop_grid") or 0),
            search={
                space: asdict(store.describe())
                for space, store in index.stores.items()
                if hasattr(store, "describe")
            },
            skipped_files=index.catalogue.skipped(skipped_limit),
            metadata=index.catalogue.header_meta_counts(),
        )


def check_paths_to_index(paths: Sequence[str], index_folder: str | Path) -> None:
    """Refuse, before an index is created or opened to write, what would index nothing or
    litter a photo folder: paths that do not exist, an index folder that is (or holds) a
    folder to index (the walk never enters the index's own folder), and an index folder
    that holds images rather than an index. Raises :class:`InvalidQuery`."""
    from spyglass.ingest.reader import normalise_root

    missing = [p for p in paths if not os.path.lexists(normalise_root(p))]
    if missing:
        raise InvalidQuery(f"not found: {', '.join(missing)} (nothing was indexed)")
    index = Path(normalise_root(index_folder))
    if not (index / CATALOGUE_FILE).exists() and holds_images(index):
        raise InvalidQuery(
            f"--index {index} holds images, not an index: give the index a folder of its "
            "own (a new or empty one)"
        )
    for path in paths:
        root = Path(normalise_root(path))
        if root == index or index in root.parents:
            where = "the index folder" if root == index else f"inside the index folder {index}"
            raise InvalidQuery(
                f"{path} is {where}, which indexing never looks into: choose another --index"
            )


def _opening(text: str, length: int = 40) -> str:
    """The start of a long text, to name it in a message."""
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"


def _recorded_spec(folder: str | Path) -> dict[str, Any] | None:
    from spyglass.store.catalogue import Catalogue
    from spyglass.store.index import CATALOGUE_FILE, resolve_location

    # A milvus:// URL keeps its catalogue in a folder of its own.
    path = resolve_location(folder)[0] / CATALOGUE_FILE
    if not path.is_file():
        return None
    catalogue = Catalogue(path)
    try:
        info = catalogue.encoder_info()
        return dict(info.spec) if info else None
    finally:
        catalogue.close()
