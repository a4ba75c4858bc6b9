"""Saved searches: a named query kept beside the index's catalogue, run again on
demand, optionally showing only the images indexed since its last run.

Stored in ``INDEX/saved-searches.json``: name -> the recorded search
(:class:`~spyglass.casework.queryspec.SearchSpec`), when it was saved, and when it
last ran with the highest image id the index held then. Image ids only grow as images
are indexed, so "new since the last run" is "id above that one": exact, and immune to
clock changes. Every change is a read-modify-write under an exclusive lock on
``saved-searches.lock``, written to a temporary file and renamed over the old one: a
crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spyglass.casework.casefile import write_atomically
from spyglass.casework.duplicates import CollapsedResult
from spyglass.casework.queryspec import SearchSpec
from spyglass.errors import CaseFileProblem, InvalidQuery
from spyglass.search import SearchResult
from spyglass.store.index import Index

SAVED_FILE = "saved-searches.json"
_LOCK_FILE = "saved-searches.lock"
#: A result of a saved search: collapsed or not.
Ranked = SearchResult | CollapsedResult
_NAME = re.compile(r"^[\w][\w .@+-]{0,63}$")


class SavedSearchNotFound(InvalidQuery):
    http_status = 404


@dataclass(frozen=True)
class SavedSearch:
    name: str
    search: SearchSpec
    saved_at: str
    #: When it last ran (UTC, ISO 8601) and the highest image id the index held then.
    last_run_at: str | None = None
    last_image_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "search": self.search.to_json(copies=True),
            "saved_at": self.saved_at,
            "last_run_at": self.last_run_at,
            "last_image_id": self.last_image_id,
        }

    @classmethod
    def from_json(cls, name: str, document: dict[str, Any]) -> SavedSearch:
        last = document.get("last_image_id")
        return cls(
            name=name,
            search=SearchSpec.from_json(document["search"]),
            saved_at=str(document["saved_at"]),
            last_run_at=document.get("last_run_at"),
            last_image_id=None if last is None else int(last),
        )


class SavedSearches:
    """The saved searches of one index folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        self.path = self.folder / SAVED_FILE

    def all(self) -> list[SavedSearch]:
        """Every saved search, by name."""
        return [self._parse(n, d) for n, d in sorted(self._read().items())]

    def get(self, name: str) -> SavedSearch:
        document = self._read().get(name)
        if document is None:
            known = ", ".join(sorted(self._read())) or "none yet"
            raise SavedSearchNotFound(f"no saved search named {name!r} (saved: {known})")
        return self._parse(name, document)

    def save(self, name: str, search: SearchSpec, *, replace_existing: bool = False) -> SavedSearch:
        if not _NAME.match(name):
            raise InvalidQuery(
                f"{name!r} cannot name a saved search: use up to 64 letters, digits, spaces "
                "and . @ + - _, starting with a letter or digit"
            )
        saved = SavedSearch(name, search, _now())
        with self._locked() as searches:
            if name in searches and not replace_existing:
                raise InvalidQuery(f"a saved search named {name!r} exists: give --replace")
            searches[name] = saved.to_json()
        return saved

    def delete(self, name: str) -> None:
        with self._locked() as searches:
            if searches.pop(name, None) is None:
                raise SavedSearchNotFound(f"no saved search named {name!r}")

    def run(
        self,
        name: str,
        index: Index,
        search: Callable[[SearchSpec], Sequence[Ranked]],
        *,
        new_only: bool = False,
    ) -> tuple[SavedSearch, list[Ranked]]:
        """Run the saved search with ``search`` and record the run. With ``new_only``,
        only images indexed since its last run (all, the first time), read down the
        ranking until ``k`` of them are found or it ends. Returns the saved search as
        it was before this run, and the results."""
        saved = self.get(name)
        # Read before searching: an image indexed meanwhile counts as new next time.
        highest = index.catalogue.next_image_id() - 1
        spec = saved.search
        if new_only and saved.last_image_id is not None:
            results = _newer_than(spec, saved.last_image_id, index.count(), search)
        else:
            results = list(search(spec))
        with self._locked() as searches:
            if name in searches:
                searches[name] = replace(
                    self._parse(name, searches[name]), last_run_at=_now(), last_image_id=highest
                ).to_json()
        return saved, results

    # -- the file ---------------------------------------------------------------------

    def _parse(self, name: str, document: Any) -> SavedSearch:
        try:
            return SavedSearch.from_json(name, document)
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidQuery(
                f"saved search {name!r} in {self.path} is damaged: {error}"
            ) from error
        except InvalidQuery as error:  # e.g. a filter this version does not know
            raise InvalidQuery(f"saved search {name!r} in {self.path}: {error}") from error

    def _read(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise CaseFileProblem(f"cannot read the saved searches {self.path}: {error}") from error
        searches = document.get("searches") if isinstance(document, dict) else None
        if not isinstance(searches, dict):
            raise CaseFileProblem(f"{self.path} is not a saved-searches file")
        return searches

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The searches to change; written back atomically when the block ends well."""
        if not self.folder.is_dir():
            raise InvalidQuery(f"no index folder at {self.folder}")
        try:
            handle = os.open(self.folder / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise InvalidQuery(
                f"cannot save searches in {self.folder}: {error.strerror}"
            ) from error
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            searches = self._read()
            yield searches
            content = json.dumps({"version": 1, "searches": searches}, indent=2, ensure_ascii=False)
            write_atomically(self.path, (content + "\n").encode("utf-8"))
        finally:
            os.close(handle)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _newer_than(
    spec: SearchSpec,
    last_image_id: int,
    available: int,
    search: Callable[[SearchSpec], Sequence[Ranked]],
) -> list[Ranked]:
    wanted = spec.offset + spec.k
    depth = min(max(wanted * 4, 100), max(available, 1))
    while True:
        ranked = search(replace(spec, offset=0, k=depth))
        fresh = [r for r in ranked if r.image_id > last_image_id]
        if len(fresh) >= wanted or len(ranked) < depth or depth >= available:
            return fresh[spec.offset : wanted]
        depth = min(depth * 2, available)
