"""Searching: by text, image, both; uploads; export; clusters of the top results."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from spyglass.casework.duplicates import CollapsedResult, DuplicateRule
from spyglass.errors import InvalidQuery
from spyglass.query.rerank import collection_size
from spyglass.search import SearchResult
from spyglass.server.admission import is_heavy
from spyglass.server.clusters import cluster_vectors
from spyglass.server.problems import ApiProblem, error_responses
from spyglass.server.queries import BuiltQuery, build_query
from spyglass.server.schemas import (
    ClusterEdge,
    ClusterGroup,
    ClusterNode,
    ClusterRequest,
    ClusterResponse,
    ExportRequest,
    SearchForm,
    SearchRequest,
    SearchResponse,
    SearchResultItem,
    UploadResponse,
)
from spyglass.server.state import ServerState, State

router = APIRouter(prefix="/api", tags=["search"])

SEARCH_ERRORS = error_responses(400, 401, 403, 404, 409, 422)
UPLOAD_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422)


def thumbnail_url(request: Request, image_id: int, size: int | None = None) -> str:
    root = request.scope.get("root_path", "").rstrip("/")
    suffix = f"?size={size}" if size else ""
    return f"{root}/api/images/{image_id}/thumbnail{suffix}"


def result_thumbnail(request: Request, state: ServerState, result: SearchResult) -> str | None:
    """The thumbnail URL of a result, or None where the file will not be served (so the
    page shows why instead of a broken image)."""
    if not state.gate.servable(result.paths):
        return None
    return thumbnail_url(request, result.image_id)


def run_query(
    state: ServerState, built: BuiltQuery, collapse: bool = False
) -> tuple[list[CollapsedResult], bool, int]:
    """Results of a built query (each standing for its near-duplicate group when
    ``collapse``, else for itself alone), whether the ranking goes on after them, and
    how many images were searchable for it (read once: a second read could already
    count images another process committed since, and disagree with the results)."""
    state.prepare_thread()
    query = built.query
    searchable = state.searchable()
    if not query.filters.empty:
        # Paging counts the images the filters keep, not the whole index.
        searchable = min(searchable, state.engine.count_filtered(query.filters))
    if query.offset >= searchable:
        return [], False, searchable
    wanted = min(query.k, searchable - query.offset)
    heavy = is_heavy(query, collection_size(state.engine.index))
    with state.admission.slot(heavy or collapse):
        if collapse:
            results = state.engine.search_collapsed(replace(query, k=wanted), DuplicateRule())
        else:
            results = [CollapsedResult(r) for r in state.engine.search(replace(query, k=wanted))]
    has_more = len(results) >= wanted and query.offset + wanted < searchable
    return results, has_more, searchable


def client_of(request: Request, state: ServerState) -> str:
    """Who asked, for the audit log: the token's fingerprint (never the token), else
    the client's address."""
    if state.settings.token:
        digest = hashlib.sha256(state.settings.token.encode()).hexdigest()[:12]
        return f"token sha256:{digest}"
    client = request.client
    return f"address {client.host if client else 'unknown'}"


def audit(
    request: Request,
    state: ServerState,
    event: str,
    built: BuiltQuery,
    search: SearchRequest,
    results: list[CollapsedResult],
    details: dict[str, Any] | None = None,
) -> None:
    if state.audit is None:
        return
    spec = state.engine.record(built.query, DuplicateRule() if search.collapse_duplicates else None)
    state.audit.record(
        event,
        client=client_of(request, state),
        query={"words": built.description, **spec.to_json(copies=False)},
        results=[r.image_id for r in results],
        details=details,
    )


def result_item(
    request: Request, state: ServerState, rank: int, group: CollapsedResult
) -> SearchResultItem:
    """A result as the API returns it: the group's best member, its thumbnail's URL and
    the group's size (1 where near-duplicates were not collapsed)."""
    r = group.result
    return SearchResultItem(
        rank=rank,
        id=r.image_id,
        path=r.path,
        copies=len(r.paths),
        score=round(r.score, 6),
        rank_score=round(r.rank_score, 6),
        width=r.width,
        height=r.height,
        thumbnail=result_thumbnail(request, state, r),
        group_size=group.group_size,
        duplicates=list(group.duplicates),
    )


def search_response(
    request: Request,
    state: ServerState,
    search: SearchRequest,
    built: BuiltQuery,
    started: float,
) -> SearchResponse:
    groups, has_more, searchable = run_query(state, built, search.collapse_duplicates)
    items = [
        result_item(request, state, search.offset + n + 1, group) for n, group in enumerate(groups)
    ]
    audit(request, state, "search", built, search, groups)
    return SearchResponse(
        query=built.description,
        offset=search.offset,
        limit=search.limit,
        results=items,
        has_more=has_more,
        searchable=searchable,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        upload_id=search.upload_id,
        notes=state.engine.query_notes(built.query),
    )


@router.post("/search", response_model=SearchResponse, responses=SEARCH_ERRORS)
def search(request: Request, body: SearchRequest, state: State) -> SearchResponse:
    """Search by text, by an indexed image or an upload, or both; with negative terms,
    a region of the query image and images marked good or bad. Pages with
    ``offset``/``limit``."""
    started = time.perf_counter()
    built = build_query(body, state.gate, state.uploads)
    return search_response(request, state, body, built, started)


