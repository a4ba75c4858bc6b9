"""Failures of the OS and of SQLite while an index is written or read, as one typed line
that names the file and the fix (a full disk, a read-only folder, an I/O error).

The index's commit protocol (vectors first, then one SQLite transaction) means such a
failure loses nothing committed: what was written after the last commit is cut off by
the next writer. The messages say so.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from spyglass.errors import IndexCorrupt, IndexProblem

KEPT = "work committed so far is kept"


def storage_error(path: Path | str, error: OSError) -> IndexProblem:
    """An OSError met while writing or reading ``path`` -> one line."""
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return IndexProblem(
            f"the disk holding {path} is full: free some space and run the command again ({KEPT})"
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return IndexProblem(f"cannot write {path}: permission denied or read-only ({KEPT})")
    if code == errno.EIO:
        return IndexProblem(f"input/output error on {path}: check the disk ({KEPT})")
    return IndexProblem(f"cannot use {path}: {error.strerror or error} ({KEPT})")


def catalogue_error(path: Path | str, error: sqlite3.Error) -> IndexProblem:
    """A SQLite failure on the catalogue at ``path`` -> one line."""
    text = str(error)
    if "full" in text:
        return IndexProblem(
            f"the disk holding {path} is full: free some space and run the command again ({KEPT})"
        )
    if "not a database" in text or "malformed" in text:
        return IndexCorrupt(
            f"{path} is not a readable catalogue ({text}): re-create the index with a new --index"
        )
    if "readonly" in text or "unable to open" in text:
        return IndexProblem(f"cannot write {path} ({text}): check its permissions")
    if "disk I/O" in text:
        return IndexProblem(f"input/output error on {path}: check the disk ({KEPT})")
    return IndexProblem(f"catalogue {path}: {text}")
