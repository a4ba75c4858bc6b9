"""An index directory: the catalogue plus one vector store per space.

Layout::

    DIR/catalogue.sqlite      files, images, skipped files, encoder (SQLite, WAL)
    DIR/vectors/<space>.f16   float16 rows          } one pair per space,
    DIR/vectors/<space>.ids   int64 owner image ids }  cut to the committed rows on open
    DIR/write.lock            held by the one process that writes

Every commit writes vectors first (fsync), then one SQLite transaction that records the
new rows; whatever a crash leaves beyond the committed rows is cut off by the next
writer. That is what makes indexing resumable after ``kill -9``.

An index whose vectors live in Milvus is named by a URL instead of a folder
(``milvus:///path/file.db`` for Milvus Lite, ``milvus://HOST:PORT/COLLECTION`` for a
server; see :mod:`spyglass.store.milvus`): its folder then holds the catalogue and the
write lock only, next to the Milvus Lite file (``file.db.catalogue``) or, for a server,
under the per-user data folder (``milvus/HOST-PORT/COLLECTION``), or where the URL's
``?catalogue=FOLDER`` says. The commit order is the same: rows durable in Milvus, then
the transaction; a writer deletes the rows beyond the committed ones when it opens.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from spyglass.encoders.base import EncoderInfo, mismatch_message
from spyglass.errors import (
    ApproximateIndexFailed,
    EncoderMismatch,
    IndexLocked,
    IndexNotFound,
    IndexProblem,
)
from spyglass.query.filter_fields import filter_fields
from spyglass.settings import VectorSearchSettings, default_index_folder
from spyglass.store.base import FilterableStore, VectorStore
from spyglass.store.catalogue import Catalogue, FileState, NewImage
from spyglass.store.facet_counts import FacetCountsChange, counts_are_kept, store_full_count
from spyglass.store.factory import finish_building, open_vector_store
from spyglass.store.failures import storage_error
from spyglass.store.gpu import DeviceChoice
from spyglass.store.ivf import available_memory
from spyglass.store.local import LocalVectorStore
from spyglass.store.milvus import (
    OWNER_META,
    MilvusLocation,
    MilvusVectorStore,
    is_milvus_url,
    new_owner_id,
    parse_milvus_url,
)
from spyglass.store.page_cache import WarmReport, warm_page_cache

CATALOGUE_FILE = "catalogue.sqlite"
T = TypeVar("T")
#: Per-space vectors for a commit: (n, dims) rows for the n new images in order, or
#: (batch positions, rows) for spaces with several rows per image (crops).
SpaceRows = np.ndarray | tuple[np.ndarray, np.ndarray]


def resolve_location(index: Path | str) -> tuple[Path, MilvusLocation | None]:
    """An ``--index`` value -> (the folder holding the catalogue, the Milvus location of
    the vectors or ``None`` when they live in that folder)."""
    if is_milvus_url(index):
        location = parse_milvus_url(str(index), default_index_folder().parent)
        return location.catalogue, location
    return Path(index).expanduser().absolute(), None


def crop_space(space: str) -> str:
    """Name of the space holding the crop vectors of ``space`` (several rows per image)."""
    return f"{space}.crops"


class Index:
    """Catalogue + vector stores of one index directory.

    Open with :meth:`open` to read (search, info) or :meth:`open_for_writing` to index;
    only one process may write at a time.
    """

    def __init__(
        self,
        folder: Path,
        catalogue: Catalogue,
        info: EncoderInfo,
        stores: Mapping[str, VectorStore],
        lock_handle: int | None = None,
    ) -> None:
        self.folder = folder
        self.catalogue = catalogue
        self.info = info
        self.stores = dict(stores)
        self._lock_handle = lock_handle
        #: Where the vectors live when not in ``folder`` (see :func:`resolve_location`).
        self.milvus: MilvusLocation | None = None
        self._dead: set[int] = set()
        self._state_lock = threading.RLock()
        #: Times images died or came back (see ``generation``).
        self._alive_changes = 0
        #: How spaces are searched (exact / approximate); stores opened later use it too.
        self.vector_search: VectorSearchSettings | None = None
        #: Where the approximate stores look for candidates: one GPU choice per index.
        self._device: DeviceChoice | None = None
        #: Why approximate indexes were not built when this writer closed, if any.
        self.build_failure: ApproximateIndexFailed | None = None
        #: What readers derived from the searchable images, by key, with the
        #: ``generation`` it was derived at (see ``derived``).
        self._derived: dict[Hashable, tuple[tuple[int, int], Any]] = {}

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path | str, vector_search: VectorSearchSettings | None = None) -> Index:
        """Open an existing index to read. Raises :class:`IndexNotFound`.

        ``vector_search`` says how each space is searched (default: exactly below 100,000
        rows, through the saved approximate index above)."""
        folder, milvus = resolve_location(folder)
        path = folder / CATALOGUE_FILE
        if not path.is_file():
            if milvus is not None:
                raise IndexNotFound(
                    f"no index at {milvus.describe()} (its catalogue would be in {folder}; "
                    f"create one with: spyglass index PATH --index {milvus.describe()})"
                )
            if holds_images(folder):
                # The advice below would put the index among the photos.
                raise IndexNotFound(
                    f"{folder} holds images, not an index: index it with "
                    f"`spyglass index {folder} --index ANOTHER_FOLDER`, then search "
                    "with --index ANOTHER_FOLDER"
                )
            raise IndexNotFound(
                f"no index at {folder} (create one with: spyglass index PATH --index {folder})"
            )
        catalogue = Catalogue(path)
        info = catalogue.encoder_info()
        if info is None:
            catalogue.close()
            raise IndexNotFound(f"{folder} holds no finished index yet (no encoder recorded)")
        index = cls(folder, catalogue, info, {})
        index.milvus = milvus
        index.vector_search = vector_search
        try:
            index.stores = index._open_stores(writer=False, vector_search=vector_search)
        except BaseException:
            index.close()
            raise
        index._hide_dead()
        return index

    @classmethod
    def open_for_writing(
        cls,
        folder: Path | str,
        info: EncoderInfo,
        vector_search: VectorSearchSettings | None = None,
    ) -> Index:
        """Open (or create) an index to add vectors made by the encoder ``info``.

        Raises :class:`EncoderMismatch` if the index holds another encoder's vectors and
        :class:`IndexLocked` if another process is writing.
        """
        folder, milvus = resolve_location(folder)
        if folder.exists() and not folder.is_dir():
            raise IndexProblem(f"--index {folder} is a file, not a directory")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexProblem(f"cannot create index directory {folder}: {exc.strerror}") from exc
        lock = _acquire_write_lock(folder)
        try:
            catalogue = Catalogue(folder / CATALOGUE_FILE, create=True)
            recorded = catalogue.encoder_info()
            if recorded is None:
                catalogue.set_encoder_info(info)
            elif not recorded.same_vectors_as(info):
                catalogue.close()
                raise EncoderMismatch(mismatch_message(folder, recorded, info))
            index = cls(folder, catalogue, recorded or info, {}, lock)
            index.milvus = milvus
            if milvus is not None and catalogue.meta(OWNER_META) is None:
                # Marks the collections this catalogue creates (see MilvusVectorStore).
                catalogue.set_meta(OWNER_META, new_owner_id())
            index.vector_search = vector_search
            try:
                index.stores = index._open_stores(writer=True, vector_search=vector_search)
            except BaseException:
                index._close_stores()
                catalogue.close()
                raise
            index._hide_dead()
            return index
        except BaseException:
            _release(lock)
            raise

    def _open_stores(
        self, *, writer: bool, vector_search: VectorSearchSettings | None = None
    ) -> dict[str, VectorStore]:
        rows = self.catalogue.space_rows()
        stores: dict[str, VectorStore] = {}
        for space, (dims, committed) in rows.items():
            stores[space] = self._open_store(space, dims, committed, writer=writer)
            # Stores opened so far are closed if a later one fails.
            self.stores = stores
        return stores

    def _open_store(self, space: str, dims: int, committed: int, *, writer: bool) -> VectorStore:
        if self.milvus is not None:
            return MilvusVectorStore(
                self.milvus,
                space,
                dims,
                committed,
                writer=writer,
                owner=self.catalogue.meta(OWNER_META) if writer else None,
                settings=self.vector_search,
            )
        if self._device is None:
            self._device = DeviceChoice((self.vector_search or VectorSearchSettings()).gpu)
        return open_vector_store(
            self.folder / "vectors",
            space,
            dims,
            committed,
            writer=writer,
            settings=self.vector_search,
            device=self._device,
        )

    def _close_stores(self) -> None:
        """Close the connections of stores that hold one (Milvus)."""
        for store in self.stores.values():
            if isinstance(store, MilvusVectorStore):
                with suppress(IndexProblem):
                    store.close()

    def _hide_dead(self) -> None:
        self._dead = set(self.catalogue.dead_image_ids())
        for store in self.stores.values():
            store.set_hidden(self._dead, True)

    def close(self) -> None:
        if self._lock_handle is not None:
            self._finish_search_indexes()
            self._finish_facet_counts()
        self._close_stores()
        self.catalogue.close()
        if self._lock_handle is not None:
            _release(self._lock_handle)
            self._lock_handle = None

    def _finish_search_indexes(self) -> None:
        """A writer leaves every approximate index built and saved, so that the next
        reader opens it in milliseconds. A build that fails leaves that space searched
        exactly (correct, slower) and the next writer tries again; ``close`` must not
        raise for it, so the failure is kept in ``build_failure`` for the caller (the
        CLI asks ``finish_building`` itself before closing, to tell it)."""
        self.build_failure = finish_building(self.stores.values())

    def _finish_facet_counts(self) -> None:
        """A writer leaves the filter panel's counts stored: a catalogue made by an
        older version has them counted in full, once (O(N)); every commit keeps them
        from then on. Not a reason for ``close`` to fail: readers count in SQL."""
        with suppress(IndexProblem, sqlite3.Error):
            if self.catalogue.has_table("facet_counts") and not counts_are_kept(self.catalogue):
                store_full_count(self.catalogue)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------

    def add_space(self, space: str, dims: int) -> VectorStore:
        """Create an extra space (say, crops) in an index being written."""
        self._require_writer()
        if space not in self.stores:
            self.catalogue.ensure_space(space, dims)
            self.stores[space] = self._open_store(space, dims, 0, writer=True)
        return self.stores[space]

    def commit(
        self,
        new_images: Sequence[NewImage],
        vectors: Mapping[str, SpaceRows],
        files: Sequence[FileState | tuple[str, int, int, int | None]],
    ) -> list[int]:
        """Durably add images with their vectors and the files that show them.

        ``files`` items are FileStates, or (path, size, mtime_ns, batch position) where the
        position refers to ``new_images`` (``None`` is not allowed there: use a
        FileState with the existing image id). Returns the new images' ids.
        """
        self._require_writer()
        first_id = self.catalogue.next_image_id()
        ids = np.arange(first_id, first_id + len(new_images), dtype=np.int64)
        for space, rows in vectors.items():
            if space not in self.stores:
                raise IndexProblem(f"space {space!r} does not exist in this index")
            if isinstance(rows, tuple):
                positions, matrix = rows
                self.stores[space].add(ids[np.asarray(positions, np.int64)], matrix)
            else:
                self.stores[space].add(ids, rows)
        # A store that keeps filter fields is flushed inside the transaction, once the
        # catalogue (uncommitted yet) can say what the fields are: its rows are still
        # durable before the catalogue records them.
        filterable = {s: st for s, st in self.stores.items() if isinstance(st, FilterableStore)}
        committed = {
            space: store.flush() for space, store in self.stores.items() if space not in filterable
        }
        resolved = [
            f
            if isinstance(f, FileState)
            else FileState(path=f[0], size=f[1], mtime_ns=f[2], image_id=int(ids[int(f[3])]))  # type: ignore[arg-type]
            for f in files
        ]
        with self.catalogue.transaction():
            # Only images whose files change here can die (a path moved to other bytes)
            # or come back (a file points at them again).
            touched = self.catalogue.image_ids_of_paths(f.path for f in resolved)
            touched.update(f.image_id for f in resolved)
            facet_change = FacetCountsChange.before(self.catalogue, touched | set(ids.tolist()))
            self.catalogue.insert_images(first_id, new_images)
            self.catalogue.upsert_files(resolved)
            if filterable:
                committed |= self._flush_with_fields(filterable, set(ids.tolist()), touched)
            for space, rows_count in committed.items():
                self.catalogue.set_space_rows(space, rows_count)
            died, revived = self.catalogue.refresh_alive(touched)
            facet_change.after()
        self._apply_alive(died, revived)
        return ids.tolist()

    def remove_files(self, paths: Iterable[str]) -> int:
        """Forget these paths; images left without a file leave the search results."""
        self._require_writer()
        paths = list(paths)
        with self.catalogue.transaction():
            touched = self.catalogue.image_ids_of_paths(paths)
            facet_change = FacetCountsChange.before(self.catalogue, touched)
            self.catalogue.delete_files(paths)
            filterable = {s: st for s, st in self.stores.items() if isinstance(st, FilterableStore)}
            if filterable and touched:
                self._flush_with_fields(filterable, set(), touched)
            died, revived = self.catalogue.refresh_alive(touched)
            facet_change.after()
        self._apply_alive(died, revived)
        return len(paths)

    def warm_page_cache(self, stopping: threading.Event | None = None) -> WarmReport:
        """Have the kernel read the files searches read (approximate indexes first,
        then the float16 rows) while they fit in half the memory available now: the
        first searches after a start then find them in the page cache (see
        :mod:`spyglass.store.page_cache`). Vectors kept in Milvus have none here."""
        paths = [
            path
            for store in self.stores.values()
            if isinstance(store, LocalVectorStore)
            for path in store.search_files()
        ]
        available = available_memory()
        return warm_page_cache(paths, None if available is None else available // 2, stopping)

    def add_roots(self, roots: Iterable[str]) -> None:
        """Record folders as indexed. A new root changes the top folder of the paths
        under it (the innermost root names it): the facet counts of the images with a
        file there are kept in the same transaction, at the cost of those images (none
        for a folder indexed for the first time)."""
        self._require_writer()
        roots = list(roots)
        with self.catalogue.transaction():
            known = set(self.catalogue.roots())
            touched: set[int] = set()
            for root in sorted(set(roots) - known):
                touched |= self.catalogue.image_ids_under(root)
            facet_change = FacetCountsChange.before(self.catalogue, touched)
            self.catalogue.add_roots(roots)
            facet_change.after()

    def rewrite_filter_fields(self, image_ids: Iterable[int]) -> None:
        """The rows of these images take their filter fields again from the catalogue,
        in stores that keep them (what the catalogue says of them changed: their header
        was read). Call inside the transaction that changes the catalogue."""
        self._require_writer()
        filterable = {s: st for s, st in self.stores.items() if isinstance(st, FilterableStore)}
        if filterable:
            self._flush_with_fields(filterable, set(), {int(i) for i in image_ids})

    def _flush_with_fields(
        self, stores: Mapping[str, FilterableStore], new: set[int], touched: set[int]
    ) -> dict[str, int]:
        """Flush stores that keep filter fields: the new images' rows carry theirs, and
        the rows of images whose files changed (``touched``: a path gained or lost)
        take their new ones. Called inside the transaction that records the change,
        so the catalogue already says what the fields are."""
        fields = filter_fields(self.catalogue, new | touched)
        return {
            space: store.flush_with_fields(fields, rewrite=touched - new)
            for space, store in stores.items()
        }

    def _apply_alive(self, died: set[int], revived: set[int]) -> None:
        self._dead = (self._dead | died) - revived
        if died or revived:
            self._alive_changes += 1
        for store in list(self.stores.values()):
            if died:
                store.set_hidden(died, True)
            if revived:
                store.set_hidden(revived, False)

    def take_catalogue_of(self, source: Index) -> None:
        """Make this index's catalogue a copy of ``source``'s: a migration, called once
        every space's rows were copied with the same owners and in the same order. The
        copy is written beside the catalogue and renamed over it in one step (a crash
        before leaves this index empty, and a new copy deletes the rows it left), and
        keeps this catalogue's Milvus owner id."""
        self._require_writer()
        owner = self.catalogue.meta(OWNER_META)
        path = self.folder / CATALOGUE_FILE
        scratch = path.with_name(path.name + ".copying")
        scratch.unlink(missing_ok=True)
        try:
            origin = sqlite3.connect(f"file:{source.catalogue.path}?mode=ro", uri=True)
            copy = sqlite3.connect(scratch)
            try:
                origin.backup(copy)
                if owner is not None:
                    copy.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (OWNER_META, owner))
                    copy.commit()
            finally:
                origin.close()
                copy.close()
            with scratch.open("rb") as handle:
                os.fsync(handle.fileno())
        except (sqlite3.Error, OSError) as error:
            scratch.unlink(missing_ok=True)
            raise IndexProblem(f"cannot copy the catalogue into {path}: {error}") from error
        self.catalogue.close()
        os.replace(scratch, path)
        self.catalogue = Catalogue(path)

    def _require_writer(self) -> None:
        if self._lock_handle is None:
            raise IndexProblem("this index was opened read-only")

    # -- reading -----------------------------------------------------------------------

    def refresh(self) -> None:
        """See what another process committed since this index was opened."""
        with self._state_lock:
            rows = self.catalogue.space_rows()
            stores = dict(self.stores)
            for space, (dims, committed) in rows.items():
                store = stores.get(space)
                if store is None:
                    stores[space] = self._open_store(space, dims, committed, writer=False)
                    stores[space].set_hidden(self._dead, True)
                elif isinstance(store, LocalVectorStore | MilvusVectorStore):
                    store.reload(committed)
            # Swap, never mutate: readers iterating the old dict are not disturbed.
            self.stores = stores
            dead = set(self.catalogue.dead_image_ids())
            self._apply_alive(dead - self._dead, self._dead - dead)

    def generation(self) -> tuple[int, int]:
        """Changes whenever the set of images that can be found changes (rows are only
        ever appended, and deaths and revivals are counted): lets a reader keep what it
        derived from that set (the map's sample) until then. O(1)."""
        with self._state_lock:
            store = self.stores.get(self.info.image_space)
            return (len(store) if store is not None else 0, self._alive_changes)

    def derived(self, key: Hashable, build: Callable[[], T]) -> T:
        """``build()``'s value, kept under ``key`` until :meth:`generation` changes: for
        what a reader derives from the set of searchable images and would otherwise
        derive again on every query (feedback's pool of random negatives). Two threads
        asking at once may both build; either value is kept."""
        generation = self.generation()
        with self._state_lock:
            kept = self._derived.get(key)
        if kept is not None and kept[0] == generation:
            return cast(T, kept[1])
        value = build()
        with self._state_lock:
            self._derived[key] = (generation, value)
        return value

    def count(self) -> int:
        """Images (distinct contents) that can be found: rows of the image space (one per
        image ever embedded) less the dead ones. O(1): searches ask for it every time."""
        with self._state_lock:
            store = self.stores.get(self.info.image_space)
            return max(0, (len(store) if store is not None else 0) - len(self._dead))


