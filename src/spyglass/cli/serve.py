"""`spyglass serve`: the HTTP API and the search page over one index."""

from __future__ import annotations

import errno
import socket
from dataclasses import replace
from pathlib import Path

import click
from click.core import ParameterSource

from spyglass.cli.options import (
    device_option,
    index_option,
    memory_budget_option,
    runtime_settings,
    vector_search_settings,
)
from spyglass.errors import CannotServe, MissingDependency


def bind_listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free port), for uvicorn to listen on.

    Bound here, before the model loads and before anything is announced, so that a busy
    port is one line and exit status 5, not "open http://..." followed by a failure."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise CannotServe(f"cannot serve on {host}: {exc.strerror}") from exc
    listener = socket.socket(family, kind, protocol)
    # As uvicorn does: a restarted server may take its port back at once. A port another
    # process listens on stays refused.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is in use; choose another with --port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            message = f"{host} is not an address of this machine; choose another with --host"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            message = (
                f"not permitted to listen on port {port} of {host} (ports below 1024 need "
                "privileges); choose another with --port"
            )
        else:
            message = f"cannot listen on port {port} of {host}: {exc.strerror or exc}"
        raise CannotServe(message) from exc
    return listener


def read_token_file(path: str, ctx: click.Context) -> str:
    """The first line of ``path``, stripped; a usage error if it cannot be read or is empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.readline().strip()
    except OSError as error:
        raise click.UsageError(f"cannot read --token-file {path}: {error.strerror}", ctx) from error
    if not token:
        raise click.UsageError(f"--token-file {path} is empty", ctx)
    return token


@click.command("serve")
@index_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--token",
    envvar="SPYGLASS_TOKEN",
    default=None,
    help="Secret every request must carry (Authorization: Bearer ...; the page asks for "
    "it once). Required to bind a non-loopback address. A value given here is visible "
    "to other users in the process list: prefer SPYGLASS_TOKEN or --token-file.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read the token from the first line of this file (kept out of the process list).",
)
@click.option(
    "--max-upload-mb",
    type=click.IntRange(1, 2047),
    default=32,
    show_default=True,
    help="Largest query image accepted.",
)
@click.option(
    "--follow-links",
    is_flag=True,
    help="Also serve indexed files whose symbolic links lead out of the indexed folders.",
)
@click.option(
    "--map-points",
    type=click.IntRange(10, 1_000_000),
    default=20_000,
    show_default=True,
    help="Most images drawn on the collection map (a random sample beyond).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="Threads one request may use for the model and the vector search (default: 1, "
    "or SPYGLASS_THREADS; requests run in parallel anyway).",
)
@click.option(
    "--head-timeout",
    type=click.FloatRange(0.5, 600),
    default=10.0,
    show_default=True,
    help="Seconds a connection has to send a complete request head; slower ones are "
    "closed, so stalled clients cannot hold the server's connections.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.5, 3600),
    default=30.0,
    show_default=True,
    help="Seconds a request body may stall before the request is answered 408.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 100_000),
    default=200,
    show_default=True,
    help="Connections and requests served at once; more are answered 503.",
)
@click.option(
    "--cores",
    type=click.IntRange(1, 1024),
    default=None,
    help="Cores the searches share (default: the CPUs this process may use): that many "
    "compute at once, cheap ones (text) before costly ones (image embedding, marks, "
    "re-ranking), which always keep one; the others queue.",
)
@click.option(
    "--refresh-seconds",
    type=click.FloatRange(0.1, 86_400),
    default=10.0,
    show_default=True,
    help="Seconds between looks for images that another process (a running `spyglass "
    "index`) has committed to the index; each look is one small catalogue query.",
)
@click.option(
    "--audit",
    "audit_log",
    type=click.Path(dir_okay=False),
    envvar="SPYGLASS_AUDIT_LOG",
    default=None,
    help="Append every search and export to this audit log (JSON Lines, each entry "
    "chained to the one before by SHA-256; check it with `spyglass audit verify`). "
    "Default: no log (or SPYGLASS_AUDIT_LOG).",
)
@device_option
@memory_budget_option
def serve_command(
    index_dir: str,
    host: str,
    port: int,
    token: str | None,
    token_file: str | None,
    max_upload_mb: int,
    follow_links: bool,
    map_points: int,
    threads: int | None,
    head_timeout: float,
    body_timeout: float,
    max_connections: int,
    cores: int | None,
    refresh_seconds: float,
    audit_log: str | None,
    device: str | None,
    memory_budget: int | None,
) -> None:
    """Serve the search page and the JSON API (OpenAPI at /openapi.json)."""
    try:
        import uvicorn

        from spyglass.server import ServerSettings, create_app
        from spyglass.server.process import limit_blas_threads, limit_malloc_arenas
        from spyglass.server.protocol import with_head_timeout
        from spyglass.server.settings import MIN_TOKEN_LENGTH, is_loopback
    except ImportError as error:
        raise MissingDependency(
            f"serving needs the server extra ({error.name} is missing): "
            "pip install 'spyglass[server]'"
        ) from error
    from spyglass.engine import Spyglass

    token = token or None
    ctx = click.get_current_context()
    if token_file is not None:
        if token and ctx.get_parameter_source("token") is ParameterSource.COMMANDLINE:
            raise click.UsageError("give the token one way: --token or --token-file", ctx)
        token = read_token_file(token_file, ctx)  # wins over SPYGLASS_TOKEN
    if not is_loopback(host) and not token:
        raise click.UsageError(
            f"--host {host} exposes the index to the network: give --token (or set "
            "SPYGLASS_TOKEN), e.g. --token $(python -c "
            "'import secrets; print(secrets.token_urlsafe())')",
            ctx,
        )
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise click.UsageError(f"--token must be at least {MIN_TOKEN_LENGTH} characters long", ctx)
    runtime = runtime_settings(device)
    threads = threads or runtime.threads or 1
    limit_malloc_arenas()  # before the model's and the server's threads start
    limit_blas_threads(threads)
    with bind_listening_socket(host, port) as listener:
        port = listener.getsockname()[1]  # the one chosen, for --port 0
        settings = ServerSettings.for_binding(
            host,
            port,
            token,
            max_upload_bytes=max_upload_mb * 1024 * 1024,
            follow_links_out=follow_links,
            map_max_points=map_points,
            search_threads=threads,
            cache_dir=runtime.cache_dir,
            body_timeout=body_timeout,
            cores=cores,
            refresh_seconds=refresh_seconds,
            audit_log=Path(audit_log).expanduser().absolute() if audit_log else None,
        )
        with Spyglass.open(
            index_dir,
            runtime=replace(runtime, threads=threads),
            vector_search=vector_search_settings(memory_budget, runtime),
        ) as engine:
            app = create_app(engine, settings)
            shown = f"[{host}]" if ":" in host else host
            count = engine.index.count()
            click.echo(f"serving {count:,} images from {engine.index.folder}")
            click.echo(f"open http://{shown}:{port}/   (Ctrl+C stops)")
            if token:
                click.echo(
                    "the page asks for the token once; API clients send it as a Bearer token"
                )
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                http=with_head_timeout(head_timeout),
                limit_concurrency=max_connections,
                timeout_keep_alive=5,
                # A request head larger than this is refused (h11 would buffer it all).
                h11_max_incomplete_event_size=64 * 1024,
            )
            try:
                uvicorn.Server(config).run(sockets=[listener])
            except KeyboardInterrupt:
                # uvicorn stops gracefully on Ctrl+C, then raises it again: the way to stop.
                click.echo("stopped", err=True)
                ctx.exit(130)
