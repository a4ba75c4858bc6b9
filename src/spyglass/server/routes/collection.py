"""The index as a whole: status, query methods, the 2D map and its legend, words for
groups of images; and the page's session."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Response

from spyglass.engine import Spyglass
from spyglass.query.methods import DEFAULT_METHOD, DEFAULT_METHODS, TASKS, method_names
from spyglass.query.rerank import (
    collection_size,
    describe_default_reranker,
    reranker_names,
    resolve_reranker,
)
from spyglass.server.atlas import MapLayout
from spyglass.server.collection_schemas import (
    DescribeRequest,
    DescribeResponse,
    GroupDescription,
    MapGroupItem,
    MapLayoutResponse,
)
from spyglass.server.problems import ApiProblem, error_responses
from spyglass.server.schemas import (
    MethodsResponse,
    SessionResponse,
    SkippedFileItem,
    StatusResponse,
)
from spyglass.server.security import SESSION_COOKIE, session_value
from spyglass.server.state import ServerState, State

router = APIRouter(prefix="/api", tags=["collection"])


@router.get("/status", response_model=StatusResponse, responses=error_responses(401, 422))
def status(
    state: State,
    skipped: Annotated[int, Query(ge=0, le=10_000, description="Skipped files to list.")] = 100,
) -> StatusResponse:
    """Counts, model, indexed folders and the files that were skipped (with reasons)."""
    state.refresh_if_due()
    report = Spyglass.status_of(state.engine.index, skipped_limit=skipped)
    return StatusResponse(
        index=report.folder,
        images=report.images,
        unique_images=report.unique_images,
        embedded=report.embedded,
        skipped=report.skipped,
        model=report.model,
        model_version=report.model_version,
        spaces=report.spaces,
        roots=report.roots,
        skipped_files=[
            SkippedFileItem(path=s.path, reason=s.reason, message=s.message)
            for s in report.skipped_files
        ],
        auth=state.settings.token is not None,
        audit=state.audit is not None,
    )


@router.get("/methods", response_model=MethodsResponse, responses=error_responses(401))
def methods(state: State) -> MethodsResponse:
    """Query methods (``method``) and re-rankers (``rerank``) a search may name, and what
    ``default`` means for each kind of query on this index (the default re-ranking
    depends on how many images it holds)."""
    size = collection_size(state.engine.index)
    return MethodsResponse(
        methods=method_names(),
        default_method=DEFAULT_METHOD,
        rerankers=reranker_names(),
        default_methods=dict(DEFAULT_METHODS),
        default_rerankers={task: resolve_reranker("default", task, size) for task in TASKS},
        default_reranker_rules={task: describe_default_reranker(task) for task in TASKS},
    )


@router.get(
    "/map",
    response_model=MapLayoutResponse,
    responses={
        202: {"model": MapLayoutResponse, "description": "Still computing"},
        **error_responses(401),
    },
)
def collection_map(state: State, response: Response) -> MapLayoutResponse:
    """Every indexed image (or a sample above the server's limit) placed in 2D by
    t-SNE over its image vectors, in groups named by words. The server starts computing
    it when it starts; until it is ready the answer is 202 ``computing`` with the
    ``progress`` so far: ask again."""
    current = state.map.state()
    if current.status == "computing":
        response.status_code = 202
    if current.layout is None:
        return MapLayoutResponse(
            status=current.status,  # type: ignore[arg-type]
            message=current.message,
            progress=current.progress,
        )
    layout = current.layout
    return MapLayoutResponse(
        no_preview=unserved_ids(state, layout),
        status="ready",
        count=len(layout.ids),
        total=layout.total,
        ids=layout.ids.tolist(),
        x=[round(v, 5) for v in layout.xy[:, 0].tolist()],
        y=[round(v, 5) for v in layout.xy[:, 1].tolist()],
        seconds=round(layout.seconds, 2),
        layout="PCA (50) + t-SNE over the image space",
        progress=1.0,
        group=layout.labels.tolist(),
        groups=[
            MapGroupItem(
                id=g,
                size=group.size,
                words=list(group.words),
                x=round(group.x, 5),
                y=round(group.y, 5),
            )
            for g, group in enumerate(layout.groups)
        ],
    )


@router.post(
    "/describe", response_model=DescribeResponse, responses=error_responses(400, 401, 404, 422)
)
def describe(body: DescribeRequest, state: State) -> DescribeResponse:
    """Name each group of indexed images by the vocabulary words (ImageNet class names)
    nearest the group's mean direction in the text space, as the map's legend does."""
    index = state.engine.index
    space = index.info.text_space
    store = index.stores[space]
    centres = []
    for members in body.groups:
        ids = np.array(sorted(set(members)), np.int64)
        try:
            vectors = store.fetch(ids)
        except KeyError as error:
            raise ApiProblem(404, "unknown-image-id", str(error.args[0])) from error
        centres.append(vectors.mean(axis=0))
    names = state.vocabulary.name(np.array(centres), body.words)
    return DescribeResponse(
        vocabulary="ImageNet-1k class names",
        space=space,
        groups=[
            GroupDescription(words=list(n.words), similarity=list(n.similarity)) for n in names
        ],
    )


def unserved_ids(state: ServerState, layout: MapLayout) -> list[int]:
    """Ids on the map whose files the server will not show (links out of the indexed
    folders), so the page does not ask for their thumbnails. Cached per layout."""
    cached = state.map_unserved
    if cached is not None and cached[0] is layout:
        return cached[1]
    unserved: list[int] = []
    ids = layout.ids.tolist()
    for start in range(0, len(ids), 500):
        records = state.engine.index.catalogue.images(ids[start : start + 500])
        unserved += [i for i, r in records.items() if not state.gate.servable(r.paths)]
    state.map_unserved = (layout, sorted(unserved))
    return state.map_unserved[1]


@router.post("/session", response_model=SessionResponse, responses=error_responses(401))
def open_session(response: Response, state: State) -> SessionResponse:
    """Trade the bearer token for an HttpOnly session cookie (the page's thumbnails
    need it: an ``<img>`` cannot send a header). Without a token configured, a no-op."""
    if state.settings.token:
        response.set_cookie(
            SESSION_COOKIE,
            session_value(state.settings.token),
            httponly=True,
            samesite="strict",
            path="/",
        )
    return SessionResponse()
