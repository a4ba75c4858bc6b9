"""Indexed images: detail, thumbnails and originals (only through the gate)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from spyglass.server.problems import error_responses
from spyglass.server.routes.search import thumbnail_url
from spyglass.server.schemas import MAX_ID, ImageDetail
from spyglass.server.settings import THUMBNAIL_SIZES
from spyglass.server.state import State
from spyglass.store.catalogue import ImageRecord

router = APIRouter(prefix="/api/images", tags=["images"])

ImageIdPath = Annotated[int, Path(ge=0, le=MAX_ID, description="An indexed image's id.")]
#: Thumbnails and originals of one id never change (an id names one content), but a
#: re-built index may reuse ids: browsers keep them a day and revalidate by ETag.
CACHE_CONTROL = "private, max-age=86400"
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
}
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
    304: {"description": "Not modified (ETag matched)"},
    **error_responses(401, 403, 404, 409, 422),
}


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def detail(request: Request, record: ImageRecord) -> ImageDetail:
    return ImageDetail(
        id=record.id,
        path=record.path,
        paths=list(record.paths),
        width=record.width,
        height=record.height,
        format=record.format,
        thumbnail=thumbnail_url(request, record.id),
        preview=thumbnail_url(request, record.id, 1024),
        original=f"{_root(request)}/api/images/{record.id}/original",
    )


@router.get("/lookup", response_model=ImageDetail, responses=error_responses(400, 401, 403, 404))
def lookup(
    request: Request,
    state: State,
    path: Annotated[
        str,
        Query(
            min_length=1,
            max_length=4096,
            pattern=r"^[^\x00]+$",
            description="An indexed file: absolute, or relative to an indexed folder.",
        ),
    ],
) -> ImageDetail:
    """Find an indexed image by one of its file paths. Paths outside the indexed folders
    (``..``, other absolute paths, links out) are refused."""
    return detail(request, state.gate.lookup(path))


@router.get("/{image_id}", response_model=ImageDetail, responses=error_responses(401, 404, 422))
def image_detail(request: Request, image_id: ImageIdPath, state: State) -> ImageDetail:
    """An indexed image: its files, size, format and URLs."""
    return detail(request, state.gate.record(image_id))


def _not_modified(request: Request, etag: str) -> bool:
    given = request.headers.get("if-none-match", "")
    return etag in {tag.strip() for tag in given.split(",")}


@router.get("/{image_id}/thumbnail", response_class=Response, responses=IMAGE_RESPONSES)
def thumbnail(
    request: Request,
    image_id: ImageIdPath,
    state: State,
    size: Annotated[
        int,
        Query(
            description="Longest side in pixels.", json_schema_extra={"enum": list(THUMBNAIL_SIZES)}
        ),
    ] = 256,
) -> Response:
    """A JPEG thumbnail, upright per the image's EXIF orientation, made once and cached."""
    data, content_hash = state.thumbnails.get(image_id, size)
    etag = f'"{content_hash}-{size}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/{image_id}/original", response_class=Response, responses=IMAGE_RESPONSES)
def original(request: Request, image_id: ImageIdPath, state: State) -> Response:
    """The original file, byte for byte, if it still holds the indexed content."""
    served = state.gate.read(image_id)
    etag = f'"{served.content_hash}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    media = MEDIA_TYPES.get(served.record.format, "application/octet-stream")
    return Response(served.data, media_type=media, headers=headers)
