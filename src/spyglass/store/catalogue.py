"""The catalogue: which files are indexed, which image content each holds, what was
skipped and why, and which encoder made the vectors. SQLite in WAL mode.

An *image* is a distinct content (by BLAKE2b hash of the file bytes) and owns the
vectors; a *file* is a path that shows an image. Renaming or copying a file adds a file
row that points at the existing image, so nothing is embedded twice. An image with no
file left is *dead*: kept (its vectors are reused if the content comes back) but hidden
from search.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spyglass.encoders.base import EncoderInfo
from spyglass.image_meta import HeaderMeta
from spyglass.store.failures import catalogue_error

#: 2 added ``image_meta`` (what each image's header says: capture time, camera, GPS,
#: orientation). A catalogue of version 1 gets the table when next opened for writing;
#: its images have no row there until ``spyglass index`` reads their headers again.
#: 3 added ``facet_counts`` (the filter panel's unfiltered counts, kept by every
#: commit): a catalogue of an older version gets it, marked not kept, when next opened
#: for writing, and that writer counts it in full when it closes.
SCHEMA_VERSION = 3
#: Meta key set once every image's header was read (see ``ingest/header_backfill.py``).
HEADERS_BACKFILLED = "header_meta_backfilled"
#: Meta key: "1" while ``facet_counts`` holds the counts of the rows (see
#: ``store/facet_counts.py``), "0" until a writer counts them in full.
FACET_COUNTS_KEPT = "facet_counts_kept"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY, added_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL UNIQUE,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    format TEXT NOT NULL,
    alive INTEGER NOT NULL DEFAULT 1,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_image ON files(image_id);
CREATE INDEX IF NOT EXISTS dead_images ON images(id) WHERE alive = 0;
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spaces (
    name TEXT PRIMARY KEY,
    dims INTEGER NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS image_meta (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    taken_at REAL,
    make TEXT,
    model TEXT,
    latitude REAL,
    longitude REAL,
    orientation INTEGER
);
CREATE TABLE IF NOT EXISTS facet_counts (
    facet TEXT NOT NULL,
    value TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (facet, value)
);
"""


@dataclass(frozen=True)
class FileState:
    path: str
    image_id: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ImageRecord:
    """One indexed image content and the files that show it (sorted, first is canonical)."""

    id: int
    paths: tuple[str, ...]
    width: int
    height: int
    format: str
    alive: bool

    @property
    def path(self) -> str:
        return self.paths[0] if self.paths else ""


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str
    message: str


@dataclass(frozen=True)
class NewImage:
    """An embedded image ready to commit: its id is the next row of every space."""

    content_hash: str
    width: int
    height: int
    format: str
    #: What the header said; ``None``: not read (no ``image_meta`` row is written).
    meta: HeaderMeta | None = None


