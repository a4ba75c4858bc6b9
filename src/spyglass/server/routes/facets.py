"""Facets: how many searchable images each filter value keeps, for the page's panel."""

from __future__ import annotations

from fastapi import APIRouter

from spyglass.server.problems import error_responses
from spyglass.server.schemas import FacetsResponse
from spyglass.server.state import State

router = APIRouter(prefix="/api", tags=["search"])


@router.get("/facets", response_model=FacetsResponse, responses=error_responses(401))
def facets(state: State) -> FacetsResponse:
    """Counts per top folder, format, camera, year (by date: EXIF capture time, else the
    file's time) and GPS, over every searchable image: what each filter of
    ``POST /api/search``'s ``filters`` would keep on its own."""
    state.refresh_if_due()
    counted = state.engine.facets()
    return FacetsResponse(**counted.to_json())
