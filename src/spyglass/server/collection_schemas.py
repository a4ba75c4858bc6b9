"""Request and response models of the map's legend and of naming groups of images.

They extend :mod:`spyglass.server.schemas` (the rest of the OpenAPI document) and may
move there; they live apart only so that the two can change independently.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from spyglass.server.schemas import MAX_ID, MapResponse, Strict

#: Strict: ``true`` is not image 1.
MemberId = Annotated[int, Field(ge=0, le=MAX_ID, strict=True)]
GroupMembers = Annotated[list[MemberId], Field(min_length=1, max_length=500)]


class MapGroupItem(BaseModel):
    id: int = Field(description="The group's number: 0 is the largest group.")
    size: int
    words: list[str] = Field(
        description="Words nearest the group's centre in the text space, best first "
        "(empty while the vocabulary is unavailable)."
    )
    x: float = Field(description="Median position of the members, 0..1 left to right.")
    y: float = Field(description="Median position of the members, 0..1 top to bottom.")


class MapLayoutResponse(MapResponse):
    progress: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of the layout done (1 when ready)."
    )
    group: list[int] = Field(
        default_factory=list, description="The group of each point (same order as ids)."
    )
    groups: list[MapGroupItem] = Field(
        default_factory=list, description="The groups, largest first, named by words."
    )


class DescribeRequest(Strict):
    """Groups of indexed images to name by words (a cluster view's legend)."""

    groups: list[GroupMembers] = Field(min_length=1, max_length=12)
    words: int = Field(default=3, ge=1, le=10, description="Words per group.")


class GroupDescription(BaseModel):
    words: list[str] = Field(description="Best first; empty without a vocabulary.")
    similarity: list[float] = Field(
        description="Cosine similarity of each word to the group's mean direction."
    )


class DescribeResponse(BaseModel):
    vocabulary: str = Field(description="Where the words come from.")
    space: str = Field(description="The vector space the words and images meet in.")
    groups: list[GroupDescription]
