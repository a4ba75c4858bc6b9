"""Who may use the server: loopback by default, a token everywhere else, a session
cookie for the page's images, and a Host check against DNS rebinding."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from spyglass.cli import main
from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app
from spyglass.server.security import SESSION_COOKIE
from spyglass.server.settings import is_loopback

from .conftest import Collection

pytestmark = pytest.mark.slow

TOKEN = "correct-horse-battery-staple-42"


@pytest.fixture(scope="module")
def guarded(server_engine: Spyglass) -> Iterator[TestClient]:
    """The app as `spyglass serve --host 0.0.0.0 --token ...` builds it."""
    settings = ServerSettings.for_binding("0.0.0.0", 8000, TOKEN)
    with TestClient(create_app(server_engine, settings), base_url="http://10.1.2.3:8000") as c:
        yield c


DATA_URLS = [
    ("GET", "/api/status"),
    ("GET", "/api/methods"),
    ("GET", "/api/map"),
    ("GET", "/api/images/0"),
    ("GET", "/api/images/0/thumbnail"),
    ("GET", "/api/images/0/original"),
    ("GET", "/api/images/lookup?path=x.jpg"),
    ("POST", "/api/search"),
    ("POST", "/api/export"),
    ("POST", "/api/clusters"),
    ("POST", "/api/explain"),
    ("POST", "/api/uploads"),
    ("GET", "/api/duplicates"),
    ("POST", "/api/verify"),
    ("GET", "/api/saved"),
    ("POST", "/api/saved?name=cups"),
    ("POST", "/api/saved/cups/run"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(("method", "url"), DATA_URLS)
def test_data_needs_the_token(guarded: TestClient, method: str, url: str) -> None:
    guarded.cookies.clear()
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Cookie": f"{SESSION_COOKIE}={TOKEN}"},  # the token itself is not the cookie
    ):
        response = guarded.request(method, url, headers=headers, json={"text": "a cup"})
        assert response.status_code == 401, (url, headers)
        assert response.json()["error"]["code"] == "unauthorised"
        assert response.headers["www-authenticate"] == "Bearer"
    # Tokens in the address are not accepted (they would end up in logs and history).
    joined = "&" if "?" in url else "?"
    assert guarded.request(method, f"{url}{joined}token={TOKEN}").status_code == 401


def test_bearer_token_opens_the_api(guarded: TestClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/api/status", headers=headers).json()["auth"] is True
    search = guarded.post("/api/search", json={"text": "a cup", "limit": 2}, headers=headers)
    assert search.status_code == 200 and len(search.json()["results"]) == 2
    assert guarded.get("/openapi.json", headers=headers).status_code == 200


def test_page_shell_is_public_and_the_session_cookie_serves_images(guarded: TestClient) -> None:
    guarded.cookies.clear()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    hit = guarded.post("/api/search", json={"text": "a cup", "limit": 1}, headers=bearer)
    thumbnail = hit.json()["results"][0]["thumbnail"]
    page = guarded.get("/")
    assert page.status_code == 200 and 'id="token-dialog"' in page.text
    assert guarded.get("/static/js/main.js").status_code == 200
    assert guarded.get("/static/style.css").status_code == 200
    assert guarded.get(thumbnail).status_code == 401

    assert guarded.post("/api/session").status_code == 401
    opened = guarded.post("/api/session", headers={"Authorization": f"Bearer {TOKEN}"})
    assert opened.status_code == 200
    cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie
    # The cookie alone now serves thumbnails (an <img> cannot send a header) and the API.
    assert guarded.get(thumbnail).status_code == 200
    assert guarded.post("/api/search", json={"text": "a cup", "limit": 1}).status_code == 200
    guarded.cookies.set(SESSION_COOKIE, "0" * 64)
    assert guarded.get(thumbnail).status_code == 401
    guarded.cookies.clear()


def test_loopback_without_token_checks_the_host(server_engine: Spyglass) -> None:
    app = create_app(server_engine, ServerSettings.for_binding("127.0.0.1", 8000, None))
    for host, status in (
        ("127.0.0.1:8000", 200),
        ("localhost:8000", 200),
        ("[::1]:8000", 200),
        ("attacker.example:8000", 400),
        ("127.0.0.1.attacker.example", 400),
    ):
        with TestClient(app, base_url=f"http://{host}") as client:
            response = client.get("/api/methods")
            assert response.status_code == status, host
            if status == 400:
                assert response.json()["error"]["code"] == "wrong-host"


def test_other_sites_pages_are_refused(client: TestClient, collection: Collection) -> None:
    photo = (collection.root / "photos" / "07_Kite.jpg").read_bytes()
    for origin in ("http://attacker.example", "null", "http://127.0.0.1:9999"):
        headers = {"Origin": origin}
        response = client.post("/api/uploads", files={"image": ("k.jpg", photo)}, headers=headers)
        assert response.status_code == 403 and response.json()["error"]["code"] == "cross-origin"
        search = client.post("/api/search", json={"text": "a cup"}, headers=headers)
        assert search.status_code == 403
    # The page itself sends its own origin.
    same = client.post(
        "/api/search", json={"text": "a cup", "limit": 1}, headers={"Origin": "http://127.0.0.1"}
    )
    assert same.status_code == 200


def test_security_headers(client: TestClient) -> None:
    for url in ("/", "/api/methods", "/api/images/0/original", "/static/js/main.js"):
        headers = client.get(url).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["referrer-policy"] == "no-referrer"


def test_settings_refuse_an_open_binding_without_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    with pytest.raises(ValueError, match="token"):
        ServerSettings(host="0.0.0.0")
    with pytest.raises(ValueError, match="16 characters"):
        ServerSettings(host="0.0.0.0", token="short")
    assert ServerSettings(host="0.0.0.0", token=TOKEN).token == TOKEN


def test_serve_command_refuses_before_starting(server_engine: Spyglass) -> None:
    runner = CliRunner()
    index = str(server_engine.index.folder)
    result = runner.invoke(
        main, ["serve", "--index", index, "--host", "0.0.0.0"], env={"SPYGLASS_TOKEN": ""}
    )
    assert result.exit_code == 2 and "--token" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        main,
        ["serve", "--index", index, "--host", "0.0.0.0", "--token", "short"],
        env={"SPYGLASS_TOKEN": ""},
    )
    assert result.exit_code == 2 and "16 characters" in result.output
    result = runner.invoke(main, ["serve", "--index", index + "-missing"])
    assert result.exit_code == 3 and result.output.startswith("error: no index")
