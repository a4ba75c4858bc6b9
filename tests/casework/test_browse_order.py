"""Browsing oldest first (CLI ``--sort``, the search body's ``sort``, recorded in case
files and saved searches), checked against the order worked out from the collection's
plan; and facet counts that narrow by the other filters (GET /api/facets)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from spyglass.cli import main
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.store.index import Index

from .conftest import serve_in_process
from .filtered_collection import Planned


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture
def served(filtered_index: Path, bundled: Encoder) -> Iterator[tuple[TestClient, Spyglass]]:
    yield from serve_in_process(filtered_index, bundled)


def by_date(
    engine: Spyglass, collection: list[Planned], keep: Callable[[Planned], bool], oldest: bool
) -> list[int]:
    """Brute force: the kept images' ids by the planned date, ties by id."""
    ids = {}
    for item in collection:
        state = engine.index.catalogue.file(str(item.path))
        assert state is not None
        ids[item.path] = state.image_id
    kept = [p for p in collection if keep(p)]
    sign = 1 if oldest else -1
    return [ids[p.path] for p in sorted(kept, key=lambda p: (sign * p.date, ids[p.path]))]


def test_cli_browses_oldest_first_and_refuses_sort_with_a_query(
    filtered_index: Path, filter_collection: list[Planned], bundled: Encoder
) -> None:
    root = filter_collection[0].path.parents[2]
    dates = [p.date for p in filter_collection if p.format == "JPEG"]
    assert len(dates) > len(set(dates))  # some share a date: the tie-break by id is tested
    args = ["search", "--format", "jpeg", "-k", "100", "--json", "--index", str(filtered_index)]
    with Spyglass(bundled, Index.open(filtered_index)) as engine:
        oldest = by_date(engine, filter_collection, lambda p: p.format == "JPEG", oldest=True)
        newest = by_date(engine, filter_collection, lambda p: p.format == "JPEG", oldest=False)
    assert oldest != list(reversed(newest))  # ties by id both ways: not a mere reversal
    for sort, expected in (("oldest", oldest), ("newest", newest), (None, newest)):
        status, out = invoke(*args, *(["--sort", sort] if sort else []))
        assert status == 0, out
        assert [r["id"] for r in json.loads(out)] == expected, sort
    status, out = invoke(*args, "--sort", "oldest", "-k", "3", "--offset", "2")
    assert [r["id"] for r in json.loads(out)] == oldest[2:5]
    status, out = invoke("search", "a watch", "--sort", "oldest", "--index", str(filtered_index))
    assert status == 2 and len(out.strip().splitlines()) == 1
    assert "ordered by similarity" in out
    del root


def test_case_files_and_saved_searches_keep_the_order(
    filtered_index: Path, filter_collection: list[Planned], bundled: Encoder, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(filtered_index, index)
    case = tmp_path / "case.json"
    common = ("--format", "png", "--sort", "oldest", "--index", str(index))
    assert invoke("search", "-k", "4", "--export", str(case), *common)[0] == 0
    document = json.loads(case.read_text())
    assert document["search"]["sort"] == "oldest" and "oldest first" in document["query"]
    with Spyglass(bundled, Index.open(index)) as engine:
        oldest = by_date(engine, filter_collection, lambda p: p.format == "PNG", oldest=True)
    assert [r["id"] for r in document["results"]] == oldest[:4]
    status, out = invoke("verify", str(case), "--index", str(index))
    assert status == 0, out
    # Recorded without its order, the same search lists other images: verify tells.
    document["search"]["sort"] = None
    document.pop("digest")
    (tmp_path / "unsorted.json").write_text(json.dumps(document))
    assert invoke("verify", str(tmp_path / "unsorted.json"), "--index", str(index))[0] == 6

    assert invoke("saved", "save", "old-pngs", "-k", "4", *common)[0] == 0
    status, out = invoke("saved", "run", "old-pngs", "--json", "--index", str(index))
    assert status == 0 and [r["id"] for r in json.loads(out)] == oldest[:4]


def test_http_sort(served: tuple[TestClient, Spyglass], filter_collection: list[Planned]) -> None:
    client, engine = served
    body = {"filters": {"has_gps": False}, "limit": 100}
    expected = by_date(engine, filter_collection, lambda p: not p.gps, oldest=True)
    answer = client.post("/api/search", json={**body, "sort": "oldest"})
    assert answer.status_code == 200, answer.text
    assert [r["id"] for r in answer.json()["results"]] == expected
    assert "oldest first" in answer.json()["query"]
    paged = client.post("/api/search", json={**body, "sort": "oldest", "offset": 3, "limit": 5})
    assert [r["id"] for r in paged.json()["results"]] == expected[3:8]
    newest = client.post("/api/search", json=body).json()
    assert [r["id"] for r in newest["results"]] == by_date(
        engine, filter_collection, lambda p: not p.gps, oldest=False
    )
    with_text = client.post("/api/search", json={**body, "text": "a watch", "sort": "oldest"})
    assert with_text.status_code == 400 and "similarity" in with_text.json()["error"]["message"]
    assert client.post("/api/search", json={**body, "sort": "sideways"}).status_code == 422
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]
    assert "sort" in schema["properties"]


def test_facets_narrow_by_the_other_filters(
    served: tuple[TestClient, Spyglass], filter_collection: list[Planned]
) -> None:
    client, _ = served
    root = filter_collection[0].path.parents[2]
    every = client.get("/api/facets").json()
    assert every["formats"]["PNG"] == sum(p.format == "PNG" for p in filter_collection)

    def count(keep: Callable[[Planned], bool]) -> int:
        return sum(1 for p in filter_collection if keep(p))

    pngs = client.get("/api/facets", params={"formats": "png"})
    assert pngs.status_code == 200, pngs.text
    narrowed = pngs.json()
    assert narrowed["total"] == count(lambda p: p.format == "PNG")
    # Another facet's counts: over the PNGs only.
    for site in ("site-a", "site-b"):
        expected = count(lambda p, s=site: p.format == "PNG" and p.folder == s)
        assert narrowed["folders"].get(str(root / site), 0) == expected
    assert narrowed["gps"] == {"yes": 0, "no": count(lambda p: p.format == "PNG")}
    # The facet's own choice does not zero its siblings: JPEG still counts them all.
    assert narrowed["formats"] == every["formats"]
    assert narrowed["formats"]["JPEG"] == count(lambda p: p.format == "JPEG") > 0

    both = client.get(
        "/api/facets", params={"formats": ["png", "jpeg"], "under": str(root / "site-b")}
    ).json()
    assert both["total"] == count(lambda p: p.folder == "site-b")
    assert both["formats"] == {
        "JPEG": count(lambda p: p.folder == "site-b" and p.format == "JPEG"),
        "PNG": count(lambda p: p.folder == "site-b" and p.format == "PNG"),
    }
    assert both["folders"] == every["folders"]  # its own facet: over both formats, all folders
    with_gps = client.get("/api/facets", params={"has_gps": "true"}).json()
    assert with_gps["formats"] == {"JPEG": count(lambda p: p.gps)}
    assert with_gps["gps"] == every["gps"]
    for bad in ({"after": "yesterday"}, {"formats": "heic"}, {"under": "relative"}):
        refused = client.get("/api/facets", params=bad)
        assert refused.status_code in (400, 422) and set(refused.json()) == {"error"}, bad
