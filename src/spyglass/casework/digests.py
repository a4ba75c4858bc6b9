"""Fingerprints a case file records: of each result's file (SHA-256 and MD5, the two
that evidence tools check), of the query image, and of the index's state."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from spyglass.store.index import Index

_CHUNK = 1 << 20
#: Files listed per catalogue read while the index digest is made.
_PAGE = 10_000


@dataclass(frozen=True)
class FileDigests:
    """Hex digests of a file's bytes; both ``None`` when it cannot be read now."""

    sha256: str | None
    md5: str | None


def file_digests(path: str | Path) -> FileDigests:
    """SHA-256 and MD5 of the file at ``path``, read once, in 1 MiB pieces."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as handle:
            while piece := handle.read(_CHUNK):
                sha256.update(piece)
                md5.update(piece)
    except OSError:
        return FileDigests(None, None)
    return FileDigests(sha256.hexdigest(), md5.hexdigest())


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class IndexState:
    """What an index held when a search ran: its counts, and a SHA-256 over every
    indexed path with the content hash of its bytes (sorted by path), which changes
    when any file is added, removed or changed and re-indexed."""

    files: int
    images: int
    digest: str

    def to_json(self) -> dict[str, object]:
        return {"files": self.files, "images": self.images, "digest": self.digest}


def index_state(index: Index) -> IndexState:
    """The state of ``index`` now. Reads the catalogue's file list in pages: O(files)
    (about a second per million files), never all of it in memory at once."""
    digest = hashlib.sha256()
    files = 0
    last = ""
    while True:
        rows = index.catalogue.execute(
            "SELECT files.path, images.content_hash FROM files "
            "JOIN images ON images.id = files.image_id "
            "WHERE files.path > ? ORDER BY files.path LIMIT ?",
            (last, _PAGE),
        )
        if not rows:
            break
        for path, content_hash in rows:
            digest.update(f"{path}\t{content_hash}\n".encode("utf-8", "surrogateescape"))
        files += len(rows)
        last = rows[-1][0]
    return IndexState(files=files, images=index.count(), digest=digest.hexdigest())