def holds_images(folder: Path, look_at: int = 2000) -> bool:
    """Whether ``folder`` or a folder in it holds image files (by name): tells a person who
    gave a photo folder as ``--index`` what went wrong. Looks at no more than ``look_at``
    entries, so that a huge folder costs a moment at most."""
    from spyglass.images import is_candidate

    pending, depth_of = [folder], {folder: 0}
    while pending and look_at > 0:
        current = pending.pop(0)
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    look_at -= 1
                    if look_at < 0:
                        break
                    if entry.name.startswith("."):
                        continue
                    if entry.is_file() and is_candidate(entry.name):
                        return True
                    if entry.is_dir() and depth_of[current] < 1:
                        child = Path(entry.path)
                        depth_of[child] = depth_of[current] + 1
                        pending.append(child)
        except OSError:
            continue
    return False


def _acquire_write_lock(folder: Path) -> int:
    try:
        handle = os.open(folder / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise storage_error(folder / "write.lock", error) from error
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        holder = os.pread(handle, 32, 0).decode(errors="replace").strip()
        os.close(handle)
        # The file is empty between the holder's flock and its writing its pid (and a
        # program other than spyglass may hold it): then there is no pid to name.
        who = f"pid {holder}" if holder.isdigit() else "another process"
        raise IndexLocked(
            f"index {folder} is being written by {who}; wait for it to finish"
        ) from exc
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, str(os.getpid()).encode(), 0)
    except OSError as error:
        _release(handle)
        raise storage_error(folder / "write.lock", error) from error
    return handle


def _release(handle: int) -> None:
    with suppress(OSError):
        fcntl.flock(handle, fcntl.LOCK_UN)
    with suppress(OSError):
        os.close(handle)
