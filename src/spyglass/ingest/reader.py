"""Ingest, stage 1: find the image files under the given folders and read them.

The walk follows symbolic links (a photo library often links folders in) but never
enters the same directory twice, so a link loop is recorded and passed, not followed
forever. Files whose names cannot be decoded, folders that cannot be read and links
that lead nowhere are recorded as skipped, with the reason, and the walk goes on.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from spyglass.images import is_candidate, read_image_file
from spyglass.store.catalogue import SkippedFile


@dataclass(frozen=True)
class FoundFile:
    """An image candidate: absolute path, size in bytes, modification time in ns."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ReadFile:
    """A file's bytes and their content hash (BLAKE2b-128, hex)."""

    file: FoundFile
    content_hash: str
    data: bytes


def printable_path(path: str) -> str:
    """A path with undecodable bytes shown as \\xNN escapes, safe to store and print."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _decodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normalise_root(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


def walk(roots: Sequence[str], exclude: Sequence[str] = ()) -> Iterator[FoundFile | SkippedFile]:
    """Every image candidate under ``roots`` (folders or single files), each path once.

    ``exclude`` folders (the index's own directory) are not entered. Hidden files and
    folders (name starting with a dot) are passed over silently.
    """
    excluded = {normalise_root(p) for p in exclude}
    visited_dirs: set[tuple[int, int]] = set()
    seen_paths: set[str] = set()
    for root in roots:
        root = normalise_root(root)
        if os.path.isdir(root):
            yield from _walk_dir(root, excluded, visited_dirs, seen_paths)
        elif root not in seen_paths:
            seen_paths.add(root)
            yield from _file_entry(root)


def _walk_dir(
    top: str, excluded: set[str], visited: set[tuple[int, int]], seen: set[str]
) -> Iterator[FoundFile | SkippedFile]:
    stack = [top]
    while stack:
        folder = stack.pop()
        if folder in excluded:
            continue
        try:
            info = os.stat(folder)
        except OSError as exc:
            yield _skip_for_error(folder, exc, "folder")
            continue
        key = (info.st_dev, info.st_ino)
        if key in visited:
            if os.path.islink(folder):
                yield SkippedFile(
                    printable_path(folder),
                    "symlink-loop",
                    f"links to a folder already indexed ({os.path.realpath(folder)})",
                )
            continue
        visited.add(key)
        try:
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            yield _skip_for_error(folder, exc, "folder")
            continue
        subfolders = []
        for entry in children:
            if entry.name.startswith("."):
                continue
            if not _decodable(entry.name):
                if is_candidate(entry.path) or _is_dir(entry):
                    yield SkippedFile(
                        printable_path(entry.path),
                        "undecodable-name",
                        "file name is not valid UTF-8; rename it to index it",
                    )
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError as exc:
                yield _skip_for_error(entry.path, exc, "entry")
                continue
            if is_dir:
                subfolders.append(entry.path)
            elif is_candidate(entry.name) and entry.path not in seen:
                seen.add(entry.path)
                yield from _file_entry(entry.path)
        stack.extend(reversed(subfolders))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _file_entry(path: str) -> Iterator[FoundFile | SkippedFile]:
    try:
        info = os.stat(path)
    except OSError as exc:
        yield _skip_for_error(path, exc, "file")
        return
    if stat.S_ISDIR(info.st_mode):
        return
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the reader, a device never end
        yield SkippedFile(printable_path(path), "special-file", "not a regular file")
        return
    yield FoundFile(path=path, size=info.st_size, mtime_ns=info.st_mtime_ns)


def _skip_for_error(path: str, exc: OSError, what: str) -> SkippedFile:
    shown = printable_path(path)
    if exc.errno == errno.ELOOP:
        return SkippedFile(shown, "symlink-loop", "symbolic link loop")
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return SkippedFile(shown, "broken-symlink", "symbolic link to nothing")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SkippedFile(shown, "unreadable", f"permission denied ({what})")
    return SkippedFile(shown, "unreadable", f"cannot read {what}: {exc.strerror or exc}")


def read_and_hash(file: FoundFile, max_bytes: int) -> ReadFile:
    """Read a file and hash its bytes. Raises ``ImageRejected`` (empty, unreadable, ...)."""
    data = read_image_file(file.path, max_bytes)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    return ReadFile(file=file, content_hash=digest, data=data)