@router.post("/uploads", response_model=UploadResponse, status_code=201, responses=UPLOAD_ERRORS)
def upload(
    image: Annotated[UploadFile, File(description="The query image.")], state: State
) -> UploadResponse:
    """Keep a query image for later searches (in memory; it is never indexed)."""
    kept = state.uploads.add(read_upload(image, state.settings.max_upload_bytes))
    return UploadResponse(
        upload_id=kept.id, width=kept.width, height=kept.height, format=kept.format
    )


@router.post("/search/upload", response_model=SearchResponse, responses=UPLOAD_ERRORS)
def search_by_upload(
    request: Request,
    image: Annotated[UploadFile, File(description="The query image.")],
    form: Annotated[SearchForm, Form()],
    state: State,
) -> SearchResponse:
    """One-shot search by an uploaded image (multipart), with the same options as
    ``POST /api/search``. Page on with ``POST /api/search`` and the ``upload_id``."""
    started = time.perf_counter()
    try:
        region = form.region_box()
    except (ValueError, ValidationError) as error:
        raise InvalidQuery("region must be four fractions: left,top,right,bottom") from error
    kept = state.uploads.add(read_upload(image, state.settings.max_upload_bytes))
    fields = form.model_dump(exclude={"region", "filters"}, exclude_none=True)
    if region is not None:
        fields["region"] = region
    if form.filters is not None and form.filters.strip():
        try:
            fields["filters"] = json.loads(form.filters)
        except ValueError as error:
            raise InvalidQuery("filters must be a JSON object (as in POST /api/search)") from error
    try:
        body = SearchRequest(**fields, upload_id=kept.id)
    except ValidationError as error:  # a 422, like any invalid request: never a 500
        raise RequestValidationError(error.errors()) from error
    built = build_query(body, state.gate, state.uploads)
    return search_response(request, state, body, built, started)


def read_upload(image: UploadFile, limit: int) -> bytes:
    data = image.file.read(limit + 1)
    if len(data) > limit:
        raise ApiProblem(413, "file-too-large", f"the upload is over the limit of {limit:,} bytes")
    return data


@router.post(
    "/export",
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "CSV or JSON file (attachment)",
        },
        **SEARCH_ERRORS,
    },
)
def export(request: Request, body: ExportRequest, state: State) -> Response:
    """The results of a search as a case file (docs/casework.md): JSON, complete, with
    the query as run (query images' SHA-256 and a copy), the model, the index's state,
    the time (UTC) and the tool's version, each result's rank, score, mark, path,
    SHA-256 and MD5, and a digest of itself (``spyglass verify`` checks it); or CSV, the
    same flat, one row per result."""
    built = build_query(body, state.gate, state.uploads)
    groups, _, _ = run_query(state, built, body.collapse_duplicates)
    engine = state.engine
    spec = engine.record(built.query, DuplicateRule() if body.collapse_duplicates else None)
    results: list[CollapsedResult] | list[SearchResult] = (
        groups if body.collapse_duplicates else [g.result for g in groups]
    )
    case = engine.case_file(
        spec,
        results,
        description=built.description,
        request=body.model_dump(exclude={"format"}),
    )
    content = case.render(body.format)
    media = "application/json" if body.format == "json" else "text/csv; charset=utf-8"
    name = case.file_name(body.format)
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
    audit(request, state, "export", built, body, groups, {"file": name, "sha256": digest})
    return Response(
        content,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/clusters", response_model=ClusterResponse, responses=SEARCH_ERRORS)
def clusters(request: Request, body: ClusterRequest, state: State) -> ClusterResponse:
    """The top results (default 50) grouped by k-means over the image vectors, with
    edges from each image to its most similar neighbours (for a graph view)."""
    built = build_query(body, state.gate, state.uploads)
    ranked, _, _ = run_query(state, built, body.collapse_duplicates)
    audit(request, state, "clusters", built, body, ranked)
    results = [g.result for g in ranked]
    space = state.engine.index.info.image_space
    ids = np.array([r.image_id for r in results], np.int64)
    vectors = state.engine.index.stores[space].fetch(ids) if len(ids) else np.zeros((0, 1))
    with state.admission.slot(heavy=True):  # k-means: as costly as a re-ranking
        grouping = cluster_vectors(vectors, clusters=body.clusters, neighbours=body.neighbours)
    nodes = [
        ClusterNode(
            id=r.image_id,
            rank=body.offset + n + 1,
            path=r.path,
            score=round(r.score, 6),
            cluster=int(grouping.labels[n]),
            thumbnail=result_thumbnail(request, state, r),
        )
        for n, r in enumerate(results)
    ]
    edges = [
        ClusterEdge(source=int(ids[a]), target=int(ids[b]), similarity=round(s, 4))
        for a, b, s in grouping.edges
    ]
    groups = [
        ClusterGroup(
            id=c,
            size=int((grouping.labels == c).sum()),
            members=[int(i) for i in ids[grouping.labels == c]],
            centre=int(ids[grouping.centres[c]]),
            cohesion=round(float(grouping.cohesion[c]), 4),
        )
        for c in range(len(grouping.centres))
    ]
    return ClusterResponse(
        query=built.description,
        space=space,
        silhouette=None if grouping.silhouette is None else round(grouping.silhouette, 4),
        nodes=nodes,
        edges=edges,
        clusters=groups,
    )