class _LockedConnection:
    """One SQLite connection shared by the server's threads, one statement at a time.

    ``execute`` returns all rows at once, so no cursor outlives the lock."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.lock = threading.RLock()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> _Rows:
        with self.lock:
            return _Rows(self.connection.execute(sql, args).fetchall())

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.lock:
            self.connection.executemany(sql, rows)

    def executescript(self, sql: str) -> None:
        with self.lock:
            self.connection.executescript(sql)

    def close(self) -> None:
        with self.lock:
            self.connection.close()


class _Rows(list[tuple[Any, ...]]):
    def fetchone(self) -> Any:
        return self[0] if self else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self)


class Catalogue:
    """SQLite catalogue of one index. Not shared between threads: open one per thread."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        #: Transactions this connection committed (see :meth:`change_mark`).
        self._commits = 0
        self._db = _LockedConnection(
            sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        )
        try:
            self._db.execute("PRAGMA busy_timeout = 10000")
            if create:
                self._db.execute("PRAGMA journal_mode = WAL")
                # NORMAL is durable in WAL mode across process crashes (kill -9); only a
                # power cut can lose the last transactions, never corrupt the file.
                self._db.execute("PRAGMA synchronous = NORMAL")
                self._create_schema()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise catalogue_error(path, error) from error

    def _create_schema(self) -> None:
        """Every table, or none: one transaction, so that a full disk or a crash cannot
        leave a catalogue without tables, and a reader never sees half a schema. The
        statements are idempotent, so a catalogue cut short earlier is completed."""
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            # An older catalogue now has every table of this version; its images' headers
            # are still to be read (``spyglass index`` does it).
            self._db.execute(
                "DELETE FROM meta WHERE key = ? AND (SELECT CAST(value AS INTEGER) FROM meta "
                "WHERE key = 'schema_version') < 2",
                (HEADERS_BACKFILLED,),
            )
            # An empty catalogue's counts are the empty table; an older one with images
            # has them counted in full by its writer (see store/facet_counts.py).
            self._db.execute(
                "INSERT OR IGNORE INTO meta SELECT ?, CASE WHEN EXISTS "
                "(SELECT 1 FROM images) THEN '0' ELSE '1' END",
                (FACET_COUNTS_KEPT,),
            )
            # Rows an older version wrote (say, header metadata) were not counted.
            self._db.execute(
                "UPDATE meta SET value = '0' WHERE key = ? AND EXISTS (SELECT 1 FROM images) "
                "AND (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema_version') < 3",
                (FACET_COUNTS_KEPT,),
            )
            self._db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version' "
                "AND CAST(value AS INTEGER) < ?",
                (str(SCHEMA_VERSION), SCHEMA_VERSION),
            )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction; a failure of SQLite or the disk inside it (a full
        disk at COMMIT) rolls it back and becomes one typed line."""
        with self._db.lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self._db.execute("COMMIT")
                    self._commits += 1
                except BaseException:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as error:
                raise catalogue_error(self.path, error) from error

    def change_mark(self) -> tuple[int, int]:
        """Changes whenever what the catalogue holds may have changed: SQLite's
        ``data_version`` (another connection committed: ``spyglass index`` beside a
        server) and this connection's own commits. O(1): lets a reader keep what it
        counted (the filter panel's facets) until then."""
        with self._db.lock:
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            return version, self._commits

    # -- meta ----------------------------------------------------------------------

    def encoder_info(self) -> EncoderInfo | None:
        """The encoder that made the vectors; ``None`` for an index still being created
        (no tables yet, or no encoder recorded yet)."""
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'encoder'").fetchone()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return None
            raise catalogue_error(self.path, error) from error
        except sqlite3.DatabaseError as error:
            raise catalogue_error(self.path, error) from error
        return EncoderInfo.from_json(json.loads(row[0])) if row else None

    def set_encoder_info(self, info: EncoderInfo) -> None:
        """Record the encoder and its spaces in one transaction: a reader that sees the
        encoder sees its spaces too."""
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('encoder', ?)", (json.dumps(info.to_json()),)
            )
            for space, dims in info.spaces.items():
                self._db.execute(
                    "INSERT OR IGNORE INTO spaces (name, dims) VALUES (?, ?)", (space, dims)
                )

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def space_rows(self) -> dict[str, tuple[int, int]]:
        """space -> (dims, committed rows)."""
        rows = self._db.execute("SELECT name, dims, rows FROM spaces").fetchall()
        return {name: (dims, count) for name, dims, count in rows}

    def ensure_space(self, space: str, dims: int) -> None:
        self._db.execute("INSERT OR IGNORE INTO spaces (name, dims) VALUES (?, ?)", (space, dims))

    def set_space_rows(self, space: str, rows: int) -> None:
        self._db.execute("UPDATE spaces SET rows = ? WHERE name = ?", (rows, space))

    # -- roots ---------------------------------------------------------------------

    def roots(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT path FROM roots ORDER BY path")]

    def add_roots(self, roots: Iterable[str]) -> None:
        now = time.time()
        self._db.executemany("INSERT OR IGNORE INTO roots VALUES (?, ?)", [(r, now) for r in roots])

    # -- files and images ------------------------------------------------------------

    def files_under(self, root: str) -> dict[str, FileState]:
        """Indexed files whose path lies under the folder ``root`` (absolute)."""
        prefix = root.rstrip("/") + "/"
        # '/' + 1 == '0': every path starting with prefix sorts in [prefix, prefix[:-1]+'0').
        rows = self._db.execute(
            "SELECT path, image_id, size, mtime_ns FROM files WHERE path >= ? AND path < ?",
            (prefix, prefix[:-1] + "0"),
        )
        return {p: FileState(p, i, s, m) for p, i, s, m in rows}

    def file(self, path: str) -> FileState | None:
        row = self._db.execute(
            "SELECT path, image_id, size, mtime_ns FROM files WHERE path = ?", (path,)
        ).fetchone()
        return FileState(*row) if row else None

    def images_by_hash(self, hashes: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for h, i in self._db.execute(
                f"SELECT content_hash, id FROM images WHERE content_hash IN ({marks})", chunk
            ):
                found[h] = i
        return found

    def next_image_id(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM images").fetchone()
        return int(row[0])

    def insert_images(self, first_id: int, images: Sequence[NewImage]) -> None:
        now = time.time()
        self._db.executemany(
            "INSERT INTO images (id, content_hash, width, height, format, alive, added_at) "
            "VALUES (?, ?, ?, ?, ?, 1, ?)",
            [
                (first_id + n, im.content_hash, im.width, im.height, im.format, now)
                for n, im in enumerate(images)
            ],
        )
        self.insert_header_meta(
            (first_id + n, im.meta) for n, im in enumerate(images) if im.meta is not None
        )

    def insert_header_meta(self, entries: Iterable[tuple[int, HeaderMeta]]) -> None:
        """Record what each image's header said (an empty :class:`HeaderMeta` too: the
        row says the header was read)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO image_meta (image_id, taken_at, make, model, latitude, "
            "longitude, orientation) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (i, m.taken_at, m.make, m.model, m.latitude, m.longitude, m.orientation)
                for i, m in entries
            ],
        )

    def has_table(self, name: str) -> bool:
        """Whether the catalogue has this table (a version 1 catalogue opened only for
        reading has no ``image_meta``)."""
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def header_meta_counts(self) -> dict[str, int]:
        """Live images whose header was read, and those with an EXIF capture time, a
        camera and a GPS position (all 0 for a catalogue without ``image_meta``)."""
        if not self.has_table("image_meta"):
            return {"read": 0, "capture_time": 0, "camera": 0, "gps": 0}
        row = self._db.execute(
            "SELECT COUNT(*), COUNT(m.taken_at), COUNT(COALESCE(m.make, m.model)), "
            "COUNT(m.latitude) FROM image_meta m JOIN images i ON i.id = m.image_id "
            "WHERE i.alive = 1"
        ).fetchone()
        return dict(zip(("read", "capture_time", "camera", "gps"), map(int, row), strict=True))

    def images_without_header_meta(self, limit: int = 1000) -> list[tuple[int, str]]:
        """(image id, one of its paths) of live images whose header was never read:
        those indexed before schema version 2."""
        return [
            (int(i), str(p))
            for i, p in self._db.execute(
                "SELECT images.id, MIN(files.path) FROM images JOIN files "
                "ON files.image_id = images.id WHERE images.alive = 1 AND NOT EXISTS "
                "(SELECT 1 FROM image_meta WHERE image_meta.image_id = images.id) "
                "GROUP BY images.id ORDER BY images.id LIMIT ?",
                (limit,),
            )
        ]

    def upsert_files(self, files: Iterable[FileState]) -> None:
        now = time.time()
        rows = [(f.path, f.image_id, f.size, f.mtime_ns, now) for f in files]
        self._db.executemany(
            "INSERT OR REPLACE INTO files (path, image_id, size, mtime_ns, indexed_at) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        self._db.executemany("DELETE FROM skipped WHERE path = ?", [(r[0],) for r in rows])

    def delete_files(self, paths: Iterable[str]) -> None:
        self._db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])

    def image_ids_of_paths(self, paths: Iterable[str]) -> set[int]:
        """The images these paths show now (paths not in the catalogue are left out)."""
        found: set[int] = set()
        wanted = list(paths)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self._db.execute(
                    f"SELECT image_id FROM files WHERE path IN ({marks})", chunk
                )
            )
        return found

    def refresh_alive(self, candidates: Iterable[int] | None = None) -> tuple[set[int], set[int]]:
        """Recompute which images have a file left. Returns (died, revived) image ids.

        ``candidates``: the images whose files changed (the only ones whose state can
        have changed), so that a commit costs what it changed, not what the index holds;
        ``None`` checks every image."""
        if candidates is None:
            rows = self._db.execute(
                "SELECT id, alive, EXISTS (SELECT 1 FROM files WHERE files.image_id = images.id) "
                "FROM images"
            )
        else:
            wanted = sorted({int(i) for i in candidates})
            rows = _Rows()
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows.extend(
                    self._db.execute(
                        "SELECT id, alive, EXISTS (SELECT 1 FROM files "
                        f"WHERE files.image_id = images.id) FROM images WHERE id IN ({marks})",
                        chunk,
                    )
                )
        died = {image_id for image_id, alive, has_file in rows if alive and not has_file}
        revived = {image_id for image_id, alive, has_file in rows if not alive and has_file}
        self._db.executemany("UPDATE images SET alive = 0 WHERE id = ?", [(i,) for i in died])
        self._db.executemany("UPDATE images SET alive = 1 WHERE id = ?", [(i,) for i in revived])
        return died, revived

    def dead_image_ids(self) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT id FROM images WHERE alive = 0")]

    def images(self, ids: Sequence[int]) -> dict[int, ImageRecord]:
        """Records of these image ids (unknown ids are left out)."""
        records: dict[int, ImageRecord] = {}
        paths: dict[int, list[str]] = {}
        for start in range(0, len(ids), 500):
            chunk = [int(i) for i in ids[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            for image_id, path in self._db.execute(
                f"SELECT image_id, path FROM files WHERE image_id IN ({marks})", chunk
            ):
                paths.setdefault(image_id, []).append(path)
            for image_id, width, height, fmt, alive in self._db.execute(
                f"SELECT id, width, height, format, alive FROM images WHERE id IN ({marks})", chunk
            ):
                records[image_id] = ImageRecord(
                    id=image_id,
                    paths=tuple(sorted(paths.get(image_id, []))),
                    width=width,
                    height=height,
                    format=fmt,
                    alive=bool(alive),
                )
        return records

    def iter_images(self, alive_only: bool = True) -> Iterator[ImageRecord]:
        """Every image, in id order (pages through SQLite, never loads all at once)."""
        last = -1
        while True:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM images WHERE id > ? "
                    + ("AND alive = 1 " if alive_only else "")
                    + "ORDER BY id LIMIT 1000",
                    (last,),
                )
            ]
            if not ids:
                return
            records = self.images(ids)
            for i in ids:
                yield records[i]
            last = ids[-1]

    def image_ids_under(self, root: str) -> set[int]:
        """The images with a file under the folder ``root`` (absolute)."""
        prefix = root.rstrip("/") + "/"
        rows = self._db.execute(
            "SELECT DISTINCT image_id FROM files WHERE path >= ? AND path < ?",
            (prefix, prefix[:-1] + "0"),
        )
        return {int(r[0]) for r in rows}

    # -- stored facet counts (see store/facet_counts.py) -------------------------------

    def facet_count_rows(self) -> list[tuple[str, str, int]]:
        """(facet, value, images) as stored; O(facet values)."""
        return [
            (str(f), str(v), int(n))
            for f, v, n in self._db.execute("SELECT facet, value, n FROM facet_counts")
        ]

    def add_to_facet_counts(self, deltas: Iterable[tuple[str, str, int]]) -> None:
        """Add (facet, value, change) to the stored counts; a value left at 0 goes."""
        changes = [(f, v, int(d)) for f, v, d in deltas if d]
        self._db.executemany(
            "INSERT INTO facet_counts VALUES (?, ?, ?) "
            "ON CONFLICT (facet, value) DO UPDATE SET n = n + excluded.n",
            changes,
        )
        self._db.executemany(
            "DELETE FROM facet_counts WHERE facet = ? AND value = ? AND n = 0",
            [(f, v) for f, v, _ in changes],
        )

    def replace_facet_counts(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Store these (facet, value, images) as the counts, and mark them kept."""
        self._db.execute("DELETE FROM facet_counts")
        self._db.executemany("INSERT INTO facet_counts VALUES (?, ?, ?)", [r for r in rows if r[2]])
        self.set_meta(FACET_COUNTS_KEPT, "1")

    # -- skipped ---------------------------------------------------------------------

    def record_skipped(self, entries: Iterable[tuple[SkippedFile, int | None, int | None]]) -> None:
        now = time.time()
        self._db.executemany(
            "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?, ?, ?)",
            [(s.path, s.reason, s.message, size, mtime, now) for s, size, mtime in entries],
        )

    def skipped_under(self, root: str) -> dict[str, tuple[int | None, int | None]]:
        prefix = root.rstrip("/") + "/"
        rows = self._db.execute(
            "SELECT path, size, mtime_ns FROM skipped WHERE path >= ? AND path < ?",
            (prefix, prefix[:-1] + "0"),
        )
        return {p: (s, m) for p, s, m in rows}

    def forget_skipped(self, paths: Iterable[str]) -> None:
        self._db.executemany("DELETE FROM skipped WHERE path = ?", [(p,) for p in paths])

    def skipped(self, limit: int | None = None) -> list[SkippedFile]:
        sql = "SELECT path, reason, message FROM skipped ORDER BY path"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [SkippedFile(*r) for r in self._db.execute(sql)]

    # -- counts ----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        def one(sql: str) -> int:
            return int(self._db.execute(sql).fetchone()[0])

        return {
            "files": one("SELECT COUNT(*) FROM files"),
            "images": one("SELECT COUNT(*) FROM images WHERE alive = 1"),
            "embedded": one("SELECT COUNT(*) FROM images"),
            "skipped": one("SELECT COUNT(*) FROM skipped"),
        }

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only escape hatch for reports and tests."""
        return list(self._db.execute(sql, args))
