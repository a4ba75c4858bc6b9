"""An append-only audit log: who searched what, when, and what came back.

One JSON object per line (JSON Lines). Each entry carries ``prev``, the ``hash`` of
the entry before it (64 zeros for the first), and its own ``hash``: the SHA-256 of
``prev`` and its canonical JSON without ``hash`` (RFC 8785,
:mod:`spyglass.casework.canonical`: a log shipper that parses and writes the lines
again keeps it; entries hashed by the earlier rule, Python's sorted-keys JSON, still
verify and are counted as format 1). Editing, removing or reordering an
entry breaks the chain from there on; :func:`verify_log` names the first entry that
does not hold. (Anyone who can write the file can also rewrite the whole chain from
the edit on: keep a copy of the last hash elsewhere, or the file on write-once
storage, to rule that out.)

Appends are serialised: a lock within the process (the server's threads) and an
exclusive ``flock`` on the file (other processes); each entry is written with one
``write`` and ``fsync``-ed. A crash mid-append can leave only a torn last line (no
newline at its end): :func:`verify_log` reports it as such, not as tampering, and the
next append cuts it off and records that it did (an entry with event ``recovered``
holding the torn bytes' length and SHA-256), so the chain goes on unbroken.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spyglass.casework.canonical import canonical_json, legacy_canonical_json
from spyglass.errors import AuditUnavailable, CaseFileProblem

GENESIS = "0" * 64
#: Bytes read from the end of the log to find its last entry.
_TAIL = 1 << 16

#: Exit statuses of ``spyglass audit verify`` (docs/casework.md).
CHAIN_INTACT = 0
CHAIN_BROKEN = 6
TORN_TAIL = 7


def entry_hash(entry: dict[str, Any]) -> str:
    """The hash of an entry (``entry`` without its ``hash`` field, ``prev`` included):
    SHA-256 of its RFC 8785 canonical form."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def legacy_entry_hash(entry: dict[str, Any]) -> str:
    """The hash of an entry as the first audit logs took it (Python's sorted-keys JSON,
    where ``1.0`` and ``1`` differ)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(legacy_canonical_json(body)).hexdigest()


class AuditLog:
    """Appends entries to the log at ``path`` (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()

    def record(
        self,
        event: str,
        *,
        client: str,
        query: Any,
        results: Sequence[int] = (),
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one entry; returns it (with ``seq``, ``prev`` and ``hash``)."""
        fields: dict[str, Any] = {
            "event": event,
            "client": client,
            "query": query,
            "results": [int(i) for i in results],
        }
        if details:
            fields["details"] = details
        with self._lock:
            try:
                handle = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            except OSError as error:
                raise AuditUnavailable(
                    f"cannot open the audit log {self.path}: {error.strerror}"
                ) from error
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
                last = self._last_entry(handle)
                return self._append(handle, last, fields)
            except OSError as error:
                raise AuditUnavailable(
                    f"cannot write the audit log {self.path}: {error.strerror}"
                ) from error
            finally:
                os.close(handle)  # closing releases the flock

    def _append(
        self, handle: int, last: dict[str, Any] | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": (int(last["seq"]) + 1) if last else 1,
            "time": datetime.now(UTC).isoformat(timespec="microseconds"),
            **fields,
            "prev": last["hash"] if last else GENESIS,
        }
        entry["hash"] = entry_hash(entry)
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        os.write(handle, line.encode("utf-8", "surrogatepass"))
        os.fsync(handle)
        return entry

    def _last_entry(self, handle: int) -> dict[str, Any] | None:
        """The last whole entry; a torn last line is cut off first and its removal
        recorded as an entry of its own."""
        size = os.fstat(handle).st_size
        if size == 0:
            return None
        start = max(0, size - _TAIL)
        tail = os.pread(handle, size - start, start)
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            keep = start + cut + 1 if cut >= 0 else 0
            if cut < 0 and start > 0:
                raise AuditUnavailable(f"the audit log {self.path} ends in a line over 64 KiB")
            torn = os.pread(handle, size - keep, keep)
            os.ftruncate(handle, keep)
            previous = self._last_entry(handle)
            return self._append(
                handle,
                previous,
                {
                    "event": "recovered",
                    "client": "spyglass",
                    "query": None,
                    "results": [],
                    "details": {
                        "torn_bytes": len(torn),
                        "torn_sha256": hashlib.sha256(torn).hexdigest(),
                    },
                },
            )
        lines = tail.rstrip(b"\n").split(b"\n")
        try:
            last: dict[str, Any] = json.loads(lines[-1])
            return last
        except ValueError as error:
            raise AuditUnavailable(
                f"the audit log {self.path} ends in an entry that is not JSON: run "
                f"`spyglass audit verify {self.path}`"
            ) from error


@dataclass(frozen=True)
class AuditCheck:
    """What :func:`verify_log` found. ``first_bad`` is the 1-based line number of the
    first entry that breaks the chain (None: none does); ``torn_tail`` is set when the
    last line is incomplete (a crash while it was written)."""

    entries: int
    first_bad: int | None = None
    problem: str = ""
    torn_tail: bool = False
    torn_bytes: int = 0
    #: Entries whose hash is of the first rule (before hashes were canonical over numbers).
    legacy_entries: int = 0

    @property
    def intact(self) -> bool:
        return self.first_bad is None

    @property
    def exit_status(self) -> int:
        if not self.intact:
            return CHAIN_BROKEN
        return TORN_TAIL if self.torn_tail else CHAIN_INTACT

    def lines(self) -> list[str]:
        if not self.intact:
            found = [f"BROKEN: entry {self.first_bad} (line {self.first_bad}): {self.problem}"]
        else:
            found = [f"intact: {self.entries} entries, each chained to the one before"]
            if self.legacy_entries:
                found.append(
                    f"{self.legacy_entries} of them sealed (format 1): hashed as earlier "
                    "versions hashed entries"
                )
        if self.torn_tail:
            found.append(
                f"the last line is incomplete ({self.torn_bytes} bytes, no newline): a write "
                "cut short by a crash; the next append records and removes it"
            )
        return found


def verify_log(path: str | Path) -> AuditCheck:
    """Check every entry's hash and its link to the one before. Raises
    :class:`CaseFileProblem` when the file cannot be read."""
    target = Path(path).expanduser()
    try:
        data = target.read_bytes()
    except FileNotFoundError as error:
        raise CaseFileProblem(f"no audit log at {target}") from error
    except OSError as error:
        raise CaseFileProblem(f"cannot read the audit log {target}: {error.strerror}") from error
    lines = data.split(b"\n")
    torn = lines.pop()  # after the last newline: empty unless the last line is torn
    previous = GENESIS
    legacy = 0
    for number, raw in enumerate(lines, start=1):
        problem, format_1 = _entry_problem(raw, number, previous)
        if problem:
            return AuditCheck(number - 1, number, problem, bool(torn), len(torn), legacy)
        legacy += format_1
        previous = json.loads(raw)["hash"]
    return AuditCheck(len(lines), torn_tail=bool(torn), torn_bytes=len(torn), legacy_entries=legacy)


def _entry_problem(raw: bytes, number: int, previous: str) -> tuple[str, bool]:
    """What is wrong with an entry ("" for nothing), and whether its hash is of the
    first rule (format 1)."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return "not a JSON object (the line was altered)", False
    if not isinstance(entry, dict) or not {"seq", "prev", "hash"} <= set(entry):
        return "not an audit entry (no seq, prev or hash)", False
    if entry["seq"] != number:
        return (
            f"sequence number {entry['seq']} where {number} was due (entries removed or moved)",
            False,
        )
    if entry["prev"] != previous:
        return (
            "its link to the entry before does not match (an entry before it was removed "
            "or replaced)",
            False,
        )
    try:
        if entry_hash(entry) == entry["hash"]:
            return "", False
    except ValueError:  # NaN, or a number no double holds: no log writes one
        pass
    if legacy_entry_hash(entry) == entry["hash"]:
        return "", True
    return "its content does not match its hash (the entry was edited)", False


def client_of_cli() -> str:
    """Who ran a command: ``cli user@host``."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = str(os.getuid())
    return f"cli {user}@{socket.gethostname()}"
