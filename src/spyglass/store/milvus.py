"""A vector store in Milvus: a server or cluster (``milvus://HOST:PORT/COLLECTION``), or
Milvus Lite, the embedded build of the same engine (``milvus:///path/file.db``).

One space is one collection ``<prefix>_<space>`` of rows ``(row INT64 primary key,
owner INT64, vector FLOAT_VECTOR)``, searched by inner product. ``row`` is the row's
position in the space (0, 1, 2, ... in the order rows were added), so the primary key
is deterministic: the catalogue records how many rows are committed, every search and
fetch reads ``row < committed`` only (a writer's rows not yet committed stay unseen),
and a writer that opens the space deletes ``row >= committed`` first, which is how rows
written before a crash but never recorded by the catalogue disappear without a
duplicate. Vectors are stored rounded to float16, as the embedded store keeps them, so
that both stores return the same scores.

The index type follows the size: ``FLAT`` (exact) below
``VectorSearchSettings.approximate_from_rows`` rows, ``HNSW`` from there on (a writer
switches when a flush crosses the threshold). Milvus Lite 3.2 builds ``FLAT`` (alias
``BRUTE_FORCE``), ``HNSW``, ``HNSW_SQ``, ``IVF_FLAT``, ``IVF_SQ8`` and ``AUTOINDEX`` (its
HNSW); it refuses ``IVF_PQ``, ``DISKANN`` and ``SCANN``, which a server builds. HNSW is
the type both build.

Hidden owners are held in memory (the catalogue says who is dead, as for the embedded
store) and excluded inside the search with an ``owner not in [...]`` expression.

Each row also carries its image's filter fields (folders, date, format, size, camera,
GPS: :mod:`spyglass.store.milvus_filters`), so that metadata filters run inside the
search as one Milvus expression (:meth:`MilvusVectorStore.search` with ``where=``)
instead of a list of the ids they keep. A collection made before the fields existed
has none: its filters go on as id lists (``owner in [...]``), exact but long, until the
index is copied or built again.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from spyglass.errors import (
    IndexCorrupt,
    IndexLocked,
    IndexProblem,
    MissingDependency,
    VectorStoreUnavailable,
)
from spyglass.settings import VectorSearchSettings
from spyglass.store import milvus_filters
from spyglass.store.base import FilterFields, Neighbours, empty_neighbours, selected
from spyglass.store.local import SearchMethod
from spyglass.store.memory import _checked

if TYPE_CHECKING:
    from spyglass.query.filters import Filters

SCHEME = "milvus://"
#: Port of a Milvus server when the URL names none.
DEFAULT_PORT = 19530
#: Collection name prefix when the URL names none (always, for Milvus Lite).
DEFAULT_PREFIX = "spyglass"
#: Collection property naming the catalogue that owns the collection (see
#: :attr:`MilvusLocation.owner`): two catalogues never write one collection.
OWNER_PROPERTY = "spyglass.catalogue"
#: Collection property set once a space holds several rows per owner (crops): its
#: searches then group rows by owner inside Milvus.
SEVERAL_PROPERTY = "spyglass.several_rows_per_owner"
#: Collection property listing the filter kinds some row's field holds cut (a value
#: Milvus cannot hold whole, or rows written without fields): comma-separated kinds of
#: :func:`spyglass.store.milvus_filters.row_values`. Those filters go back to id lists.
CUT_PROPERTY = "spyglass.filter_fields_cut"
#: Catalogue meta key holding that owner id.
OWNER_META = "milvus_owner"
#: Rows per insert call (512-d float32: 10 MB, well under gRPC's 64 MB message limit).
_INSERT_ROWS = 5000
#: Owners per ``owner in [...]`` expression when fetching.
_FETCH_OWNERS = 1000
#: Rows per page when listing owners.
_LIST_PAGE = 10_000
#: The most results one Milvus search may return (``topk``, a server limit).
MAX_LIMIT = 16384
#: HNSW: graph degree and build effort (Milvus's usual values for 512-d embeddings).
HNSW_BUILD = {"M": 16, "efConstruction": 200}
#: HNSW: candidates explored per query, at least the results asked for.
HNSW_EF = 128


@dataclass(frozen=True)
class MilvusLocation:
    """Where an index's vectors live in Milvus, and where its catalogue lives.

    ``uri`` is what ``pymilvus.MilvusClient`` is given: a local ``.db`` path (Milvus
    Lite) or ``http://HOST:PORT``. ``catalogue`` is the folder holding the SQLite
    catalogue and the write lock.
    """

    url: str
    uri: str
    prefix: str
    catalogue: Path
    token: str = ""
    #: Shards of a collection Spyglass creates (``?shards=N``; ``None``: Milvus's default).
    shards: int | None = None
    #: In-memory replicas a reader loads (``?replicas=N``; ``None``: Milvus's default).
    replicas: int | None = None

    @property
    def lite(self) -> bool:
        return not self.uri.startswith("http")

    def collection(self, space: str) -> str:
        """Collection of one space: Milvus names allow letters, digits and underscores."""
        safe = "".join(c if c.isalnum() or c == "_" else "_" for c in space)
        return f"{self.prefix}_{safe}"

    def describe(self) -> str:
        """The URL as a person gave it, without a password."""
        return self.url if not self.token else self.url.replace(self.token.split(":")[-1], "***")


def is_milvus_url(text: str | Path) -> bool:
    return isinstance(text, str) and text.startswith(SCHEME)


def parse_milvus_url(text: str, data_home: Path) -> MilvusLocation:
    """``milvus:///path/file.db`` (Milvus Lite) or ``milvus://[USER:PASSWORD@]HOST[:PORT]
    [/COLLECTION]`` (a server), each with an optional ``?catalogue=FOLDER``.

    The catalogue's default folder: next to a Milvus Lite file (``file.db.catalogue``),
    and for a server ``data_home/milvus/HOST-PORT/COLLECTION`` (``data_home`` is the
    per-user data folder, ``~/.local/share/spyglass`` on Linux). Raises
    :class:`IndexProblem` for a URL that says neither."""
    parts = urlsplit(text)
    query = parse_qs(parts.query)
    chosen = query.get("catalogue", [None])[-1]
    if not parts.netloc:
        if not parts.path.endswith(".db"):
            raise IndexProblem(
                f"--index {text}: a Milvus Lite URL names a .db file "
                "(milvus:///path/file.db); a server URL names its host (milvus://HOST:PORT/NAME)"
            )
        database = Path(unquote(parts.path)).expanduser().absolute()
        catalogue = Path(chosen) if chosen else database.with_name(database.name + ".catalogue")
        return MilvusLocation(
            url=text, uri=str(database), prefix=DEFAULT_PREFIX, catalogue=catalogue.absolute()
        )
    host = parts.hostname or "localhost"
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as error:
        raise IndexProblem(f"--index {text}: {error}") from error
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if not prefix.replace("_", "a").isalnum() or prefix[0].isdigit():
        raise IndexProblem(
            f"--index {text}: the collection name {prefix!r} may hold letters, digits and "
            "underscores only, and must not start with a digit"
        )
    token = f"{unquote(parts.username)}:{unquote(parts.password or '')}" if parts.username else ""
    counts = {}
    for name in ("shards", "replicas"):
        given = query.get(name, [None])[-1]
        if given is not None:
            if not given.isdigit() or int(given) < 1:
                raise IndexProblem(f"--index {text}: {name} must be a whole number from 1")
            counts[name] = int(given)
    catalogue = Path(chosen) if chosen else data_home / "milvus" / f"{host}-{port}" / prefix
    return MilvusLocation(
        url=text,
        uri=f"http://{host}:{port}",
        prefix=prefix,
        catalogue=catalogue.expanduser().absolute(),
        token=token,
        **counts,
    )


def new_owner_id() -> str:
    return uuid.uuid4().hex


def _pymilvus() -> Any:
    # gRPC's C core prints its own log lines on stderr (during a long index build in
    # Milvus Lite: "GOAWAY ... too_many_pings" every few minutes, harmless); a person
    # running a command should see Spyglass's one-line errors only. Read when gRPC
    # starts, so set before pymilvus imports it; a value already set is kept.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        import pymilvus
    except ImportError as error:
        raise MissingDependency(
            'the Milvus store needs pymilvus and milvus-lite: pip install "spyglass[milvus]"'
        ) from error
    # pymilvus logs every failed call with its traceback on stderr; the store raises a
    # typed one-line error instead, so those logs would only repeat it noisily.
    for name in ("pymilvus", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return pymilvus


@contextmanager
def milvus_errors(location: MilvusLocation, doing: str) -> Iterator[None]:
    """Milvus's exceptions as one-line typed errors naming the URL."""
    pymilvus = _pymilvus()
    try:
        yield
    except pymilvus.exceptions.MilvusException as error:
        message = getattr(error, "message", None) or str(error)
        raise VectorStoreUnavailable(
            f"Milvus at {location.describe()} failed while {doing}: {message}"
        ) from error


