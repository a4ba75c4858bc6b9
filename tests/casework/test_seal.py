"""Seals that survive a JSON round-trip: a case file or an audit log parsed and written
again the way JavaScript writes JSON (``1.0`` as ``1``, ``1e-05`` as ``0.00001``, other
key order and spaces) still verifies; a real edit is still found; files and logs sealed
by the earlier rule (Python's own sorted-keys JSON) still verify, as format 1."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from spyglass.casework.audit import AuditLog
from spyglass.casework.canonical import number_text
from spyglass.casework.casefile import content_digest
from spyglass.cli import main


def js_number(value: float) -> str:
    """A double as ECMAScript's Number.prototype.toString writes it, worked out here
    from Python's own formats (positional from 1e-6 up to 1e21, else an exponent
    without leading zeros)."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    if 1e-6 <= abs(value) < 1e21:
        return format(Decimal(repr(value)), "f")
    mantissa, exponent = repr(value).split("e")
    return f"{mantissa}e{'-' if exponent.startswith('-') else '+'}{int(exponent.lstrip('+-'))}"


def js_dumps(value: Any, indent: str = "") -> str:
    """JSON as a JavaScript client writes it back: keys in reverse order, other spaces,
    integral floats as integers, non-ASCII escaped."""
    inner = indent + "   "
    if isinstance(value, dict):
        items = [f"\n{inner}{json.dumps(k)} :  {js_dumps(v, inner)}" for k, v in value.items()]
        return "{" + ",".join(reversed(items)) + f"\n{indent}}}" if items else "{}"
    if isinstance(value, list):
        return "[ " + " , ".join(js_dumps(v, inner) for v in value) + " ]"
    if isinstance(value, float):
        return js_number(value)
    return json.dumps(value)  # ensure_ascii: "é" as "\u00e9"


def reparsed(text: str) -> str:
    return js_dumps(json.loads(text))


def legacy_digest(document: dict[str, Any]) -> str:
    """How case files were sealed before (written out here, not taken from the code)."""
    body = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(body.encode("utf-8")).hexdigest()


def export(index: Path, target: Path, *args: str) -> str:
    result = CliRunner().invoke(
        main, ["search", *args, "--index", str(index), "--export", str(target)]
    )
    assert result.exit_code == 0, result.output
    return target.read_text()


