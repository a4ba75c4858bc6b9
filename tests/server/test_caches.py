"""The server writes nothing into the index folder (``spyglass serve`` opens it
read-only): thumbnails, the map and the vocabulary go to a per-index folder under the
Spyglass cache folder, and everything still works when that cannot be written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from spyglass.engine import Spyglass
from spyglass.server.caches import CacheFolders, index_cache_name

from .conftest import Collection, make_app

pytestmark = pytest.mark.slow


def listing(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, relative, sorted."""
    found = []
    for base, folders, files in os.walk(folder):
        for name in folders + files:
            found.append(str((Path(base) / name).relative_to(folder)))
    return sorted(found)


def use_the_server(app: FastAPI, collection: Collection) -> list[bytes]:
    """Search, make thumbnails of every size, lay out the map, name groups, export."""
    thumbnails = []
    with TestClient(app, base_url="http://127.0.0.1") as client:
        results = client.post("/api/search", json={"text": "a sunflower", "limit": 5}).json()
        ids = [r["id"] for r in results["results"]]
        for size in (128, 256, 512, 1024):
            response = client.get(f"/api/images/{ids[0]}/thumbnail?size={size}")
            assert response.status_code == 200
            thumbnails.append(response.content)
        again = client.get(f"/api/images/{ids[0]}/thumbnail?size=256")
        assert again.content == thumbnails[1]
        assert app.state.spyglass.map.wait(timeout=120).status == "ready"
        assert client.get("/api/map").json()["groups"]
        assert client.post("/api/describe", json={"groups": [ids]}).status_code == 200
        assert (
            client.post("/api/export", json={"text": "a cup", "format": "csv"}).status_code == 200
        )
    return thumbnails


def test_serving_leaves_the_index_folder_as_it_was(
    server_engine: Spyglass, collection: Collection, tmp_path: Path
) -> None:
    index_folder = server_engine.index.folder
    before = listing(index_folder)
    cache = tmp_path / "cache"
    app = make_app(server_engine, cache_dir=cache)
    use_the_server(app, collection)
    assert listing(index_folder) == before
    # The caches are in the cache folder instead, under this index's own folder.
    own = cache / "server" / "indexes" / index_cache_name(server_engine.index)
    assert list((own / "thumbnails").rglob("*.jpg"))
    assert list((own / "map").glob("map-*.npz"))
    assert list((cache / "server" / "vocabulary").glob("bundled-*.npy"))
    # A second server over the same index reads the map from there.
    again = make_app(server_engine, cache_dir=cache, prepare_at_start=False)
    state = again.state.spyglass.map.wait(timeout=60)
    assert state.status == "ready" and state.layout is not None
    first = app.state.spyglass.map.state().layout
    assert first is not None and (state.layout.xy == first.xy).all()


def test_everything_works_when_the_cache_cannot_be_written(
    server_engine: Spyglass, collection: Collection, tmp_path: Path
) -> None:
    index_folder = server_engine.index.folder
    before = listing(index_folder)
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be made below a file\n")
    app = make_app(server_engine, cache_dir=blocker / "cache")
    thumbnails = use_the_server(app, collection)
    assert all(thumbnails)
    assert listing(index_folder) == before
    assert listing(tmp_path) == ["a-file"]


def test_without_a_cache_folder_nothing_is_written(
    server_engine: Spyglass, collection: Collection
) -> None:
    before = listing(server_engine.index.folder)
    app = make_app(server_engine)  # no cache_dir: caches live in memory
    assert app.state.spyglass.caches == CacheFolders(None, None, None)
    use_the_server(app, collection)
    assert listing(server_engine.index.folder) == before


def test_thumbnails_are_kept_in_memory_when_they_cannot_be_written(
    server_engine: Spyglass, collection: Collection, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("no folder below a file\n")
    state = make_app(server_engine, cache_dir=blocker, prepare_at_start=False).state.spyglass
    indexed = server_engine.index.catalogue.file(str(collection.paths_of("cup")[0]))
    assert indexed is not None
    image_id = indexed.image_id
    data, content_hash = state.thumbnails.get(image_id, 128)
    assert state.thumbnails.in_memory(content_hash, 128) == data
    assert state.thumbnails.get(image_id, 128) == (data, content_hash)


def test_cache_folders_are_per_index_and_explicit_ones_win(
    server_engine: Spyglass, tmp_path: Path
) -> None:
    index = server_engine.index
    folders = CacheFolders.for_index(tmp_path, index)
    name = index_cache_name(index)
    assert name.startswith(index.folder.name[:40]) and len(name.rsplit("-", 1)[1]) == 16
    assert folders.thumbnails == tmp_path / "server" / "indexes" / name / "thumbnails"
    assert folders.map == tmp_path / "server" / "indexes" / name / "map"
    assert folders.vocabulary == tmp_path / "server" / "vocabulary"
    explicit = CacheFolders.for_index(
        tmp_path, index, thumbnails=tmp_path / "t", map_folder=tmp_path / "m"
    )
    assert (explicit.thumbnails, explicit.map) == (tmp_path / "t", tmp_path / "m")