def connect(location: MilvusLocation) -> Any:
    """A ``MilvusClient`` for ``location``. For Milvus Lite the file is served by a
    thread of this process, shared by every client of the same file; Milvus Lite lets
    one process at a time open a file."""
    pymilvus = _pymilvus()
    if location.lite:
        Path(location.uri).parent.mkdir(parents=True, exist_ok=True)
    # pymilvus pings every 10 s; Milvus Lite's gRPC server, which runs in this very
    # process, allows one ping per 5 minutes and drops the connection on the third
    # (GOAWAY "too_many_pings"), and pymilvus then sends the call again: a 100k-row HNSW
    # build was asked twice and failed with "index already exists".
    options = {"grpc_options": {"grpc.keepalive_time_ms": 600_000}} if location.lite else {}
    try:
        return pymilvus.MilvusClient(uri=location.uri, token=location.token, timeout=30, **options)
    except pymilvus.exceptions.MilvusException as error:
        message = getattr(error, "message", None) or str(error)
        if location.lite:
            raise IndexLocked(
                f"Milvus Lite file {location.uri} cannot be opened ({message}): Milvus Lite "
                "serves one process at a time, and another may have it open (an indexing "
                "run, a server); wait for it, or use a Milvus server"
            ) from error
        raise VectorStoreUnavailable(
            f"cannot reach Milvus at {location.describe()}: {message}"
        ) from error


