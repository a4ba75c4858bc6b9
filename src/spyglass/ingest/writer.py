"""Ingest, stage 4: gather embedded images and linked files, commit them in groups.

A group is committed in one step (vectors fsynced, then one SQLite transaction), so a
crash loses at most the group being gathered, and nothing half-written survives.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from spyglass.store.catalogue import FileState, NewImage, SkippedFile
from spyglass.store.index import Index, SpaceRows


class GroupWriter:
    """Buffers one commit group; :meth:`commit` writes it durably."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._reset()

    def _reset(self) -> None:
        self._images: list[NewImage] = []
        self._vectors: dict[str, list[np.ndarray]] = {}
        #: For spaces with several rows per image: positions in the group, and rows.
        self._multi: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._new_files: list[tuple[str, int, int, int]] = []
        self._linked: list[FileState] = []
        self._skipped: list[tuple[SkippedFile, int | None, int | None]] = []
        self._turned_bad: list[str] = []
        #: content hash -> position in this group, for copies met before they commit.
        self._pending_hashes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._images) + len(self._linked) + len(self._new_files)

    def pending_position(self, content_hash: str) -> int | None:
        return self._pending_hashes.get(content_hash)

    def add_embedded(
        self,
        images: list[NewImage],
        files: list[tuple[str, int, int]],
        vectors: Mapping[str, SpaceRows],
    ) -> None:
        start = len(self._images)
        for n, (image, file) in enumerate(zip(images, files, strict=True)):
            self._pending_hashes[image.content_hash] = start + n
            self._new_files.append((*file, start + n))
        self._images.extend(images)
        for space, rows in vectors.items():
            if isinstance(rows, tuple):
                positions, matrix = rows
                self._multi.setdefault(space, []).append((np.asarray(positions) + start, matrix))
            else:
                self._vectors.setdefault(space, []).append(rows)

    def add_copy_of_pending(self, path: str, size: int, mtime_ns: int, position: int) -> None:
        self._new_files.append((path, size, mtime_ns, position))

    def add_linked(self, file: FileState) -> None:
        self._linked.append(file)

    def add_skipped(
        self,
        skipped: SkippedFile,
        size: int | None,
        mtime_ns: int | None,
        was_indexed: bool = False,
    ) -> None:
        """Record a skipped file; ``was_indexed``: it was found in an earlier run and has
        turned bad since, so its old entry must leave the results too."""
        self._skipped.append((skipped, size, mtime_ns))
        if was_indexed:
            self._turned_bad.append(skipped.path)

    def commit(self) -> None:
        if self._images or self._new_files or self._linked:
            vectors: dict[str, SpaceRows] = {
                space: np.concatenate(parts) for space, parts in self._vectors.items()
            }
            for space, pairs in self._multi.items():
                vectors[space] = (
                    np.concatenate([p for p, _ in pairs]),
                    np.concatenate([m for _, m in pairs]),
                )
            self.index.commit(self._images, vectors, [*self._linked, *self._new_files])
        if self._turned_bad:
            self.index.remove_files(self._turned_bad)
        if self._skipped:
            with self.index.catalogue.transaction():
                self.index.catalogue.record_skipped(self._skipped)
        self._reset()