def verify(index: Path, case: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify", str(case), "--index", str(index)])
    return result.exit_code, result.output


def test_numbers_are_written_as_ecmascript_writes_them() -> None:
    # RFC 8785's own examples (appendix B), and the forms Python and JavaScript disagree on.
    expected = {
        0.0: "0",
        1.0: "1",
        4.5: "4.5",
        0.002: "0.002",
        1e-05: "0.00001",
        1e-07: "1e-7",
        1e21: "1e+21",
        1e20: "100000000000000000000",
        333333333.3333332: "333333333.3333332",
        5e-324: "5e-324",
        1.7976931348623157e308: "1.7976931348623157e+308",
        9007199254740992.0: "9007199254740992",
        295147905179352830000.0: "295147905179352830000",
        -1.5e-10: "-1.5e-10",
    }
    assert {value: number_text(value) for value in expected} == expected
    assert number_text(-0.0) == "0"


def test_the_digest_holds_the_values_not_the_text() -> None:
    document = {"score": 0.5, "weight": 1.0, "tiny": 1e-05, "path": "é", "k": 10}
    rewritten = json.loads(js_dumps(document))
    assert rewritten["weight"] == 1 and isinstance(rewritten["weight"], int)
    assert content_digest(rewritten) == content_digest(document)
    # The ablation: the earlier rule tells the two apart.
    assert legacy_digest(rewritten) != legacy_digest(document)
    assert content_digest({**document, "score": 0.500001}) != content_digest(document)


def test_a_case_file_written_again_by_javascript_still_verifies(
    edited_index: Path, tmp_path: Path
) -> None:
    case = tmp_path / "case.json"
    text = export(edited_index, case, "a starfish", "--not", "a flower", "-k", "4")
    assert '"weight": 1.0' in text  # what a JavaScript client writes back as 1
    rewritten = tmp_path / "rewritten.json"
    rewritten.write_text(reparsed(text))
    assert '"weight" :  1' in rewritten.read_text() and ": 1.0" not in rewritten.read_text()
    status, out = verify(edited_index, rewritten)
    assert status == 0, out
    assert "edited" not in out and "format 1" not in out

    # A real edit is still found: a score, or a path.
    document = json.loads(rewritten.read_text())
    scored = json.loads(json.dumps(document))
    scored["results"][1]["score"] = round(scored["results"][1]["score"] + 0.01, 6)
    moved = json.loads(json.dumps(document))
    moved["results"][2]["path"] = moved["results"][3]["path"]
    for name, edited in (("scored", scored), ("moved", moved)):
        target = tmp_path / f"{name}.json"
        target.write_text(js_dumps(edited))
        status, out = verify(edited_index, target)
        assert status == 6 and "edited after export" in out, (name, out)


def test_a_case_file_sealed_by_the_earlier_rule_still_verifies(
    edited_index: Path, tmp_path: Path
) -> None:
    document = json.loads(export(edited_index, tmp_path / "case.json", "a wrist watch", "-k", "3"))
    document.pop("digest")
    document["digest"] = legacy_digest(document)
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    status, out = verify(edited_index, legacy)
    assert status == 0, out
    assert "sealed (format 1)" in out and "edited" not in out
    document["results"][0]["score"] += 0.01
    legacy.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    status, out = verify(edited_index, legacy)
    assert status == 6 and "edited after export" in out


def audit_verify(log: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "verify", str(log)])
    return result.exit_code, result.output


def test_an_audit_log_written_again_by_javascript_still_verifies(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit = AuditLog(log)
    for n in range(4):
        query = {"terms": [{"text": f"quéry {n}", "weight": 1.0}], "min_score": 2.5e-05}
        audit.record("search", client="test", query=query, results=[n, n + 1])
    lines = log.read_text().splitlines()
    assert '"weight":1.0' in lines[0] and "2.5e-05" in lines[0]
    rewritten = [js_dumps(json.loads(line)).replace("\n", "") for line in lines]
    assert '"weight" :  1' in rewritten[0] and "0.000025" in rewritten[0]
    log.write_text("\n".join(rewritten) + "\n")
    assert audit_verify(log) == (0, "intact: 4 entries, each chained to the one before\n")
    # An edit is still found.
    entry = json.loads(rewritten[2])
    entry["results"] = [7]
    rewritten[2] = json.dumps(entry)
    log.write_text("\n".join(rewritten) + "\n")
    status, out = audit_verify(log)
    assert status == 6 and out.startswith("BROKEN: entry 3 (line 3): its content does not match")


def test_an_audit_log_hashed_by_the_earlier_rule_still_verifies(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    previous = "0" * 64
    lines = []
    for n in range(1, 4):
        entry = {"seq": n, "time": "2026-01-01T00:00:00.000000+00:00", "event": "search"}
        entry |= {"client": "old", "query": {"weight": 1.0}, "results": [n], "prev": previous}
        body = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        entry["hash"] = previous = hashlib.sha256(body.encode()).hexdigest()
        lines.append(json.dumps(entry, separators=(",", ":")))
    log.write_text("\n".join(lines) + "\n")
    status, out = audit_verify(log)
    assert status == 0 and out.startswith("intact: 3 entries")
    assert "3 of them sealed (format 1)" in out
    # New entries chain on from the old ones, in the current format.
    AuditLog(log).record("export", client="new", query={"weight": 1.0})
    status, out = audit_verify(log)
    assert status == 0 and out.startswith("intact: 4 entries") and "3 of them" in out
