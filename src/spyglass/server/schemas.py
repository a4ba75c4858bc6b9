"""Request and response models of the JSON API (they are the OpenAPI document)."""

from __future__ import annotations

from itertools import combinations
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from spyglass.query.filters import Filters

#: Largest image id a client may send: the largest integer JavaScript holds exactly.
MAX_ID = 2**53 - 1
MAX_OFFSET = 1_000_000

ImageId = Annotated[int, Field(ge=0, le=MAX_ID)]
ExcludeTerm = Annotated[str, Field(max_length=500)]
QueryText = Annotated[str, Field(max_length=2000)]
Score = Annotated[
    float,
    Field(
        ge=-1.0,
        le=1.0,
        description="Keep only results whose score (cosine with the query) reaches this.",
    ),
]
ClientPath = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]
UploadId = Annotated[str, Field(max_length=64)]
ClusterCount = Annotated[int, Field(ge=2, le=12)]
RegionText = Annotated[str, Field(max_length=100, pattern=r"^\s*[0-9.]+\s*(,\s*[0-9.]+\s*){3}$")]
DateText = Annotated[str, Field(max_length=32)]
CameraText = Annotated[str, Field(max_length=200)]
FormatName = Annotated[str, Field(max_length=20)]
SizeText = Annotated[str, Field(max_length=20)]
FiltersText = Annotated[str, Field(max_length=100_000)]
#: An optional field whose null is accepted but not advertised (clients leave it out).
NoNull = SkipJsonSchema[None]
#: The fields that are true or false (every other field refuses a boolean).
FLAG_FIELDS = frozenset({"collapse_duplicates", "has_gps"})

_IMAGE_FIELDS = ("image_id", "image_path", "upload_id")
#: The rules of a search request that field types cannot say, for the OpenAPI document:
#: at most one image; a region only with an image; something to search for.
_ONE_IMAGE: list[JsonValue] = [{"required": [f]} for f in _IMAGE_FIELDS]
SEARCH_RULES: JsonDict = {
    "not": {"anyOf": [{"required": list(pair)} for pair in combinations(_IMAGE_FIELDS, 2)]},
    "allOf": [
        {"anyOf": [{"not": {"required": ["region"]}}, *_ONE_IMAGE]},
        {
            "anyOf": [
                {"required": ["text"], "properties": {"text": {"pattern": r"\S"}}},
                {"required": ["positives"], "properties": {"positives": {"minItems": 1}}},
                {"required": ["filters"], "properties": {"filters": {"minProperties": 1}}},
                *_ONE_IMAGE,
            ]
        },
    ],
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_null_or_bool(cls, value: object, info: ValidationInfo) -> object:
        """Optional fields are left out, not sent as null (as the OpenAPI document says);
        and no field but a flag is a boolean (pydantic would read ``true`` as the number
        1), and a flag is nothing else (nor ``"yes"`` or 1)."""
        if value is None:
            raise ValueError("null is not allowed here: leave the field out")
        if info.field_name in FLAG_FIELDS:
            if not isinstance(value, bool):
                raise ValueError("true or false")
            return value
        if isinstance(value, bool) or (
            isinstance(value, list) and any(isinstance(v, bool) for v in value)
        ):
            raise ValueError("true and false are not allowed here")
        return value


class Region(Strict):
    """A box on the query image, as fractions of its width and height (0 = left/top
    edge, 1 = right/bottom edge). Only this crop of the image is embedded."""

    left: float = Field(ge=0.0, le=1.0)
    top: float = Field(ge=0.0, le=1.0)
    right: float = Field(ge=0.0, le=1.0)
    bottom: float = Field(ge=0.0, le=1.0)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)


