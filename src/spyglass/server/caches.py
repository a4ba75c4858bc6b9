"""Where the server keeps what it derives from an index: thumbnails, the map layout and
the embedded vocabulary. Never in the index folder, which ``spyglass serve`` opens
read-only: under the Spyglass cache folder (``RuntimeSettings.cache_dir``), one
folder per index.

>>> folders = CacheFolders.for_index(Path("~/.cache/spyglass"), index)
>>> folders.thumbnails      # ~/.cache/spyglass/server/indexes/photos-3f2a.../thumbnails

The per-index folder is named by the index folder's name (for people) and a hash of
its absolute path and identity (for uniqueness): the model that built it and the first
image it holds, with the time it was added. An index deleted and built again in the same
place gets a new folder, so nothing cached from the old one is shown for the new one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from spyglass.store.index import Index

#: Bumped when the layout of the cache folders changes.
CACHE_LAYOUT = "server-cache-v1"


def index_identity(index: Index) -> str:
    """A text that changes when the index at a path is replaced by another one."""
    info = index.info
    rows = index.catalogue.execute("SELECT content_hash, added_at FROM images ORDER BY id LIMIT 1")
    first = f"{rows[0][0]}@{rows[0][1]!r}" if rows else "empty"
    return f"{CACHE_LAYOUT}|{index.folder.absolute()}|{info.name}|{info.version}|{first}"


def index_cache_name(index: Index) -> str:
    """``<index folder name>-<16 hex digits>``, safe as one path component."""
    digest = hashlib.blake2b(index_identity(index).encode(), digest_size=8).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", index.folder.name).strip("-.")[:40] or "index"
    return f"{readable}-{digest}"


@dataclass(frozen=True)
class CacheFolders:
    """The folders one server writes; ``None``: keep that cache in memory only."""

    thumbnails: Path | None
    map: Path | None
    vocabulary: Path | None

    @classmethod
    def for_index(
        cls,
        cache_root: Path | None,
        index: Index,
        *,
        thumbnails: Path | None = None,
        map_folder: Path | None = None,
    ) -> CacheFolders:
        """Folders under ``cache_root`` (explicit ``thumbnails`` / ``map_folder`` win).
        The vocabulary depends on the model only, so it is shared by all indexes."""
        base = None if cache_root is None else cache_root / "server"
        own = None if base is None else base / "indexes" / index_cache_name(index)
        return cls(
            thumbnails=thumbnails or (None if own is None else own / "thumbnails"),
            map=map_folder or (None if own is None else own / "map"),
            vocabulary=None if base is None else base / "vocabulary",
        )
