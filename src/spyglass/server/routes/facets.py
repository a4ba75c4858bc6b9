"""Facets: how many searchable images each filter value keeps, for the page's panel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from spyglass.server.problems import error_responses
from spyglass.server.schemas import (
    CameraText,
    ClientPath,
    DateText,
    FacetsResponse,
    FormatName,
    SearchFilters,
    SizeText,
)
from spyglass.server.state import State

router = APIRouter(prefix="/api", tags=["search"])


@router.get("/facets", response_model=FacetsResponse, responses=error_responses(400, 401, 422))
def facets(
    state: State,
    under: Annotated[list[ClientPath], Query(max_length=20)] = [],  # noqa: B006 - FastAPI copies it
    after: Annotated[DateText | None, Query()] = None,
    before: Annotated[DateText | None, Query()] = None,
    camera: Annotated[CameraText | None, Query()] = None,
    has_gps: Annotated[bool | None, Query()] = None,
    formats: Annotated[list[FormatName], Query(max_length=20)] = [],  # noqa: B006
    min_size: Annotated[SizeText | None, Query()] = None,
) -> FacetsResponse:
    """Counts per top folder, format, camera, year (by date: EXIF capture time, else the
    file's time) and GPS. With no filters, over every searchable image. With filters
    (the fields of ``POST /api/search``'s ``filters``, as query parameters; ``under``
    and ``formats`` repeated), by the usual faceted-search rule: each facet's counts
    are over the images the *other* filters keep (what choosing one of its values
    would give), and ``total`` over the images all of them keep."""
    state.refresh_if_due()
    given: dict[str, Any] = {
        "under": under,
        "after": after,
        "before": before,
        "camera": camera,
        "has_gps": has_gps,
        "formats": formats,
        "min_size": min_size,
    }
    try:
        chosen = SearchFilters(**{k: v for k, v in given.items() if v not in (None, [])})
    except ValidationError as error:  # a 422, as the same value in a search body is
        raise RequestValidationError(error.errors()) from error
    filters = chosen.to_filters()
    counted = state.engine.facets(None if filters.empty else filters)
    return FacetsResponse(**counted.to_json())
