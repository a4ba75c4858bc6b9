"""The ASGI app: the JSON API under ``/api``, its OpenAPI document at
``/openapi.json``, and the search page at ``/`` (static files, no build step).

>>> app = create_app(engine, ServerSettings())   # then: uvicorn.run(app, ...)

The factory takes its collaborators; nothing is read from the environment or held in
globals, so tests build as many apps as they like.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spyglass.engine import Spyglass
from spyglass.server.problems import install_error_handlers
from spyglass.server.routes import casework, collection, explain, facets, images, search
from spyglass.server.security import Guard
from spyglass.server.settings import ServerSettings
from spyglass.server.state import ServerState

STATIC_DIR = Path(__file__).parent / "static"


def create_app(engine: Spyglass, settings: ServerSettings) -> FastAPI:
    """An app serving ``engine``'s index. The caller owns the engine (and closes it)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(app.state.spyglass.close)

    app = FastAPI(
        lifespan=lifespan,
        title="Spyglass",
        summary="Text-guided image search over an indexed collection.",
        version=_version(),
        docs_url=None,  # the interactive docs load scripts from a CDN; offline use wins
        redoc_url=None,
        form_limits={"max_files": 1, "max_fields": 200, "max_part_size": 64 * 1024},
    )
    app.state.spyglass = ServerState(engine, settings)
    install_error_handlers(app)
    app.include_router(search.router)
    app.include_router(images.router)
    app.include_router(collection.router)
    app.include_router(facets.router)
    app.include_router(explain.router)
    app.include_router(casework.router)

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(Guard, settings=settings)
    app.add_middleware(HeadAsGet)
    _document_names(app)
    return app


class HeadAsGet:
    """Answer HEAD as GET without the body (RFC 9110 asks every GET resource to take
    HEAD; FastAPI's routes take only the methods they name). Outside the routes, so the
    OpenAPI document does not list every operation twice."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)


def _document_names(app: FastAPI) -> None:
    """List the registered method and re-ranker names in the OpenAPI document. They are
    known only once the method modules are loaded, so the pydantic models cannot say
    them; the engine still checks the names (an unknown one is a 400)."""
    from fastapi.openapi.utils import get_openapi

    from spyglass.query.methods import method_names
    from spyglass.query.rerank import reranker_names

    names = {"method": ["default", *method_names()], "rerank": list(reranker_names())}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            for schema in document.get("components", {}).get("schemas", {}).values():
                properties = schema.get("properties", {})
                if not set(names) <= set(properties):
                    continue  # not a search request
                for field, allowed in names.items():
                    if properties[field].get("type") == "string":
                        properties[field]["enum"] = allowed
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spyglass")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