def release_lite(location: MilvusLocation) -> None:
    """Stop this process's Milvus Lite server for ``location``'s file, waiting for its
    background work (segment compaction, index builds) to finish. Python does this at
    exit; a process that ends without running exit handlers (a ``multiprocessing``
    worker, which its pool terminates) must call it, or a data file being compacted
    is left half written."""
    if location.lite:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(location.uri)


class MilvusVectorStore:
    """A :class:`~spyglass.store.base.VectorStore` over one Milvus collection.

    ``committed_rows`` is what the catalogue recorded. A ``writer`` creates the
    collection if missing (marked with ``owner``, the catalogue's id) and deletes rows
    beyond ``committed_rows``; a reader never changes the collection.
    """

    def __init__(
        self,
        location: MilvusLocation,
        space: str,
        dims: int,
        committed_rows: int,
        *,
        writer: bool = False,
        owner: str | None = None,
        settings: VectorSearchSettings | None = None,
    ) -> None:
        self.dims = dims
        self.space = space
        self.location = location
        self.collection = location.collection(space)
        self.settings = settings or VectorSearchSettings()
        self._writer = writer
        self._client = connect(location)
        self._rows = committed_rows
        self._pending_owners: list[np.ndarray] = []
        self._pending_vectors: list[np.ndarray] = []
        self._hidden: set[int] = set()
        #: Owner of each row read so far, in row order (see :meth:`owners`).
        self._owners_cache = np.zeros(0, np.int64)
        self._lock = threading.RLock()
        self._index_type: str | None = None
        self._several = False
        #: Whether the rows carry filter fields (collections made before them do not).
        self._fields = False
        #: Filter kinds whose fields some row holds cut (see ``CUT_PROPERTY``).
        self._cut: frozenset[str] = frozenset()
        with milvus_errors(location, f"opening {self.collection}"):
            exists = self._client.has_collection(self.collection)
            if writer:
                if not exists:
                    self._create(owner)
                else:
                    self._check(owner)
                    self._recover(committed_rows)
            elif exists:
                self._check(None)
            elif committed_rows:
                raise IndexCorrupt(
                    f"the catalogue records {committed_rows:,} rows of {space} but Milvus at "
                    f"{location.describe()} has no collection {self.collection}; the index "
                    "is damaged: re-create it with a new --index"
                )
            if exists or writer:
                self._index_type = self._current_index_type()
                self._load()
        if writer:
            self._maintain_index()

    # -- the collection ------------------------------------------------------------------

    def _create(self, owner: str | None) -> None:
        pymilvus = _pymilvus()
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("owner", pymilvus.DataType.INT64)
        schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=self.dims)
        milvus_filters.add_fields(schema, pymilvus.DataType)
        self._fields = True
        self._client.create_collection(
            self.collection,
            schema=schema,
            index_params=self._index_params(self._wanted_index_type(self._rows)),
            # Every read sees every acknowledged write: the catalogue relies on it.
            consistency_level="Strong",
            properties={OWNER_PROPERTY: owner} if owner else None,
            **({"num_shards": self.location.shards} if self.location.shards else {}),
        )

    def _load(self) -> None:
        replicas = {"replica_number": self.location.replicas} if self.location.replicas else {}
        self._client.load_collection(self.collection, **replicas)

    def _check(self, owner: str | None) -> None:
        """Refuse a collection of other dimensions, or one another catalogue writes."""
        described = self._client.describe_collection(self.collection)
        vector = next((f for f in described["fields"] if f["name"] == "vector"), None)
        dims = None if vector is None else int(vector["params"].get("dim", 0))
        if dims != self.dims:
            raise IndexProblem(
                f"Milvus collection {self.collection} at {self.location.describe()} holds "
                f"{dims}-d vectors, not {self.dims}-d ones: it belongs to another index; "
                "choose another collection name"
            )
        properties = described.get("properties") or {}
        self._several = properties.get(SEVERAL_PROPERTY) == "1"
        names = {f["name"] for f in described["fields"]}
        self._fields = all(name in names for name in milvus_filters.FIELD_NAMES)
        self._cut = frozenset(k for k in properties.get(CUT_PROPERTY, "").split(",") if k)
        recorded = properties.get(OWNER_PROPERTY)
        if owner is not None and recorded != owner:
            raise IndexLocked(
                f"Milvus collection {self.collection} at {self.location.describe()} is "
                f"written by another catalogue than {self.location.catalogue} (two writers "
                "would overwrite each other's rows): use that catalogue (?catalogue=FOLDER), "
                "another collection name, or drop the collection"
            )

    def stored_rows(self) -> int:
        """Rows in the collection, committed or not (0 without a collection)."""
        with milvus_errors(self.location, f"counting {self.collection}"):
            if not self._client.has_collection(self.collection):
                return 0
            self._load()
            counted = self._client.query(
                self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong"
            )
        return int(counted[0]["count(*)"]) if counted else 0

    def _recover(self, committed_rows: int) -> None:
        """Delete rows a crash left beyond the committed ones; refuse fewer."""
        self._load()
        self._client.delete(self.collection, filter=f"row >= {committed_rows}")
        stored = self.stored_rows()
        if stored < committed_rows:
            raise IndexCorrupt(
                f"Milvus collection {self.collection} holds {stored:,} rows but the catalogue "
                f"committed {committed_rows:,}; the index is damaged: re-create it with a new "
                "--index"
            )

    def _wanted_index_type(self, rows: int) -> str:
        approximate = self.settings.kind == "approximate" or (
            self.settings.kind == "auto" and self.settings.wants_approximate(rows, self.dims)
        )
        return "HNSW" if approximate and rows > 0 else "FLAT"

    def _index_params(self, index_type: str) -> Any:
        params = self._client.prepare_index_params()
        params.add_index(
            field_name="vector",
            index_type=index_type,
            metric_type="IP",
            params=HNSW_BUILD if index_type == "HNSW" else {},
        )
        return params

    def _current_index_type(self) -> str | None:
        if "vector" not in self._client.list_indexes(self.collection):
            return None
        return str(self._client.describe_index(self.collection, "vector")["index_type"])

    def _maintain_index(self) -> None:
        """A writer builds the index type the rows call for (FLAT -> HNSW past the
        threshold); readers use what the collection has."""
        wanted = self._wanted_index_type(self._rows)
        if wanted == self._index_type:
            return
        with milvus_errors(self.location, f"building a {wanted} index on {self.collection}"):
            self._client.release_collection(self.collection)
            if self._index_type is not None:
                self._client.drop_index(self.collection, "vector")
            try:
                self._client.create_index(self.collection, self._index_params(wanted))
            except _pymilvus().exceptions.MilvusException:
                # A call sent again after a dropped connection finds its first attempt's
                # index; anything else is a failure.
                if self._current_index_type() != wanted:
                    raise
            self._load()
        self._index_type = wanted

    def close(self) -> None:
        with milvus_errors(self.location, "closing"):
            self._client.close()

    # -- writing ---------------------------------------------------------------------

    def __len__(self) -> int:
        return self._rows

    def add(self, owners: np.ndarray, vectors: np.ndarray) -> None:
        owners, vectors = _checked(owners, vectors, self.dims)
        with self._lock:
            self._pending_owners.append(owners)
            # The embedded store keeps float16: the same rounding gives the same scores.
            self._pending_vectors.append(vectors.astype(np.float16).astype(np.float32))

    def flush(self) -> int:
        """Insert the added rows with primary keys continuing the committed ones. A
        server has them durable once it acknowledges the insert (its write-ahead log);
        Milvus Lite is asked to flush them to its files. Rows flushed so carry no filter
        fields: filters on this space then go back to id lists (see
        :meth:`flush_with_fields`)."""
        return self.flush_with_fields({})

    def flush_with_fields(
        self, fields: Mapping[int, FilterFields], rewrite: Iterable[int] = ()
    ) -> int:
        """:meth:`flush`, each added row carrying its owner's filter fields from
        ``fields``; then the stored rows of the ``rewrite`` owners take theirs from
        ``fields`` (Milvus upserts whole rows: their vectors are read back first)."""
        with self._lock:
            if self._pending_owners:
                self._insert_pending(fields)
            again = sorted({int(o) for o in rewrite if int(o) in fields})
            if again and self._fields:
                self._rewrite_fields(again, fields)
            return self._rows

    def _insert_pending(self, fields: Mapping[int, FilterFields]) -> None:
        owners = np.concatenate(self._pending_owners)
        vectors = np.concatenate(self._pending_vectors)
        self._pending_owners.clear()
        self._pending_vectors.clear()
        with milvus_errors(self.location, f"inserting into {self.collection}"):
            if not self._several and np.any(np.diff(owners) <= 0):
                self._client.alter_collection_properties(
                    self.collection, properties={SEVERAL_PROPERTY: "1"}
                )
                self._several = True
            values = self._field_values(owners.tolist(), fields)
            for start in range(0, len(owners), _INSERT_ROWS):
                stop = min(start + _INSERT_ROWS, len(owners))
                self._client.insert(
                    self.collection,
                    [
                        {"row": self._rows + i, "owner": owner, "vector": vector}
                        | values.get(owner, {})
                        for i, (owner, vector) in enumerate(
                            zip(owners[start:stop].tolist(), vectors[start:stop], strict=True),
                            start=start,
                        )
                    ],
                )
            if self.location.lite:
                self._client.flush(self.collection)
        self._rows += len(owners)
        if self._writer:
            self._maintain_index()

    def _field_values(
        self, owners: list[int], fields: Mapping[int, FilterFields]
    ) -> dict[int, dict[str, Any]]:
        """Owner -> its rows' filter field values (none for a collection without the
        fields). Marks the collection first where a value is cut (``CUT_PROPERTY``),
        so that no reader trusts a cut field."""
        if not self._fields:
            return {}
        values: dict[int, dict[str, Any]] = {}
        cut: set[str] = set()
        for owner in set(owners):
            values[owner], cut_here = milvus_filters.row_values(fields.get(owner))
            cut |= cut_here
        if not cut <= self._cut:
            self._cut = self._cut | cut
            self._client.alter_collection_properties(
                self.collection, properties={CUT_PROPERTY: ",".join(sorted(self._cut))}
            )
        return values

    def _rewrite_fields(self, owners: list[int], fields: Mapping[int, FilterFields]) -> None:
        with milvus_errors(self.location, f"updating filter fields in {self.collection}"):
            values = self._field_values(owners, fields)
            for start in range(0, len(owners), _FETCH_OWNERS):
                chunk = ", ".join(str(o) for o in owners[start : start + _FETCH_OWNERS])
                stored = self._client.query(
                    self.collection,
                    filter=f"row < {self._rows} and owner in [{chunk}]",
                    output_fields=["row", "owner", "vector"],
                    consistency_level="Strong",
                )
                if stored:
                    self._client.upsert(
                        self.collection,
                        [
                            {
                                "row": int(e["row"]),
                                "owner": int(e["owner"]),
                                "vector": np.asarray(e["vector"], np.float32),
                            }
                            | values[int(e["owner"])]
                            for e in stored
                        ],
                    )
            if self.location.lite:
                self._client.flush(self.collection)

    def filters_inside(self, filters: Filters) -> bool:
        """Whether :meth:`search` applies ``filters`` itself, as one expression: the
        rows carry the fields, none that ``filters`` read is cut, and the filters can
        be written exactly (:func:`~spyglass.store.milvus_filters.expression`)."""
        with self._lock:
            if not self._fields or self._cut & milvus_filters.kinds(filters):
                return False
        return milvus_filters.expression(filters) is not None

    def reload(self, committed_rows: int) -> None:
        """Pick up rows another process committed since this store was opened."""
        with self._lock:
            if not self._pending_owners:
                if committed_rows != self._rows and not self._several:
                    with milvus_errors(self.location, f"opening {self.collection}"):
                        if self._client.has_collection(self.collection):
                            self._check(None)
                            self._index_type = self._current_index_type()
                            self._load()
                elif committed_rows != self._rows:
                    # The writer may have marked a filter field cut since: re-read.
                    with milvus_errors(self.location, f"opening {self.collection}"):
                        if self._client.has_collection(self.collection):
                            self._check(None)
                self._rows = committed_rows

    def set_hidden(self, owners: Iterable[int], hidden: bool = True) -> None:
        ids = {int(o) for o in owners}
        with self._lock:
            if hidden:
                self._hidden |= ids
            else:
                self._hidden -= ids

    # -- reading ---------------------------------------------------------------------

    def _visible(self) -> str:
        """The expression selecting committed rows of visible owners."""
        with self._lock:
            expression = f"row < {self._rows}"
            if self._hidden:
                hidden = ", ".join(str(o) for o in sorted(self._hidden))
                expression += f" and owner not in [{hidden}]"
            return expression

    def search(
        self,
        queries: np.ndarray,
        k: int,
        among: np.ndarray | None = None,
        where: Filters | None = None,
    ) -> Neighbours:
        """The k best visible owners per query, each scored by its best row, ties by
        owner id. Milvus is asked for more than k results, and again for more while
        the last one it returned scores as high as the k-th owner's (an owner tied with
        the k-th, or one whose best row was not returned, may be further down its list,
        in no particular order), until it has no more. In spaces with several rows per
        owner, Milvus groups rows by owner inside the search (``group_by_field``); in the
        others that costs time for nothing (4x at k = 100 in Milvus Lite).

        A selection (``among``) joins the filter expression as ``owner in [...]``:
        Milvus applies it as a bitset before the vector search (FLAT and HNSW alike),
        so a narrow selection still returns k owners. The expression grows with the
        selection (about 8 bytes an id), which is what bounds its size.

        Filters (``where``, when :meth:`filters_inside` says so) join it instead as one
        expression on the rows' filter fields, whatever they keep; ``among`` is then
        not needed. Raises ``ValueError`` for filters the store cannot apply given
        without ``among``."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dims:
            raise ValueError(f"queries have {queries.shape[1]} dims, the store {self.dims}")
        result = empty_neighbours(len(queries), k)
        if self._rows == 0 or k <= 0 or self._index_type is None:
            return result
        expression = self._visible()
        if where is not None and not where.empty and self.filters_inside(where):
            expression += f" and ({milvus_filters.expression(where)})"
            among = None
        elif where is not None and not where.empty and among is None:
            raise ValueError(f"{self.collection} cannot apply these filters itself")
        among = selected(among)
        if among is not None:
            if len(among) == 0:
                return result
            expression += f" and owner in [{', '.join(str(o) for o in among.tolist())}]"
        limit = min(MAX_LIMIT, self._rows, k + max(8, k // 4))
        pending = list(range(len(queries)))
        while pending:
            hits = self._search(queries[pending], limit, expression)
            still = []
            for i, found in zip(pending, hits, strict=True):
                best: dict[int, float] = {}
                for owner, score in found:
                    if owner not in best or score > best[owner]:
                        best[owner] = score
                ranked = sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))
                worst = min((score for _, score in found), default=-np.inf)
                complete = (
                    len(found) < limit
                    or limit >= min(MAX_LIMIT, self._rows)
                    or (len(ranked) >= k and worst < ranked[k - 1][1])
                )
                if not complete:
                    still.append(i)
                    continue
                for j, (owner, score) in enumerate(ranked[:k]):
                    result.owners[i, j] = owner
                    result.scores[i, j] = score
            pending = still
            limit = min(MAX_LIMIT, self._rows, limit * 4)
        return result

    def _search(
        self, queries: np.ndarray, limit: int, expression: str
    ) -> list[list[tuple[int, float]]]:
        params: dict[str, Any] = {"metric_type": "IP"}
        if self._index_type == "HNSW":
            params["params"] = {"ef": max(HNSW_EF, limit)}
        with milvus_errors(self.location, f"searching {self.collection}"):
            answers = self._client.search(
                self.collection,
                data=list(queries),
                limit=limit,
                filter=expression,
                output_fields=["owner"],
                search_params=params,
                consistency_level="Strong",
                **({"group_by_field": "owner"} if self._several else {}),
            )
        return [
            [(int(hit["entity"]["owner"]), float(hit["distance"])) for hit in answer]
            for answer in answers
        ]

    def fetch(self, owners: np.ndarray) -> np.ndarray:
        wanted = np.asarray(owners, np.int64).ravel()
        first: dict[int, tuple[int, np.ndarray]] = {}
        unique = np.unique(wanted).tolist()
        with milvus_errors(self.location, f"reading {self.collection}"):
            for start in range(0, len(unique), _FETCH_OWNERS):
                chunk = ", ".join(str(o) for o in unique[start : start + _FETCH_OWNERS])
                for entity in self._client.query(
                    self.collection,
                    filter=f"row < {self._rows} and owner in [{chunk}]",
                    output_fields=["row", "owner", "vector"],
                    consistency_level="Strong",
                ):
                    owner, row = int(entity["owner"]), int(entity["row"])
                    if owner not in first or row < first[owner][0]:
                        first[owner] = (row, np.asarray(entity["vector"], np.float32))
        missing = [o for o in wanted.tolist() if o not in first]
        if missing:
            raise KeyError(f"no vector stored for image ids {missing[:10]}")
        if len(wanted) == 0:
            return np.zeros((0, self.dims), np.float32)
        return np.vstack([first[o][1] for o in wanted.tolist()])

    def owners(self) -> np.ndarray:
        """(rows,) int64: the owner of every committed row, in row order. Read from
        Milvus once, in pages of 10,000 rows by primary key (a query returns at most
        16,384), then only the rows added since; what feedback's sampling by position
        and :meth:`visible_owners` use."""
        with self._lock:
            known, rows = self._owners_cache, self._rows
            if len(known) < rows:
                parts = [known]
                with milvus_errors(self.location, f"listing {self.collection}"):
                    for start in range(len(known), rows, _LIST_PAGE):
                        stop = min(start + _LIST_PAGE, rows)
                        page = self._client.query(
                            self.collection,
                            filter=f"row >= {start} and row < {stop}",
                            output_fields=["row", "owner"],
                            consistency_level="Strong",
                        )
                        chunk = np.full(stop - start, -1, np.int64)
                        for entity in page:
                            chunk[int(entity["row"]) - start] = int(entity["owner"])
                        if np.any(chunk < 0):
                            raise IndexCorrupt(
                                f"Milvus collection {self.collection} lacks rows the "
                                "catalogue committed; the index is damaged: re-create it "
                                "with a new --index"
                            )
                        parts.append(chunk)
                self._owners_cache = np.concatenate(parts)
            return self._owners_cache[:rows]

    def hidden_owners(self) -> AbstractSet[int]:
        """The owners hidden now, as a read-only view (O(1) membership tests)."""
        return self._hidden

    def visible_owners(self) -> np.ndarray:
        """(n,) int64 sorted, each once."""
        if self._index_type is None:
            return np.zeros(0, np.int64)
        unique = np.unique(self.owners())
        with self._lock:
            if not self._hidden:
                return unique
            return unique[~np.isin(unique, np.fromiter(self._hidden, np.int64))]

    def describe(self) -> SearchMethod:
        """How searches are answered: by Milvus, exactly (FLAT) or through HNSW."""
        kind = "exact" if self._index_type in (None, "FLAT") else "approximate"
        where = "Milvus Lite" if self.location.lite else "Milvus"
        if not self._fields:
            filters = "; filters as id lists (no filter fields: copy or index it anew for them)"
        elif self._cut:
            filters = f"; filters on {', '.join(sorted(self._cut))} as id lists (fields cut)"
        else:
            filters = "; filters inside Milvus"
        return SearchMethod(
            kind=kind,
            rows=self._rows,
            summary=f"{kind}: {where} {self._index_type or 'FLAT'} index, {self._rows:,} rows "
            f"({self.location.describe()}, collection {self.collection}){filters}",
        )
