"""What every request handler shares: the engine and the server's own collaborators.

Built once by :func:`spyglass.server.app.create_app` and kept on ``app.state``; handlers
get it through :func:`get_state`. Handlers run in uvicorn's thread pool: the catalogue
connection and the vector stores lock themselves, the upload store and the map hold
their own locks, and the thumbnail cache writes atomically.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated

from fastapi import Depends, Request

from spyglass.engine import Spyglass
from spyglass.server.atlas import CollectionMap, MapLayout
from spyglass.server.gate import ImageGate
from spyglass.server.settings import ServerSettings
from spyglass.server.thumbnails import ThumbnailCache
from spyglass.server.uploads import UploadStore


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
        self.thumbnails = ThumbnailCache(
            self.gate,
            settings.thumbnail_dir or index.folder / "thumbnails",
            max_pixels=limits.max_pixels,
        )
        self.map = CollectionMap(
            index,
            settings.map_dir or index.folder / "map",
            max_points=settings.map_max_points,
            threads=settings.map_threads,
        )
        #: (layout, ids of it the server will not show), see routes.collection.
        self.map_unserved: tuple[MapLayout, list[int]] | None = None
        self._refresh_lock = threading.Lock()
        self._thread_state = threading.local()
        self._refreshed_at = time.monotonic()
        self._searchable = index.count()

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
