"""Who may talk to the server, and how much they may send.

One ASGI middleware, in front of everything:

* **Host check.** On loopback without a token, a request must name this machine in its
  ``Host`` header; a web page that re-binds its own DNS name to 127.0.0.1 cannot read
  the API through a victim's browser.
* **Origin check.** A request that a browser sends from another site's page (its
  ``Origin`` is not this server) is refused, so a form elsewhere cannot make the server
  work, token or not.
* **Token.** With a token, every request for data must carry it, as
  ``Authorization: Bearer <token>`` (API clients) or as the session cookie the page
  gets from ``POST /api/session`` (an ``<img>`` cannot send a header). The cookie holds
  an HMAC of the token, not the token; it is ``HttpOnly`` and ``SameSite=Strict``, so
  no script and no other site can use it. Tokens never travel in URLs (they would end
  up in logs, history and ``Referer`` headers). The page shell and its static code hold
  no data and stay public, so a person can open the page and type the token.
* **Body size.** A body over the limit is refused from its ``Content-Length`` before
  it is read, or as soon as a chunked body passes the limit.
* **Headers.** Every response forbids sniffing, framing and referrers, and the page's
  content security policy allows its own scripts only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spyglass.server.settings import ServerSettings

SESSION_COOKIE = "spyglass_session"
#: Paths open without a token: the page shell and its code (no index data).
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({"/", "/index.html", "/favicon.ico"})
#: Paths that take an image upload; every other body is small JSON.
UPLOAD_PATHS = frozenset({"/api/uploads", "/api/search/upload"})
SMALL_BODY_LIMIT = 256 * 1024
#: POST /api/verify takes a whole case file: up to 10,000 results (about 600 bytes
#: each) and base64 copies of its query images (each up to the upload limit).
CASE_FILE_PATHS = frozenset({"/api/verify"})
CASE_FILE_BODY_LIMIT = 64 * 1024 * 1024
#: Room for the multipart envelope and form fields around an upload.
MULTIPART_OVERHEAD = 256 * 1024

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
        b"script-src 'self'; connect-src 'self'; object-src 'none'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


def session_value(token: str) -> str:
    """The cookie value that stands for ``token`` (an HMAC, so the cookie is not it)."""
    return hmac.new(token.encode(), b"spyglass-session-v1", hashlib.sha256).hexdigest()


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def cookie_value(headers: Headers, name: str) -> str | None:
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
    return None


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a chunked body passes its limit. An HTTPException,
    so that FastAPI passes it through body parsing to the error handlers."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit:,} bytes")


class BodyTimedOut(HTTPException):
    """Raised from ``receive`` when a request body stalls (see ``body_timeout``)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body stalled for {seconds:g} s")


class Guard:
    """The host check, the token check, the body limit and the security headers."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        self.session = session_value(settings.token) if settings.token else None
        self.allowed_hosts = {h.lower() for h in settings.allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    if name.decode() not in extra:
                        extra.append(name.decode(), value.decode())
            await send(message)

        if self.allowed_hosts and _host_name(headers) not in self.allowed_hosts:
            await _refuse(send_with_headers, 400, "wrong-host", "unexpected Host header")
            return
        if not _same_origin(headers):
            await _refuse(
                send_with_headers, 403, "cross-origin", "requests from other sites are refused"
            )
            return
        if self.settings.token and not self.is_public(path) and not self.authorised(headers):
            await _refuse(
                send_with_headers,
                401,
                "unauthorised",
                "this server needs its token: send 'Authorization: Bearer <token>'",
                [(b"www-authenticate", b"Bearer")],
            )
            return

        limit = SMALL_BODY_LIMIT
        if path in UPLOAD_PATHS:
            limit = self.settings.max_upload_bytes + MULTIPART_OVERHEAD
        if path in CASE_FILE_PATHS:
            limit = CASE_FILE_BODY_LIMIT
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            status, code = (413, "too-large") if declared.isdigit() else (400, "bad-request")
            message = f"the request body is over the limit of {limit:,} bytes"
            await _refuse(send_with_headers, status, code, message)
            return

        received = 0

        async def receive_with_limit() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.settings.body_timeout)
            except TimeoutError as error:
                raise BodyTimedOut(self.settings.body_timeout) from error
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, receive_with_limit, send_with_headers)

    def is_public(self, path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)

    def authorised(self, headers: Headers) -> bool:
        assert self.settings.token is not None and self.session is not None
        if token_matches(bearer_token(headers), self.settings.token):
            return True
        return token_matches(cookie_value(headers, SESSION_COOKIE), self.session)


def _same_origin(headers: Headers) -> bool:
    """False for a browser request sent by another site's page. Browsers name the page's
    origin on every cross-origin request and on same-origin POSTs; a form on another
    site can still POST here without CORS, so its Origin is checked against Host."""
    origin = headers.get("origin")
    if origin is None:
        return True  # not from a browser page (curl, scripts), or a same-origin GET
    scheme, separator, netloc = origin.strip().lower().partition("://")
    if not separator or scheme not in ("http", "https"):
        return False  # "null" (sandboxed frames, file:), or a scheme no page of ours has
    host = headers.get("host", "").strip().lower()
    return bool(netloc) and _HOST_HEADER.fullmatch(netloc) is not None and netloc == host


#: A Host header as RFC 9110 allows it: a bracketed IPv6 address or a name/IPv4 address,
#: then an optional port; nothing after it (no "[::1].evil.example", no "localhost:80@evil").
_HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?")


def _host_name(headers: Headers) -> str:
    """The host part of the Host header, or "" when the header is malformed (refused)."""
    match = _HOST_HEADER.fullmatch(headers.get("host", "").strip().lower())
    return match.group(1) if match else ""


async def _refuse(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
