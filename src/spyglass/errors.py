"""Typed errors raised by the engine.

The engine never prints or exits. The CLI maps these to one readable line and an exit
code; the HTTP layer maps them to a 4xx JSON body. Every message is written for the
person who typed the command, and names the fix where there is one.
"""

from __future__ import annotations


class SpyglassError(Exception):
    """Base of every error the engine raises on purpose."""

    #: Exit status the CLI uses for this kind of error.
    exit_code = 1
    #: HTTP status the server uses for this kind of error.
    http_status = 400


# --- the index ---------------------------------------------------------------------


class IndexProblem(SpyglassError):
    """Something is wrong with an index directory."""

    exit_code = 3
    http_status = 409


class IndexNotFound(IndexProblem):
    http_status = 404


class IndexEmpty(IndexProblem):
    pass


class EncoderMismatch(IndexProblem):
    """The index was built by another encoder than the one asked for."""


class IndexLocked(IndexProblem):
    """Another process is writing to the index."""


class IndexCorrupt(IndexProblem):
    pass


# --- models ------------------------------------------------------------------------


class ModelError(SpyglassError):
    exit_code = 4
    http_status = 500


class ModelNotFound(ModelError):
    """No model by that name, path or hub id could be loaded."""


class MissingDependency(ModelError):
    """An optional dependency (an extra) is not installed."""


# --- queries and inputs ------------------------------------------------------------


class QueryError(SpyglassError):
    exit_code = 2
    http_status = 400


class InvalidQuery(QueryError):
    pass


class ImageNotFound(QueryError):
    http_status = 404


class UnknownImageId(QueryError):
    http_status = 404


class ImageRejected(QueryError):
    """A file could not be used as an image.

    ``reason`` is a short stable code (``empty-file``, ``truncated``, ``not-an-image``,
    ``decompression-bomb``, ``unsupported-format``, ``unreadable``, ...) recorded in the
    index's list of skipped files; the message says the same for a person.
    """

    http_status = 422

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- serving -----------------------------------------------------------------------


class CannotServe(SpyglassError):
    """The server cannot listen where it was asked to (port in use, address not here,
    permission denied)."""

    exit_code = 5
    http_status = 500