class SearchFilters(Strict):
    """Metadata filters: only images that pass all of them are searched (inside the
    vector search, so a narrow filter still fills the page). An image's date is its
    EXIF capture time, else its oldest file's modification time (docs/casework.md,
    "Filters"). With filters and nothing to search for, the kept images are listed
    newest first, or oldest with ``sort`` (``rank_score`` is then the date, in seconds
    since 1970)."""

    under: list[ClientPath] = Field(
        default_factory=list,
        max_length=20,
        description="Absolute folders: images with a file under any of them.",
        examples=[["/photos/2021"]],
    )
    after: DateText | NoNull = Field(
        default=None,
        description="From this date on (UTC): YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM.",
        examples=["2019-06"],
    )
    before: DateText | NoNull = Field(
        default=None, description="Up to the end of this date (UTC), same forms as after."
    )
    camera: CameraText | NoNull = Field(
        default=None, description="A part of the EXIF camera make and model (any case)."
    )
    has_gps: bool | NoNull = Field(
        default=None, description="true: only images with an EXIF GPS position; false: none."
    )
    formats: list[FormatName] = Field(
        default_factory=list, max_length=20, description="jpeg, png, webp..."
    )
    min_size: SizeText | NoNull = Field(
        default=None, description="At least WIDTHxHEIGHT pixels.", examples=["800x600"]
    )

    def to_filters(self) -> Filters:
        """The engine's :class:`Filters`; raises ``InvalidQuery`` (400) for bad values."""
        return Filters.parse(
            under=self.under,
            after=self.after,
            before=self.before,
            camera=self.camera,
            has_gps=self.has_gps,
            formats=self.formats,
            min_size=self.min_size,
        )


class FacetsResponse(BaseModel):
    """Searchable images counted per value of each filter, most first (``years`` in
    order, ``gps`` as ``yes``/``no``); with filters, each facet over the images the
    other filters keep, ``total`` over those all of them keep."""

    total: int
    folders: dict[str, int] = Field(description="Folders just inside each indexed folder.")
    formats: dict[str, int]
    cameras: dict[str, int] = Field(description="EXIF 'make model'.")
    years: dict[str, int] = Field(description="By date: EXIF capture time, else file time.")
    gps: dict[str, int]


class QueryFields(Strict):
    """Everything about a search except which image it starts from."""

    text: QueryText | NoNull = Field(
        default=None,
        description="Words to search for; with an image, the modification "
        "('at night', 'especially the carpet').",
        examples=["a red car"],
    )
    image_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Share of the image in an image + text query; the text gets the rest.",
    )
    exclude: list[ExcludeTerm] = Field(
        default_factory=list,
        max_length=20,
        description="Push results away from these words (negative terms).",
    )
    exclude_weight: float = Field(default=0.5, ge=0.0, le=10.0)
    region: Region | NoNull = Field(
        default=None, description="Focus on a box of the query image (needs an image)."
    )
    positives: list[ImageId] = Field(
        default_factory=list,
        max_length=500,
        description="Ids of results marked good (relevance feedback).",
    )
    negatives: list[ImageId] = Field(
        default_factory=list, max_length=500, description="Ids of results marked bad."
    )
    method: str = Field(
        default="default",
        max_length=64,
        description="How the terms are combined (GET /api/methods lists them).",
    )
    rerank: str = Field(
        default="default",
        max_length=64,
        description="Re-ranking of the top results (GET /api/methods lists them; "
        "'default' picks the evaluated winner for the kind of query).",
    )
    min_score: Score | NoNull = None
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Results to skip (paging).")
    limit: int = Field(default=50, ge=1, le=1000, description="Results to return.")
    collapse_duplicates: bool = Field(
        default=False,
        description="Show each group of near-duplicate images once, as its best-ranked "
        "member; its group_size and duplicates say what it stands for. Paging counts groups.",
    )
    filters: SearchFilters | NoNull = Field(
        default=None, description="Search only images with this metadata."
    )
    sort: Literal["newest", "oldest"] | NoNull = Field(
        default=None,
        description="With filters and nothing to search for: list the kept images newest "
        "(default) or oldest first by date, ties by id. Refused (400) with a text, an "
        "image or marks, which are ordered by similarity.",
    )


