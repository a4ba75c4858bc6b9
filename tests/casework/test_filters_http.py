"""Filters over HTTP: the search request's ``filters`` object (in the OpenAPI document),
browsing with filters alone, 4xx JSON for bad values, and the facets endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass

from .conftest import serve_in_process
from .filtered_collection import Planned


@pytest.fixture
def served(filtered_index: Path, bundled: Encoder) -> Iterator[tuple[TestClient, Spyglass]]:
    yield from serve_in_process(filtered_index, bundled)


def ids_where(engine: Spyglass, collection: list[Planned], keep) -> set[int]:  # type: ignore[no-untyped-def]
    found = set()
    for item in collection:
        if keep(item):
            state = engine.index.catalogue.file(str(item.path))
            assert state is not None
            found.add(state.image_id)
    return found


def test_search_with_filters_returns_only_kept_images(
    served: tuple[TestClient, Spyglass], filter_collection: list[Planned]
) -> None:
    client, engine = served
    root = filter_collection[0].path.parents[2]
    wanted = ids_where(
        engine, filter_collection, lambda p: p.folder == "site-b" and p.format == "JPEG"
    )
    body = {
        "text": "a wrist watch",
        "limit": 50,
        "filters": {"under": [str(root / "site-b")], "formats": ["jpeg"]},
    }
    answer = client.post("/api/search", json=body)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert {r["id"] for r in document["results"]} == wanted
    assert document["searchable"] == len(wanted) and document["has_more"] is False
    assert "format JPEG" in document["query"]
    few = client.post("/api/search", json={**body, "limit": 2}).json()
    assert len(few["results"]) == 2 and few["has_more"] is True


def test_filters_alone_browse_newest_first(
    served: tuple[TestClient, Spyglass], filter_collection: list[Planned]
) -> None:
    client, engine = served
    answer = client.post("/api/search", json={"filters": {"camera": "nikon"}, "limit": 50})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert {r["id"] for r in results} == ids_where(
        engine, filter_collection, lambda p: bool(p.camera and "NIKON" in p.camera)
    )
    dates = [r["rank_score"] for r in results]
    assert dates == sorted(dates, reverse=True)
    empty = client.post("/api/search", json={"filters": {}})
    assert empty.status_code in (400, 422)


def test_bad_filter_values_are_4xx_json(served: tuple[TestClient, Spyglass]) -> None:
    client, _ = served
    for filters, status in (
        ({"after": "last tuesday"}, 400),
        ({"min_size": "huge"}, 400),
        ({"formats": ["heic"]}, 400),
        ({"under": ["relative/path"]}, 400),
        ({"has_gps": "yes"}, 422),
        ({"colour": "red"}, 422),
    ):
        answer = client.post("/api/search", json={"text": "a watch", "filters": filters})
        assert answer.status_code == status, (filters, answer.text)
        assert answer.headers["content-type"].startswith("application/")
        assert "json" in answer.headers["content-type"]


def test_facets_count_the_collection(
    served: tuple[TestClient, Spyglass], filter_collection: list[Planned]
) -> None:
    client, _ = served
    answer = client.get("/api/facets")
    assert answer.status_code == 200
    facets = answer.json()
    assert facets["total"] == len(filter_collection)
    assert facets["gps"]["yes"] == sum(p.gps for p in filter_collection)
    assert facets["formats"]["PNG"] == sum(p.format == "PNG" for p in filter_collection)
    assert sum(facets["folders"].values()) == len(filter_collection)


def test_the_openapi_document_describes_filters_and_facets(
    served: tuple[TestClient, Spyglass],
) -> None:
    client, _ = served
    document = client.get("/openapi.json").json()
    assert "/api/facets" in document["paths"]
    schemas = document["components"]["schemas"]
    assert set(schemas["SearchFilters"]["properties"]) == {
        "under",
        "after",
        "before",
        "camera",
        "has_gps",
        "formats",
        "min_size",
    }
    assert "filters" in schemas["SearchRequest"]["properties"]


def test_the_one_shot_upload_search_takes_filters_as_json_text(
    served: tuple[TestClient, Spyglass], filter_collection: list[Planned]
) -> None:
    client, engine = served
    watch = next(p for p in filter_collection if p.label == "watch")
    wanted = ids_where(engine, filter_collection, lambda p: p.format == "PNG")
    with watch.path.open("rb") as handle:
        answer = client.post(
            "/api/search/upload",
            files={"image": ("watch.jpg", handle, "image/jpeg")},
            data={"limit": "50", "filters": '{"formats": ["png"]}'},
        )
    assert answer.status_code == 200, answer.text
    assert {r["id"] for r in answer.json()["results"]} == wanted
    with watch.path.open("rb") as handle:
        refused = client.post(
            "/api/search/upload",
            files={"image": ("watch.jpg", handle, "image/jpeg")},
            data={"filters": "formats=png"},
        )
    assert refused.status_code == 400 and "JSON" in refused.json()["error"]["message"]
