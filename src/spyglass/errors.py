"""Typed errors raised by the engine.

The engine never prints or exits. The CLI maps these to one readable line and an exit
code; the HTTP layer maps them to a 4xx JSON body. Every message is written for the
person who typed the command, and names the fix where there is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


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


class ApproximateIndexFailed(IndexProblem):
    """A space's approximate index could not be built or saved (a full disk, a memory
    budget too small, out of memory). Nothing is lost: the rows are durable and the
    space is searched exactly until a later writer builds the index."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        """``reasons``: space -> why its index was not built (one line each)."""
        if len(reasons) == 1:
            ((space, reason),) = reasons.items()
            message = (
                f"the approximate index of space {space!r} was not built: {reason}; its "
                "rows are searched exactly until a later run builds it"
            )
        else:
            told = "; ".join(f"space {space!r}: {why}" for space, why in sorted(reasons.items()))
            message = (
                f"the approximate indexes were not built ({told}); their rows are "
                "searched exactly until a later run builds them"
            )
        super().__init__(message)
        self.reasons = dict(reasons)

    @classmethod
    def of_all(cls, failures: Iterable[ApproximateIndexFailed]) -> ApproximateIndexFailed:
        """One error (one line) for the failures of several spaces."""
        return cls({space: why for failure in failures for space, why in failure.reasons.items()})


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


# --- distributed indexing ----------------------------------------------------------


class ClusterUnreachable(SpyglassError):
    """The Ray cluster that was to embed cannot be reached or joined, or has nowhere to
    run a worker. A network problem, like :class:`CannotServe`: the same exit status."""

    exit_code = 5
    http_status = 503


# --- distributed stores ------------------------------------------------------------


class VectorStoreUnavailable(IndexProblem):
    """A vector store on another machine (Milvus) could not be reached or failed."""

    http_status = 503


# --- case work ---------------------------------------------------------------------


class CaseFileProblem(InvalidQuery):
    """A case file, an audit log or the saved searches cannot be read, written or
    understood."""


class AuditUnavailable(CaseFileProblem):
    """The audit log cannot be written: the search or export it should record is
    refused rather than left unrecorded."""

    http_status = 503
