"""The audit log: searches and exports are recorded, each entry chained to the one
before; an edited, removed or reordered entry is found and named; a torn last line
(a crash mid-write) is told apart from tampering; appends from many threads stay one
chain."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from click.testing import CliRunner

from spyglass.casework.audit import AuditLog, verify_log
from spyglass.cli import main


def audit_verify(log: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "verify", str(log)])
    return result.exit_code, result.stdout


def write_entries(log: Path, count: int) -> None:
    audit = AuditLog(log)
    for n in range(count):
        audit.record("search", client="test", query={"text": f"query {n}"}, results=[n, n + 1])


def test_cli_searches_and_exports_are_recorded(edited_index: Path, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    for args in (["a sunflower"], ["a watch", "--export", str(tmp_path / "case.json")]):
        result = CliRunner().invoke(
            main, ["search", *args, "--index", str(edited_index), "-k", "3", "--audit", str(log)]
        )
        assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in entries] == ["search", "search", "export"]
    assert entries[0]["query"]["terms"] == [{"text": "a sunflower", "weight": 1.0}]
    assert len(entries[0]["results"]) == 3 and entries[0]["client"].startswith("cli ")
    assert entries[2]["details"]["file"] == str(tmp_path / "case.json")
    assert entries[1]["prev"] == entries[0]["hash"]
    assert audit_verify(log) == (0, "intact: 3 entries, each chained to the one before\n")


def test_an_edited_entry_is_named(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_entries(log, 5)
    lines = log.read_text().splitlines()
    lines[2] = lines[2].replace('"query 2"', '"query two"')
    log.write_text("\n".join(lines) + "\n")
    status, out = audit_verify(log)
    assert status == 6
    assert out.startswith("BROKEN: entry 3 (line 3): its content does not match its hash")


def test_a_removed_entry_is_found_where_it_was(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_entries(log, 5)
    lines = log.read_text().splitlines()
    del lines[1]
    log.write_text("\n".join(lines) + "\n")
    check = verify_log(log)
    assert not check.intact and check.first_bad == 2 and "sequence number 3" in check.problem


def test_a_rewritten_entry_with_a_fresh_hash_breaks_the_next_link(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_entries(log, 4)
    lines = log.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["results"] = [99]
    from spyglass.casework.audit import entry_hash

    entry["hash"] = entry_hash(entry)
    lines[1] = json.dumps(entry)
    log.write_text("\n".join(lines) + "\n")
    check = verify_log(log)
    assert check.first_bad == 3 and "link to the entry before" in check.problem


def test_a_torn_last_line_is_not_tampering_and_the_next_append_recovers(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_entries(log, 3)
    torn = b'{"seq":4,"time":"2026-'  # the process died here
    with log.open("ab") as handle:
        handle.write(torn)
    status, out = audit_verify(log)
    assert status == 7
    assert out.startswith("intact: 3 entries")
    assert f"the last line is incomplete ({len(torn)} bytes" in out
    write_entries(log, 1)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in entries] == ["search"] * 3 + ["recovered", "search"]
    assert entries[3]["details"]["torn_bytes"] == len(torn)
    assert audit_verify(log)[0] == 0


def test_appends_from_many_threads_form_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit = AuditLog(log)

    def append(worker: int) -> None:
        for n in range(25):
            audit.record("search", client=f"thread {worker}", query={"n": n}, results=[n])

    threads = [threading.Thread(target=append, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    check = verify_log(log)
    assert check.intact and check.entries == 200 and not check.torn_tail
    # A second writer object (as another process would be) continues the same chain.
    AuditLog(log).record("export", client="other", query=None)
    assert verify_log(log).entries == 201 and verify_log(log).intact
