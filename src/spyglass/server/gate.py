"""The one door between HTTP and the disk: only indexed images, inside indexed folders.

Clients name images by id (or by a path that must be a catalogue entry). A path that
climbs (``..``), an absolute path outside the indexed folders, a file whose symbolic
links lead out of them, and a file whose bytes are no longer the content that was
indexed are all refused. Nothing here opens a path a client typed: paths are looked
up in the catalogue first, and only the catalogue's own paths are opened.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from spyglass.errors import ImageRejected, UnknownImageId
from spyglass.ingest.reader import FoundFile, normalise_root, read_and_hash
from spyglass.server.problems import ApiProblem
from spyglass.store.catalogue import ImageRecord
from spyglass.store.index import Index

#: Longest path a client may send (PATH_MAX on Linux).
MAX_PATH_LENGTH = 4096
#: Seconds a :meth:`ImageGate.servable` answer is reused, and how many are kept.
SERVABLE_TTL = 60.0
SERVABLE_CACHE_SIZE = 200_000


@dataclass(frozen=True)
class ServedFile:
    """An indexed image's bytes, checked against the content that was indexed."""

    record: ImageRecord
    path: str
    data: bytes
    content_hash: str


class ImageGate:
    """Resolves ids and client paths to catalogue records, and reads indexed files."""

    def __init__(
        self, index: Index, *, max_file_bytes: int, follow_links_out: bool, roots_ttl: float = 5.0
    ) -> None:
        self.index = index
        self.max_file_bytes = max_file_bytes
        self.follow_links_out = follow_links_out
        self._roots_ttl = roots_ttl
        self._roots: tuple[list[str], list[str]] = ([], [])
        self._roots_at = -1e9
        self._lock = threading.Lock()
        self._servable: dict[tuple[str, ...], tuple[bool, float]] = {}

    # -- roots ------------------------------------------------------------------------

    def roots(self) -> tuple[list[str], list[str]]:
        """(indexed roots as recorded, the same with symbolic links resolved)."""
        with self._lock:
            if time.monotonic() - self._roots_at > self._roots_ttl:
                recorded = [normalise_root(r) for r in self.index.catalogue.roots()]
                self._roots = (recorded, [os.path.realpath(r) for r in recorded])
                self._roots_at = time.monotonic()
            return self._roots

    # -- ids and paths -> records -------------------------------------------------------

    def record(self, image_id: int) -> ImageRecord:
        """The live record of an image id, or :class:`UnknownImageId` (404)."""
        record = self.index.catalogue.images([image_id]).get(image_id)
        if record is None or not record.alive or not record.paths:
            raise UnknownImageId(f"no indexed image has id {image_id}")
        return record

    def lookup(self, path: str) -> ImageRecord:
        """The record of an indexed file named by a client: an absolute path inside the
        indexed folders, or a path relative to one of them."""
        if not path or len(path) > MAX_PATH_LENGTH or "\x00" in path:
            raise ApiProblem(400, "bad-path", "the path is empty, too long or holds a NUL")
        if ".." in PurePosixPath(path).parts or "\\" in path:
            raise ApiProblem(403, "path-escape", "paths may not climb out with '..'")
        recorded, _ = self.roots()
        if path.startswith("/"):
            candidates = [os.path.normpath(path)]
            if not any(_inside(candidates[0], root) for root in recorded):
                raise ApiProblem(403, "outside-index", "the path is outside the indexed folders")
        else:
            candidates = [os.path.normpath(os.path.join(root, path)) for root in recorded]
        for candidate in candidates:
            state = self.index.catalogue.file(candidate)
            if state is not None:
                self.check_inside(candidate)
                return self.record(state.image_id)
        raise UnknownImageId(f"no indexed image has the path {path}")

    # -- reading ------------------------------------------------------------------------

    def check_inside(self, path: str) -> str:
        """The real path of an indexed file, refused (403) if links lead it out of the
        indexed folders (unless the server follows links out)."""
        recorded, real_roots = self.roots()
        if not any(_inside(path, root) for root in recorded):
            raise ApiProblem(403, "outside-index", "the file is outside the indexed folders")
        real = os.path.realpath(path)
        if not self.follow_links_out and not any(_inside(real, root) for root in real_roots):
            raise ApiProblem(
                403,
                "link-outside-index",
                "the file is a symbolic link out of the indexed folders "
                "(start the server with --follow-links to serve such files)",
            )
        return real

    def servable(self, paths: tuple[str, ...]) -> bool:
        """Whether one of these catalogue paths passes the location checks (nothing is
        read: a file that changed since indexing is found out only when it is read).

        Advisory (it decides whether a result offers a thumbnail URL), so answers are
        kept for ``SERVABLE_TTL`` seconds: resolving links costs a system call per
        folder of each path. :meth:`read` always checks afresh."""
        now = time.monotonic()
        with self._lock:
            known = self._servable.get(paths)
        if known is not None and now - known[1] < SERVABLE_TTL:
            return known[0]
        answer = False
        for path in paths:
            try:
                self.check_inside(path)
            except ApiProblem:
                continue
            answer = True
            break
        with self._lock:
            if len(self._servable) > SERVABLE_CACHE_SIZE:
                self._servable.clear()
            self._servable[paths] = (answer, now)
        return answer

    def read(self, image_id: int) -> ServedFile:
        """The bytes of an indexed image from the first of its files that is inside the
        indexed folders and still holds the indexed content."""
        record = self.record(image_id)
        expected = self.content_hash(image_id)
        refusal: ApiProblem | None = None
        for path in record.paths:
            try:
                real = self.check_inside(path)
                stat = os.stat(real)
                read = read_and_hash(
                    FoundFile(real, stat.st_size, stat.st_mtime_ns), self.max_file_bytes
                )
            except ApiProblem as problem:
                refusal = refusal or problem
                continue
            except (OSError, ImageRejected):
                continue
            if read.content_hash != expected:
                refusal = refusal or ApiProblem(
                    409, "file-changed", "the file changed since it was indexed; re-index it"
                )
                continue
            return ServedFile(record, path, read.data, read.content_hash)
        if refusal is not None:
            raise refusal
        raise ApiProblem(404, "file-missing", f"the files of image {image_id} are gone")

    def content_hash(self, image_id: int) -> str:
        """The BLAKE2b-128 hex digest of the content indexed under ``image_id``."""
        rows = self.index.catalogue.execute(
            "SELECT content_hash FROM images WHERE id = ?", (image_id,)
        )
        if not rows:
            raise UnknownImageId(f"no indexed image has id {image_id}")
        return str(rows[0][0])


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