class SearchRequest(QueryFields):
    """A search by text, by an image (indexed id, indexed path or upload id), or both,
    with optional negative terms, region and relevance feedback. Give at most one of
    ``image_id``, ``image_path`` and ``upload_id``."""

    model_config = ConfigDict(json_schema_extra=SEARCH_RULES)

    image_id: ImageId | NoNull = None
    image_path: ClientPath | NoNull = Field(
        default=None,
        description="An indexed file: absolute, or relative to an indexed folder.",
    )
    upload_id: UploadId | NoNull = Field(
        default=None, description="From POST /api/uploads (never indexed)."
    )

    @model_validator(mode="after")
    def _one_image(self) -> SearchRequest:
        given = [f for f in ("image_id", "image_path", "upload_id") if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of image_id, image_path, upload_id (got {given})")
        return self


class ExportRequest(SearchRequest):
    """A search whose results come back as a case file (docs/casework.md): JSON holds
    the query as run (query images' SHA-256 and a copy), the model, the index's state,
    the time, the tool's version and each result's rank, score, mark, path, SHA-256 and
    MD5, with a digest of itself; CSV holds the same flat, a row per result."""

    format: Literal["csv", "json"] = "csv"
    limit: int = Field(default=1000, ge=1, le=10_000, description="Results to export.")


class ClusterRequest(SearchRequest):
    limit: int = Field(default=50, ge=2, le=200, description="Top results to cluster.")
    clusters: ClusterCount | NoNull = Field(
        default=None, description="Number of clusters; default: chosen by silhouette."
    )
    neighbours: int = Field(default=3, ge=1, le=10, description="Edges per image.")


class SearchResultItem(BaseModel):
    rank: int = Field(description="1-based position in the whole ranking.")
    id: int
    path: str
    copies: int = Field(description="Files holding this same content (first one is path).")
    score: float = Field(
        description="Cosine similarity between the image and the query (its terms and "
        "marked images summed, as the 'sum' method does): the same for every method, "
        "comparable across queries; what min_score filters on."
    )
    rank_score: float = Field(
        description="The ranking method's own value (fused z-scores, an SVM margin, "
        "1 - d*/2 after k-reciprocal re-ranking...): results are ordered by it, ties by id."
    )
    width: int
    height: int
    thumbnail: str | None = Field(
        description="URL of a 256-pixel thumbnail; null when the server does not serve the "
        "file (a link out of the indexed folders)."
    )
    group_size: int = Field(
        default=1,
        description="With collapse_duplicates: the images of its near-duplicate group, "
        "itself included (1: it has none).",
    )
    duplicates: list[int] = Field(
        default_factory=list,
        description="With collapse_duplicates: ids of the other members of its group.",
    )


class SearchResponse(BaseModel):
    query: str = Field(description="What was searched, in words.")
    offset: int
    limit: int
    results: list[SearchResultItem]
    has_more: bool
    searchable: int = Field(description="Images the index can return.")
    took_ms: float
    upload_id: str | None = Field(default=None, description="Set when an image was uploaded.")
    notes: list[str] = Field(
        default_factory=list,
        description="What to know about how the query was read, one sentence each "
        "(e.g. a text longer than the model reads was cut).",
    )


class UploadResponse(BaseModel):
    upload_id: str
    width: int
    height: int
    format: str


class ImageDetail(BaseModel):
    id: int
    path: str
    paths: list[str]
    width: int
    height: int
    format: str
    thumbnail: str
    preview: str = Field(description="URL of a 1024-pixel version.")
    original: str = Field(description="URL of the original file.")


class SkippedFileItem(BaseModel):
    path: str
    reason: str
    message: str


class StatusResponse(BaseModel):
    index: str
    images: int = Field(description="Indexed files that can be found.")
    unique_images: int = Field(description="Distinct contents among them.")
    embedded: int
    skipped: int
    model: str
    model_version: str
    spaces: dict[str, int]
    roots: list[str]
    skipped_files: list[SkippedFileItem]
    auth: bool = Field(description="Whether requests need the token.")
    audit: bool = Field(
        default=False,
        description="Whether the server records each search, export and saved-search run "
        "in an audit log (spyglass serve --audit).",
    )


class MethodsResponse(BaseModel):
    methods: dict[str, str]
    default_method: str
    rerankers: dict[str, str]
    default_methods: dict[str, str] = Field(
        description="What method 'default' means per kind of query "
        "(text, image, image+text, feedback)."
    )
    default_rerankers: dict[str, str] = Field(
        description="What rerank 'default' means per kind of query on this index (it "
        "depends on how many images the index holds)."
    )
    default_reranker_rules: dict[str, str] = Field(
        description="The rule behind rerank 'default' per kind of query, in words "
        "(e.g. 'kreciprocal from 300 images, else none')."
    )


class ClusterNode(BaseModel):
    id: int
    rank: int
    path: str
    score: float
    cluster: int
    thumbnail: str | None = Field(description="As in search results.")


class ClusterEdge(BaseModel):
    source: int = Field(description="Image id.")
    target: int = Field(description="Image id.")
    similarity: float = Field(description="Cosine similarity of the two images.")


class ClusterGroup(BaseModel):
    id: int
    size: int
    members: list[int]
    centre: int = Field(description="Id of the member nearest the cluster's centre.")
    cohesion: float = Field(description="Mean similarity of members to their centre.")


class ClusterResponse(BaseModel):
    query: str
    space: str
    silhouette: float | None
    nodes: list[ClusterNode]
    edges: list[ClusterEdge]
    clusters: list[ClusterGroup]


class MapResponse(BaseModel):
    status: Literal["ready", "computing", "failed"]
    message: str = ""
    count: int = Field(default=0, description="Images on the map.")
    total: int = Field(default=0, description="Images in the index.")
    ids: list[int] = Field(default_factory=list)
    x: list[float] = Field(default_factory=list, description="0..1, left to right.")
    y: list[float] = Field(default_factory=list, description="0..1, top to bottom.")
    seconds: float | None = Field(default=None, description="Time the layout took.")
    no_preview: list[int] = Field(
        default_factory=list, description="Ids whose files the server does not show."
    )
    layout: str = Field(default="", description="How the positions were computed.")


class SessionResponse(BaseModel):
    ok: bool = True


class SearchForm(BaseModel):
    """A one-shot search by an uploaded image (multipart/form-data): the image file,
    plus the same fields as :class:`SearchRequest` (``region`` as
    ``left,top,right,bottom`` fractions). The answer carries the ``upload_id`` to
    page on with ``POST /api/search``."""

    # "ignore": the image file arrives in the same form.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    text: QueryText | NoNull = None
    image_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    exclude: list[ExcludeTerm] = Field(default_factory=list, max_length=20)
    exclude_weight: float = Field(default=0.5, ge=0.0, le=10.0)
    region: RegionText | NoNull = Field(
        default=None,
        description="left,top,right,bottom as fractions of the image (0..1).",
        examples=["0.1,0.5,0.6,1"],
    )
    positives: list[ImageId] = Field(default_factory=list, max_length=500)
    negatives: list[ImageId] = Field(default_factory=list, max_length=500)
    method: str = Field(default="default", max_length=64)
    rerank: str = Field(default="default", max_length=64)
    min_score: Score | NoNull = None
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    limit: int = Field(default=50, ge=1, le=1000)
    collapse_duplicates: bool = False
    filters: FiltersText | NoNull = Field(
        default=None,
        description="The filters object of POST /api/search, as JSON text.",
        examples=['{"formats": ["jpeg"], "has_gps": true}'],
    )

    def region_box(self) -> Region | None:
        """The region as a :class:`Region`; raises ``ValueError`` for numbers that are
        not four fractions."""
        if self.region is None or not self.region.strip():
            return None
        left, top, right, bottom = (float(v) for v in self.region.split(","))
        return Region(left=left, top=top, right=right, bottom=bottom)


class ExplainRequest(SearchRequest):
    """Why one result matched a search: the same query fields as ``POST /api/search``,
    and the result's id. Paging, re-ranking and marks do not change a result's score,
    so they do not change its explanation."""

    id: ImageId = Field(description="The result to explain (an indexed image's id).")
    target: Literal["result", "query"] = Field(
        default="result",
        description="Whose heatmap: the result image's, or the query image's (an image "
        "query only: the regions of the query image that make it match this result).",
    )
    format: Literal["png", "json"] = Field(
        default="png",
        description="png: the image with its heatmap over it; json: the heat as numbers.",
    )
    grid: int = Field(
        default=6,
        ge=2,
        le=12,
        description="Cells per side; windows of 2x2 and 3x3 cells are hidden in turn. "
        "The cost is one forward pass per window: 42 at 6, 86 at 8, 182 at 12.",
    )
    max_side: int = Field(
        default=1024, ge=16, le=2048, description="Longer side of the PNG, in pixels."
    )


class ExplainResponse(BaseModel):
    """The heat as numbers: ``result`` (and ``query`` for an image query) are
    ``grid`` x ``grid`` rows, top row first, of the mean drop in the score when a window
    over that cell is hidden (cosine units; negative: hiding it raised the score)."""

    id: int
    score: float = Field(description="The result's score: its cosine with the query.")
    space: str = Field(description="The vector space the score is a cosine in.")
    grid: int
    result: list[list[float]]
    result_peak: tuple[float, float] = Field(
        description="The hottest cell's centre on the result, as (x, y) fractions."
    )
    query: list[list[float]] | None = None
    query_peak: tuple[float, float] | None = None
    seconds: float = Field(description="Time the heatmaps took on the server.")


# -- case work: near-duplicate groups, verify, saved searches (routes/casework.py) ------


class DuplicateMember(BaseModel):
    id: int
    path: str = Field(description="Its first file ('' if it was removed meanwhile).")
    paths: list[str] = Field(description="Every file holding this same content.")


class DuplicateGroupItem(BaseModel):
    group: int = Field(description="1-based, largest group first.")
    size: int
    weakest: float = Field(
        description="The lowest cosine among the links that join the group: it holds "
        "together at any threshold up to this."
    )
    members: list[DuplicateMember] = Field(description="By id, ascending.")


class DuplicatesResponse(BaseModel):
    """The groups of near-duplicate images, as `spyglass duplicates --json` writes them
    (largest first, then by smallest member id), the first ``limit`` of them."""

    rule: str = Field(description="When two images count as near-duplicates, in words.")
    threshold: float
    phash_distance: int | None
    candidate_floor: float
    total: int = Field(description="Groups found (the list holds the first `limit`).")
    groups: list[DuplicateGroupItem]


class FileChangeItem(BaseModel):
    rank: int
    path: str
    recorded_sha256: str | None
    sha256_now: str | None = Field(description="null: the file is missing or unreadable now.")


class IndexStateItem(BaseModel):
    files: int
    images: int
    digest: str


class VerifyResponse(BaseModel):
    """A case file checked against the index now, as `spyglass verify --json` prints it
    (plus the index's state then and now). ``exit_status`` is the CLI's: 0 verified,
    6 the case file was edited or the results differ, 7 files changed."""

    verified: bool
    exit_status: int
    case_intact: bool = Field(description="Its digest matches its content (or it has none).")
    case_sealed: bool = Field(description="It carries a digest at all.")
    seal_format: int | None = Field(
        default=None,
        description="The rule its digest matched: 2, SHA-256 of its RFC 8785 canonical "
        "form (kept when the file is parsed and written again); 1, the rule of earlier "
        "versions (Python's sorted-keys JSON). null: no digest matched.",
    )
    same_results: bool
    results_checked: int
    result_changes: list[str] = Field(description="One sentence per rank that differs.")
    file_changes: list[FileChangeItem]
    index_changed: bool
    index_then: IndexStateItem
    index_now: IndexStateItem
    model_then: str
    model_now: str
    rerun_problem: str | None
    lines: list[str] = Field(description="The report for a person, the verdict first.")


class SavedSearchItem(BaseModel):
    name: str
    query: str = Field(description="The search, in words.")
    saved_at: str = Field(description="UTC, ISO 8601.")
    last_run_at: str | None = Field(description="UTC, ISO 8601; null: never run.")


class SavedSearchesResponse(BaseModel):
    searches: list[SavedSearchItem] = Field(description="By name.")


class SavedRunResponse(BaseModel):
    name: str
    query: str
    new_only: bool
    since: str | None = Field(
        description="With new=true, the previous run's time: results are the images "
        "indexed after it (null: first run, every result counts as new)."
    )
    results: list[SearchResultItem]
