"""The collection map over the real 152-image test index and the real bundled model: the
layout keeps neighbours together, it is computed when the server starts, it reports its
progress, and its groups are named by real words from the model's text encoder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from spyglass.engine import Spyglass
from spyglass.server.atlas import group_points, layout_vectors, reduce_dimensions

from .conftest import Collection, make_app

pytestmark = pytest.mark.slow


def image_vectors(engine: Spyglass) -> tuple[np.ndarray, np.ndarray]:
    store = engine.index.stores[engine.index.info.image_space]
    ids = np.sort(store.visible_owners())
    return ids, store.fetch(ids)


def label_of(engine: Spyglass, collection: Collection, image_id: int) -> str:
    record = engine.index.catalogue.images([image_id])[image_id]
    relative = str(Path(record.path).relative_to(collection.root)) if record.path else ""
    return collection.labels.get(relative, "")


def ids_of(engine: Spyglass, collection: Collection, label: str) -> list[int]:
    found = []
    for path in collection.paths_of(label):
        state = engine.index.catalogue.file(str(path))
        assert state is not None
        found.append(state.image_id)
    return found


def test_layout_keeps_neighbours_together(server_engine: Spyglass) -> None:
    """Each image's 5 nearest on the map are among its 5 nearest in the vector space
    far more often than chance (5 of 151)."""
    _, vectors = image_vectors(server_engine)
    xy = layout_vectors(vectors, seed=0)
    n = len(xy)
    assert xy.shape == (n, 2) and xy.dtype == np.float32
    assert xy.min() >= 0 and xy.max() <= 1 + 1e-6
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    near_in_space = np.argsort(-similarity, axis=1, kind="stable")[:, :5]
    distance = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    near_on_map = np.argsort(distance, axis=1, kind="stable")[:, :5]
    kept = np.mean(
        [len(set(a) & set(b)) / 5 for a, b in zip(near_in_space, near_on_map, strict=True)]
    )
    chance = 5 / (n - 1)
    assert kept > 8 * chance, (kept, chance)


def test_layout_reports_its_progress(server_engine: Spyglass) -> None:
    _, vectors = image_vectors(server_engine)
    seen: list[tuple[str, float]] = []
    layout_vectors(vectors, progress=lambda what, done: seen.append((what, done)))
    shares = [done for _, done in seen]
    assert len(seen) >= 5 and shares == sorted(shares)
    # The layout is the first 90 % of the map's work; grouping and naming follow.
    assert shares[0] == 0.0 and shares[-1] == pytest.approx(0.9)
    assert {"finding nearest neighbours", "placing the images"} <= {what for what, _ in seen}


def test_groups_follow_the_classes(server_engine: Spyglass, collection: Collection) -> None:
    ids, vectors = image_vectors(server_engine)
    labels = group_points(reduce_dimensions(vectors))
    assert 2 <= labels.max() + 1 <= 12
    sizes = np.bincount(labels)
    assert list(sizes) == sorted(sizes, reverse=True)  # numbered largest first
    # Most images share their group with most of their class.
    classes = [label_of(server_engine, collection, int(i)) for i in ids]
    together = []
    for cls in set(classes) - {"", "photo"}:
        members = labels[[c == cls for c in classes]]
        together.append(np.bincount(members).max() / len(members))
    assert np.mean(together) > 0.7, together


def test_map_is_laid_out_when_the_server_starts(server_engine: Spyglass) -> None:
    """Nobody asks for the map, yet it becomes ready: the server started it."""
    app = make_app(server_engine)
    atlas = app.state.spyglass.map
    deadline = time.monotonic() + 120
    while atlas.state(start=False).status != "ready":
        assert time.monotonic() < deadline, atlas.state(start=False)
        time.sleep(0.1)


def test_map_answers_progress_then_named_groups(
    server_engine: Spyglass, collection: Collection
) -> None:
    app = make_app(server_engine, prepare_at_start=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        first = client.get("/api/map")
        assert first.status_code == 202, first.text
        body = first.json()
        assert body["status"] == "computing" and 0.0 <= body["progress"] < 1.0
        assert "152 images" in body["message"]
        progress = [body["progress"]]
        phases = {body["message"]}
        while True:
            response = client.get("/api/map")
            data: dict[str, Any] = response.json()
            if response.status_code == 200:
                break
            progress.append(data["progress"])
            phases.add(data["message"])
            time.sleep(0.02)
        assert progress == sorted(progress)
        # Naming the groups waits for the vocabulary (seconds): it is always seen.
        assert "152 images: naming the groups" in phases and max(progress) >= 0.95, phases
    assert data["status"] == "ready" and data["progress"] == 1.0
    assert len(data["group"]) == len(data["ids"]) == 152
    groups = data["groups"]
    assert 2 <= len(groups) <= 12
    assert [g["id"] for g in groups] == list(range(len(groups)))
    assert sum(g["size"] for g in groups) == 152
    for group in groups:
        assert len(group["words"]) == 3 and all(group["words"]), group
        members = [i for i, g in enumerate(data["group"]) if g == group["id"]]
        assert len(members) == group["size"]
        assert group["x"] == pytest.approx(np.median([data["x"][i] for i in members]), abs=1e-4)
    firsts = [g["words"][0] for g in groups]
    assert len(set(firsts)) == len(firsts)  # no two groups share a name


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("grand_piano", {"grand piano"}),
        ("laptop", {"laptop computer", "notebook computer"}),
        ("umbrella", {"umbrella"}),
        ("starfish", {"starfish"}),
    ],
)
def test_describe_names_a_class_by_its_words(
    client: TestClient,
    server_engine: Spyglass,
    collection: Collection,
    label: str,
    expected: set[str],
) -> None:
    members = ids_of(server_engine, collection, label)
    response = client.post("/api/describe", json={"groups": [members], "words": 3})
    assert response.status_code == 200, response.text
    named = response.json()
    assert named["space"] == "joint"
    words = named["groups"][0]["words"]
    assert expected & set(words), words
    similarity = named["groups"][0]["similarity"]
    assert len(similarity) == 3 and all(-1 <= s <= 1 for s in similarity)


def test_describe_refuses_unknown_ids_and_empty_groups(client: TestClient) -> None:
    unknown = client.post("/api/describe", json={"groups": [[10**9]]})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown-image-id"
    assert client.post("/api/describe", json={"groups": [[]]}).status_code == 422
    assert client.post("/api/describe", json={"groups": [[True]]}).status_code == 422
