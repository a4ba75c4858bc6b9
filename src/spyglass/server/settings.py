"""Typed settings of the HTTP server, built once at the entry point (``spyglass serve``
or a test) and passed to :func:`spyglass.server.create_app`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

#: Thumbnail edge lengths the server makes (longest side, pixels). A fixed set keeps the
#: disk cache bounded: a client cannot ask for every size between 1 and 10,000.
THUMBNAIL_SIZES = (128, 256, 512, 1024)

#: The shortest token accepted: a token guards an index of evidence on a network.
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSettings:
    """How the server binds, authenticates and limits what clients send."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: Every request must carry it (``Authorization: Bearer ...`` or the page's session
    #: cookie). Required when ``host`` is not a loopback address.
    token: str | None = None
    #: Largest uploaded query image, in bytes.
    max_upload_bytes: int = 32 * 1024 * 1024
    #: Largest uploaded query image, in pixels (checked from its header: bomb guard).
    max_upload_pixels: int = 64_000_000
    #: Uploaded query images kept in memory for paging and re-ranking (never indexed).
    upload_slots: int = 64
    #: Seconds a request body may pause between two of its chunks before the request is
    #: answered 408 and its connection closed (a client stalled mid-upload).
    body_timeout: float = 30.0
    #: The Spyglass cache folder (``RuntimeSettings.cache_dir``). The server keeps its
    #: thumbnails, map layouts and embedded vocabulary under ``<cache_dir>/server/``, one
    #: folder per index (see :mod:`spyglass.server.caches`), never in the index folder.
    #: ``None``: nothing is written; they are kept in memory while the server runs.
    cache_dir: Path | None = None
    #: Where thumbnails are cached; ``None``: the per-index folder under ``cache_dir``.
    thumbnail_dir: Path | None = None
    #: Where the collection map is cached; ``None``: the per-index folder under ``cache_dir``.
    map_dir: Path | None = None
    #: The map shows at most this many images (a seeded random sample beyond that).
    map_max_points: int = 20_000
    #: Threads the map's layout may use (it runs next to searches).
    map_threads: int = 1
    #: Lay out the map and embed the vocabulary in the background as soon as the server
    #: starts, so that the map is there when the page asks for it.
    prepare_at_start: bool = True
    #: Serve files whose real location (symbolic links resolved) lies outside the
    #: indexed folders. Off: a link out of the indexed folders is refused.
    follow_links_out: bool = False
    #: Host names the server answers to; empty: any. On loopback without a token this
    #: stops DNS-rebinding pages from reading the API through the victim's browser.
    allowed_hosts: tuple[str, ...] = field(default=())
    #: Seconds between checks for images another process added to the index.
    refresh_seconds: float = 10.0
    #: Threads one request's vector search may use. Requests already run in parallel
    #: in uvicorn's thread pool; on a busy machine one OpenMP thread per request is
    #: many times faster than several that wait for each other (docs/bench-api.md).
    search_threads: int = 1
    #: Cores the server's searches share (None: the CPUs this process may use). Sets
    #: how many searches compute at once (see :mod:`spyglass.server.admission`).
    cores: int | None = None
    #: Append every search and export to this audit log (JSON Lines, chained by
    #: SHA-256; see :mod:`spyglass.casework.audit`). ``None``: no log.
    audit_log: Path | None = None

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token must be at least {MIN_TOKEN_LENGTH} characters long")
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"binding to {self.host} exposes the index to the network: set a token"
            )
        if not 1 <= self.max_upload_bytes <= 1 << 31:
            raise ValueError("max_upload_bytes must be between 1 byte and 2 GiB")

    @classmethod
    def for_binding(
        cls, host: str, port: int, token: str | None, **options: object
    ) -> ServerSettings:
        """Settings for a server bound to ``host:port``: on loopback without a token the
        Host header must name this machine."""
        hosts: tuple[str, ...] = ()
        if is_loopback(host) and not token:
            hosts = ("127.0.0.1", "localhost", "[::1]", "::1", host)
        return cls(host=host, port=port, token=token or None, allowed_hosts=hosts, **options)  # type: ignore[arg-type]
