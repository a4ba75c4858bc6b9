"""What every request handler shares: the engine and the server's own collaborators.

Built once by :func:`spyglass.server.app.create_app` and kept on ``app.state``; handlers
get it through :func:`get_state`. Handlers run in uvicorn's thread pool: the catalogue
connection and the vector stores lock themselves, the upload store, the map and the
vocabulary hold their own locks, and the thumbnail cache writes atomically.

Nothing is written into the index folder: the caches live under the Spyglass cache
folder (:mod:`spyglass.server.caches`), or in memory when there is none.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Annotated

from fastapi import Depends, Request

from spyglass.casework.audit import AuditLog
from spyglass.engine import Spyglass
from spyglass.server.admission import Admission
from spyglass.server.atlas import CollectionMap, MapLayout
from spyglass.server.caches import CacheFolders
from spyglass.server.gate import ImageGate
from spyglass.server.settings import ServerSettings
from spyglass.server.thumbnails import ThumbnailCache
from spyglass.server.uploads import UploadStore
from spyglass.server.vocabulary import Vocabulary
from spyglass.store.page_cache import WarmReport


class ServerState:
    def __init__(self, engine: Spyglass, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        index = engine.index
        limits = engine.ingest_settings
        self.max_pixels = min(settings.max_upload_pixels, limits.max_pixels)
        self.gate = ImageGate(
            index,
            max_file_bytes=limits.max_file_bytes,
            follow_links_out=settings.follow_links_out,
        )
        self.uploads = UploadStore(
            slots=settings.upload_slots,
            max_bytes=settings.max_upload_bytes,
            max_pixels=self.max_pixels,
        )
        self.caches = CacheFolders.for_index(
            settings.cache_dir,
            index,
            thumbnails=settings.thumbnail_dir,
            map_folder=settings.map_dir,
        )
        self.thumbnails = ThumbnailCache(
            self.gate, self.caches.thumbnails, max_pixels=limits.max_pixels
        )
        #: Searches compute a lane's slot at a time, so heavy ones cannot starve light ones.
        self.admission = Admission(settings.cores)
        #: Set at shutdown: background work stops at its next step (see background.py).
        self.stopping = threading.Event()
        self.vocabulary = Vocabulary(engine.encoder, self.caches.vocabulary, stopping=self.stopping)
        self.map = CollectionMap(
            index,
            self.caches.map,
            max_points=settings.map_max_points,
            vocabulary=self.vocabulary,
            threads=settings.map_threads,
            stopping=self.stopping,
        )
        #: Where searches and exports are recorded (None: nowhere); it serialises appends.
        self.audit = AuditLog(settings.audit_log) if settings.audit_log else None
        #: (layout, ids of it the server will not show), see routes.collection.
        self.map_unserved: tuple[MapLayout, list[int]] | None = None
        self._refresh_lock = threading.Lock()
        self._thread_state = threading.local()
        self._refreshed_at = time.monotonic()
        self._searchable = index.count()
        #: What the start's read-ahead of the index files did (None until it is done).
        self.page_cache: WarmReport | None = None
        self._warming: threading.Thread | None = None
        if settings.prepare_at_start:
            # The map and the words are ready by the time someone opens the map tab.
            self.vocabulary.start()
            self.map.state(start=True)
            # The first searches find the index's files in the page cache.
            self._warming = threading.Thread(
                target=self._warm_page_cache, name="warm-page-cache", daemon=True
            )
            self._warming.start()

    def _warm_page_cache(self) -> None:
        # A read-ahead that fails (a file replaced by a writer, say) costs only speed.
        with contextlib.suppress(Exception):
            self.page_cache = self.engine.index.warm_page_cache(self.stopping)

    def close(self, timeout: float = 60.0) -> None:
        """Stop the background work and wait for it (the app's shutdown calls this)."""
        self.stopping.set()
        self.vocabulary.join(timeout)
        self.map.join(timeout)
        if self._warming is not None:
            self._warming.join(timeout)

    def prepare_thread(self) -> None:
        """Give FAISS this thread's share of threads, once per thread of the pool.

        OpenMP keeps its thread count per calling thread, so setting it once at start
        would not reach the pool's threads."""
        if getattr(self._thread_state, "prepared", False):
            return
        import faiss

        faiss.omp_set_num_threads(self.settings.search_threads)
        self._thread_state.prepared = True

    def searchable(self) -> int:
        """Images a search can return now (picks up other processes' indexing)."""
        self.refresh_if_due()
        return self._searchable

    def refresh_if_due(self) -> None:
        if time.monotonic() - self._refreshed_at < self.settings.refresh_seconds:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return  # another thread is refreshing
        try:
            self.engine.index.refresh()
            self._searchable = self.engine.index.count()
            self._refreshed_at = time.monotonic()
        finally:
            self._refresh_lock.release()


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.spyglass
    return state


State = Annotated[ServerState, Depends(get_state)]
