"""Every bad input of the issue gets a 4xx with a short JSON error, and the server goes
on serving: over-size uploads, non-images, a decompression bomb, malformed JSON,
unknown ids, bad paging, regions outside the image, and paths that try to escape."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.store.index import Index

from .conftest import Collection, make_app

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def still_serving(client: TestClient) -> Iterator[None]:
    """After each hostile request, an ordinary search still works."""
    yield
    response = client.post("/api/search", json={"text": "a cup", "limit": 3})
    assert response.status_code == 200 and len(response.json()["results"]) == 3


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    assert 0 < len(error["message"]) <= 300 and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (RGB, 8 bits)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, name: str = "q.png", kind: str = "image/png") -> Any:
    return client.post("/api/uploads", files={"image": (name, data, kind)})


# -- uploads --------------------------------------------------------------------------


def test_upload_over_the_size_limit(client: TestClient) -> None:
    big = noise_png(1000)  # ~3 MB of real PNG; the test app allows 2 MiB
    assert len(big) > 2 * 1024 * 1024
    assert_error(upload(client, big), 413)
    one_shot = client.post(
        "/api/search/upload", files={"image": ("q.png", big, "image/png")}, data={"limit": "3"}
    )
    assert_error(one_shot, 413)


def test_chunked_upload_over_the_limit_is_cut_off(client: TestClient) -> None:
    boundary = "spyglass-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield head
        for _ in range(40):
            yield b"\x00" * 100_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/api/uploads",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 413)


@pytest.mark.parametrize(
    ("data", "name", "kind", "code"),
    [
        (b"just some text, not pixels\n", "notes.jpg", "image/jpeg", "not-an-image"),
        (b"", "empty.png", "image/png", "empty-file"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 4, "doc.jpg", "image/jpeg", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "x.svg", "image/svg+xml", None),
    ],
)
def test_non_images_are_refused(
    client: TestClient, data: bytes, name: str, kind: str, code: str | None
) -> None:
    assert_error(upload(client, data, name, kind), 422, code)


def test_truncated_jpeg_is_refused(client: TestClient, collection: Collection) -> None:
    data = (collection.root / "photos" / "07_Kite.jpg").read_bytes()
    error = assert_error(upload(client, data[: len(data) // 3], "cut.jpg", "image/jpeg"), 422)
    assert error["code"] in ("truncated", "corrupt")


def test_decompression_bomb_is_refused_before_decoding(client: TestClient) -> None:
    data = bomb_png()
    assert len(data) < 100_000
    error = assert_error(upload(client, data), 422, "decompression-bomb")
    assert "900000000" in error["message"].replace(",", "") or "30000x30000" in error["message"]


def test_upload_without_a_file_or_not_multipart(client: TestClient) -> None:
    assert_error(client.post("/api/uploads", data={"x": "1"}), 422)
    assert_error(client.post("/api/uploads", json={"image": "data"}), 422)


# -- JSON and fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"text": "a cup",', b"\xff\xfe\x00", b'{"text": "a cup"} trailing'],
)
def test_malformed_json(client: TestClient, raw: bytes) -> None:
    response = client.post("/api/search", content=raw, headers={"Content-Type": "application/json"})
    error = assert_error(response, 400)
    assert error["code"] in ("malformed-json", "malformed-body")


@pytest.mark.parametrize(
    "body",
    [
        [],
        "a cup",
        {"text": 42},
        {"text": "a cup", "unknown_field": 1},
        {"text": "a cup", "image_weight": 1.5},
        {"text": "x" * 2001},
        {"text": "a cup", "exclude": ["y" * 501]},
        {"text": "a cup", "positives": [-1]},
        {"text": "a cup", "positives": [2**70]},
        {"text": "a cup", "image_id": 1, "upload_id": "abc"},
    ],
)
def test_invalid_fields(client: TestClient, body: Any) -> None:
    assert_error(client.post("/api/search", json=body), 422, "invalid-request")


def test_not_a_number_is_refused(client: TestClient) -> None:
    raw = b'{"text": "a cup", "image_weight": NaN}'
    response = client.post("/api/search", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 422)


@pytest.mark.parametrize("body", [{}, {"text": "   "}, {"exclude": ["a cup"]}])
def test_empty_queries(client: TestClient, body: dict[str, Any]) -> None:
    assert_error(client.post("/api/search", json=body), 400, "invalid-query")


@pytest.mark.parametrize(
    "paging",
    [
        {"limit": -1},
        {"limit": 0},
        {"limit": 1001},
        {"limit": 10**12},
        {"offset": -1},
        {"offset": 10**12},
        {"limit": "many"},
    ],
)
def test_bad_paging(client: TestClient, paging: dict[str, Any]) -> None:
    error = assert_error(client.post("/api/search", json={"text": "a cup", **paging}), 422)
    assert next(iter(paging)) in error["message"]


def test_unknown_names(client: TestClient) -> None:
    assert_error(
        client.post("/api/search", json={"text": "a cup", "method": "nope"}), 400, "invalid-query"
    )
    assert_error(
        client.post("/api/search", json={"text": "a cup", "rerank": "nope"}), 400, "invalid-query"
    )


# -- unknown ids --------------------------------------------------------------------


def test_unknown_ids(client: TestClient) -> None:
    missing = 10**9
    assert_error(client.post("/api/search", json={"image_id": missing}), 404, "unknown-image-id")
    assert_error(
        client.post("/api/search", json={"text": "a cup", "positives": [missing]}),
        404,
        "unknown-image-id",
    )
    assert_error(client.get(f"/api/images/{missing}"), 404, "unknown-image-id")
    assert_error(client.get(f"/api/images/{missing}/thumbnail"), 404)
    assert_error(client.get(f"/api/images/{missing}/original"), 404)
    assert_error(client.get("/api/images/99999999999999999999999"), 422)
    assert_error(client.get("/api/images/-3"), 422)
    assert_error(client.get("/api/images/1/thumbnail?size=300"), 422)
    assert_error(
        client.post("/api/search", json={"upload_id": "no-such-upload"}), 404, "unknown-upload"
    )
    assert_error(client.get("/api/no-such-endpoint"), 404)
    assert_error(client.delete("/api/search"), 405)


# -- regions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "status"),
    [
        ({"left": 0.2, "top": 0.2, "right": 1.5, "bottom": 0.8}, 422),
        ({"left": -0.1, "top": 0.2, "right": 0.5, "bottom": 0.8}, 422),
        ({"left": 0.6, "top": 0.2, "right": 0.4, "bottom": 0.8}, 400),
        ({"left": 0.2, "top": 0.5, "right": 0.6, "bottom": 0.5}, 400),
        ({"left": 0.2, "top": 0.2, "right": 0.6}, 422),
    ],
)
def test_regions_outside_the_image(
    client: TestClient, region: dict[str, float], status: int
) -> None:
    assert_error(client.post("/api/search", json={"image_id": 0, "region": region}), status)


def test_region_without_an_image(client: TestClient) -> None:
    region = {"left": 0.1, "top": 0.1, "right": 0.5, "bottom": 0.5}
    response = client.post("/api/search", json={"text": "a cup", "region": region})
    assert_error(response, 400, "invalid-query")


def test_region_in_a_form_upload(client: TestClient, collection: Collection) -> None:
    data = (collection.root / "photos" / "07_Kite.jpg").read_bytes()
    for region in ("0.1,0.1,2,0.5", "a,b,c,d", "0.5,0.5,0.1,0.9"):
        response = client.post(
            "/api/search/upload",
            files={"image": ("k.jpg", data, "image/jpeg")},
            data={"region": region},
        )
        assert 400 <= response.status_code < 500, response.text


# -- paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("../../../../etc/passwd", "path-escape"),
        ("photos/../../outside/not-in-the-collection.jpg", "path-escape"),
        ("/etc/passwd", "outside-index"),
        ("/", "outside-index"),
        ("photos\\..\\..\\secret.jpg", "path-escape"),
    ],
)
def test_paths_that_escape(client: TestClient, path: str, code: str) -> None:
    assert_error(client.get("/api/images/lookup", params={"path": path}), 403, code)
    assert_error(client.post("/api/search", json={"image_path": path}), 403, code)


def test_paths_inside_but_not_indexed(client: TestClient, collection: Collection) -> None:
    for path in (str(collection.root / "photos" / "missing.jpg"), "photos/missing.jpg"):
        assert_error(client.get("/api/images/lookup", params={"path": path}), 404)
    nul = client.get("/api/images/lookup", params={"path": "a\x00b.jpg"})
    assert nul.status_code in (400, 422) and nul.json()["error"]["code"] != "internal-error"
    skipped = str(collection.root / "notes.jpg")  # seen but skipped: not an image
    assert_error(client.get("/api/images/lookup", params={"path": skipped}), 404)


def test_symbolic_link_out_of_the_collection_is_never_served(
    client: TestClient, server_engine: Spyglass, collection: Collection
) -> None:
    state = server_engine.index.catalogue.file(str(collection.link_out))
    assert state is not None  # indexing follows links; serving does not
    image_id = state.image_id
    for response in (
        client.get(f"/api/images/{image_id}/original"),
        client.get(f"/api/images/{image_id}/thumbnail"),
        client.get(f"/api/images/{image_id}/thumbnail?size=1024"),
        client.get("/api/images/lookup", params={"path": str(collection.link_out)}),
        client.get("/api/images/lookup", params={"path": "linked-out.jpg"}),
        client.post(
            "/api/search",
            json={
                "image_id": image_id,
                "region": {"left": 0, "top": 0, "right": 0.5, "bottom": 0.5},
            },
        ),
    ):
        assert_error(response, 403, "link-outside-index")
    # Search results still list it (it is indexed) but offer no thumbnail.
    results = client.post("/api/search", json={"text": "a cup", "limit": 200}).json()["results"]
    listed = {r["id"]: r["thumbnail"] for r in results}
    assert listed[image_id] is None
    assert all(url for i, url in listed.items() if i != image_id)
    assert collection.outside.read_bytes() not in (
        client.get(f"/api/images/{i}/original").content for i in range(3)
    )


def test_url_tricks_on_static_and_api(client: TestClient) -> None:
    for url in (
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/api/images/..%2F..%2Fetc%2Fpasswd",
    ):
        response = client.get(url)
        assert 400 <= response.status_code < 500
        assert b"root:" not in response.content


# -- files that change under the server -----------------------------------------------


def test_changed_and_deleted_files(
    tmp_path: Path, bundled: Encoder, collection: Collection
) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    sources = collection.paths_of("watch")[:2]
    for source in sources:
        shutil.copyfile(source, folder / source.name)
    writer = Spyglass(bundled, Index.open_for_writing(tmp_path / "index", bundled.info))
    writer.add([str(folder)])
    writer.close()
    engine = Spyglass(bundled, Index.open(tmp_path / "index"))
    try:
        with TestClient(make_app(engine), base_url="http://127.0.0.1") as small:
            changed, deleted = (folder / s.name for s in sources)
            changed_id = small.get("/api/images/lookup", params={"path": str(changed)}).json()["id"]
            deleted_id = small.get("/api/images/lookup", params={"path": str(deleted)}).json()["id"]
            shutil.copyfile(collection.paths_of("cup")[0], changed)  # other bytes, same path
            os.remove(deleted)
            assert_error(small.get(f"/api/images/{changed_id}/original"), 409, "file-changed")
            assert_error(small.get(f"/api/images/{changed_id}/thumbnail"), 409, "file-changed")
            assert_error(small.get(f"/api/images/{deleted_id}/thumbnail"), 404, "file-missing")
            ok = small.post("/api/search", json={"text": "a watch", "limit": 2})
            assert ok.status_code == 200
    finally:
        engine.close()
