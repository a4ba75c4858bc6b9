"""Every failure leaves the server as ``{"error": {"code": ..., "message": ...}}``.

Engine errors carry their HTTP status (:attr:`SpyglassError.http_status`); the HTTP
layer adds its own (:class:`ApiProblem`: unauthorised, too large, outside the indexed
folders). Validation errors become one short line naming the field. Nothing a client
sends can produce a traceback or a 5xx; an unexpected failure is logged here and
answered with a generic 500 body.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from spyglass.errors import ImageRejected, MissingDependency, SpyglassError

log = logging.getLogger("spyglass.server")


class ErrorDetail(BaseModel):
    #: Stable, short, kebab-case: ``invalid-query``, ``unknown-image-id``, ...
    code: str
    #: One sentence for a person.
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiProblem(Exception):
    """A refusal decided by the HTTP layer itself (not by the engine)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def error_code(error: SpyglassError) -> str:
    """``UnknownImageId`` -> ``unknown-image-id``; image rejections give their reason."""
    if isinstance(error, ImageRejected):
        return error.reason
    return re.sub(r"(?<!^)(?=[A-Z])", "-", type(error).__name__).lower()


def _short(message: str, limit: int = 300) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def _validation_message(errors: list[Any]) -> tuple[str, str]:
    if any(e.get("type") == "json_invalid" for e in errors):
        return "malformed-json", "the request body is not valid JSON"
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "invalid-request", "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def on_problem(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiProblem)
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return error_response(error.status, error.code, error.message, headers)

    @app.exception_handler(SpyglassError)
    async def on_engine_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, SpyglassError)
        status = error.http_status
        if isinstance(error, MissingDependency):
            status = 501
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, error)
        return error_response(status, error_code(error), _short(str(error)))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        code, message = _validation_message(list(error.errors()))
        status = 400 if code == "malformed-json" else 422
        return error_response(status, code, _short(message))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        codes = {
            400: "bad-request",
            404: "not-found",
            405: "method-not-allowed",
            408: "request-timeout",
            413: "too-large",
        }
        code = codes.get(error.status_code, "http-error")
        message = str(error.detail)
        if error.status_code == 400 and "parsing the body" in message:
            # FastAPI's words for a body that is not even text (bad UTF-8, a cut multipart)
            code, message = "malformed-body", "the request body could not be parsed"
        return error_response(error.status_code, code, _short(message), dict(error.headers or {}))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "internal-error", "the server failed; see its log")


#: OpenAPI ``responses`` entries for the error statuses an endpoint may answer.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    about = {
        400: "Bad query or malformed request",
        401: "Missing or wrong token",
        403: "Outside the indexed folders",
        404: "Unknown image or upload",
        409: "The index or file changed",
        413: "Upload too large",
        415: "Not a multipart upload",
        422: "Invalid field, or an image that cannot be used",
    }
    return {s: {"model": ErrorBody, "description": about.get(s, "Error")} for s in statuses}
