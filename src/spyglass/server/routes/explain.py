"""Why a result matched: occlusion heatmaps over the result and the query image."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from spyglass.casework.explain import OcclusionSettings
from spyglass.casework.explanation import heat_grid
from spyglass.casework.heat_overlay import png_bytes
from spyglass.errors import InvalidQuery
from spyglass.server.problems import error_responses
from spyglass.server.queries import build_query
from spyglass.server.schemas import ExplainRequest, ExplainResponse
from spyglass.server.state import State

router = APIRouter(prefix="/api", tags=["search"])

EXPLAIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The image with its heatmap over it (PNG; format=png), or the heat "
        "as numbers (JSON; format=json).",
    },
    **error_responses(400, 401, 403, 404, 409, 422),
}


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses=EXPLAIN_RESPONSES,
)
def explain(body: ExplainRequest, state: State) -> Response:
    """Why result ``id`` matched the query: each window of the image is hidden in turn,
    every copy embedded, and a region is as hot as hiding it lowers the score (about
    40 forward passes of the image model at the default grid; it queues with the other
    expensive requests). ``target=query`` explains the query image of an image query
    instead. Files are read through the same checks as thumbnails."""
    built = build_query(body, state.gate, state.uploads)
    state.gate.record(body.id)  # an unknown or removed id is a 404 before any work
    state.prepare_thread()
    with state.admission.slot(heavy=True):
        explanation = state.engine.explain(
            built.query,
            body.id,
            OcclusionSettings(grid=body.grid),
            parts=("result", "query") if body.format == "json" else (body.target,),
            read_indexed=lambda image_id: state.gate.read(image_id).data,
        )
    if body.format == "json":
        document = ExplainResponse(
            id=body.id,
            score=round(explanation.score, 6),
            space=explanation.space,
            grid=body.grid,
            result=heat_grid(explanation.result),
            result_peak=explanation.result.peak(),
            query=heat_grid(explanation.query) if explanation.query is not None else None,
            query_peak=explanation.query.peak() if explanation.query is not None else None,
            seconds=round(explanation.seconds, 3),
        )
        return Response(document.model_dump_json(), media_type="application/json")
    if body.target == "query":
        overlay = explanation.query_overlay(body.max_side)
        if overlay is None:
            raise InvalidQuery("target=query needs a query image (image_id, image_path, upload_id)")
    else:
        overlay = explanation.overlay(body.max_side)
    headers = {
        "Cache-Control": "private, max-age=3600",
        "X-Spyglass-Score": f"{explanation.score:.6f}",
        "X-Spyglass-Seconds": f"{explanation.seconds:.3f}",
    }
    return Response(png_bytes(overlay), media_type="image/png", headers=headers)
