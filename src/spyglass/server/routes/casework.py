"""Case work over HTTP: near-duplicate groups, checking an exported case file again,
and saved searches. Each does what its `spyglass duplicates`, `spyglass verify` and
`spyglass saved ...` command does (docs/casework.md); the logic is the engine's."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response

from spyglass.casework.casefile import CaseFile
from spyglass.casework.digests import IndexState
from spyglass.casework.duplicates import (
    CANDIDATE_FLOOR,
    DEFAULT_PHASH_DISTANCE,
    DEFAULT_THRESHOLD,
    CollapsedResult,
    DuplicateRule,
)
from spyglass.casework.saved import SavedSearches
from spyglass.server.gate import MAX_PATH_LENGTH
from spyglass.server.problems import ApiProblem, error_responses
from spyglass.server.queries import build_query
from spyglass.server.routes.search import client_of, result_item
from spyglass.server.schemas import (
    DuplicateGroupItem,
    DuplicateMember,
    DuplicatesResponse,
    FileChangeItem,
    IndexStateItem,
    SavedRunResponse,
    SavedSearchesResponse,
    SavedSearchItem,
    SearchRequest,
    VerifyResponse,
)
from spyglass.server.state import ServerState, State

router = APIRouter(prefix="/api", tags=["case work"])

#: The CLI's default: hashes compared unless the rule's default says embeddings alone.
_PHASH_DEFAULT = DEFAULT_PHASH_DISTANCE if DEFAULT_PHASH_DISTANCE is not None else 0
SavedName = Annotated[str, Path(min_length=1, max_length=64, description="The search's name.")]


@router.get(
    "/duplicates",
    response_model=DuplicatesResponse,
    responses=error_responses(400, 401, 403, 422),
)
def duplicates(
    state: State,
    threshold: Annotated[float, Query(gt=0.0, le=1.0)] = DEFAULT_THRESHOLD,
    phash_distance: Annotated[int, Query(ge=0, le=32)] = _PHASH_DEFAULT,
    no_phash: Annotated[bool, Query(description="Compare embeddings alone.")] = (
        DEFAULT_PHASH_DISTANCE is None
    ),
    candidate_floor: Annotated[float, Query(ge=0.0, le=1.0)] = CANDIDATE_FLOOR,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Groups to return.")] = 100,
) -> DuplicatesResponse:
    """Groups of near-duplicate images (re-encodes, resizes, crops, colour shifts),
    largest first, as `spyglass duplicates` finds them: each image's nearest
    neighbours in the image space (a bounded number, never every pair), joined when
    their cosine reaches ``threshold`` or their perceptual hashes differ in at most
    ``phash_distance`` bits. Images whose hashes `spyglass duplicates` has not kept
    yet are hashed for this request (each file read once; the server writes nothing
    into the index); it queues with the other expensive requests."""
    rule = DuplicateRule(threshold, None if no_phash else phash_distance, candidate_floor)
    state.prepare_thread()
    with state.admission.slot(heavy=True):
        groups = state.engine.duplicates(rule, save_hashes=False)
    shown = groups[:limit]
    records = state.engine.index.catalogue.images([i for g in shown for i in g.members])
    paths = {i: r.paths for i, r in records.items()}
    return DuplicatesResponse(
        rule=rule.describe(),
        threshold=rule.threshold,
        phash_distance=rule.phash_distance,
        candidate_floor=rule.candidate_floor,
        total=len(groups),
        groups=[
            DuplicateGroupItem(
                group=number,
                size=group.size,
                weakest=round(group.weakest, 6),
                members=[
                    DuplicateMember(id=i, path=paths.get(i, ("",))[0], paths=list(paths.get(i, ())))
                    for i in group.members
                ],
            )
            for number, group in enumerate(shown, start=1)
        ],
    )


@router.post(
    "/verify",
    response_model=VerifyResponse,
    responses=error_responses(400, 401, 403, 422),
)
def verify(
    state: State,
    case: Annotated[
        dict[str, Any],
        Body(
            description="A JSON case file, as POST /api/export or `spyglass search "
            "--export FILE.json` writes it."
        ),
    ],
) -> VerifyResponse:
    """Run a case file's search again on the index and hash each result's file again,
    as `spyglass verify --json` does: whether the case file was edited, whether the
    search gives the same results, which files changed since the export. A finding is
    a 200 (``verified`` false); only a body that is no case file is refused. Result
    files are read only inside the indexed folders (as thumbnails are)."""
    parsed = CaseFile.from_json(json.dumps(case))
    for result in parsed.results:
        readable_path(state, result.path)
    state.prepare_thread()
    with state.admission.slot(heavy=True):
        verification = state.engine.verify(parsed)
    found = verification.to_json()
    return VerifyResponse(
        **{k: v for k, v in found.items() if k != "file_changes"},
        case_sealed=verification.case_sealed,
        file_changes=[FileChangeItem(**c) for c in found["file_changes"]],
        index_then=index_item(verification.index_then),
        index_now=index_item(verification.index_now),
        lines=verification.lines(),
    )


def readable_path(state: ServerState, path: str) -> None:
    """Refuse a case file's result path the server would not serve a thumbnail of, so
    that no case file makes it hash (and so reveal) a file outside the indexed folders:
    400 empty, too long or with a NUL; 403 climbing with '..' or outside the folders."""
    if not path or len(path) > MAX_PATH_LENGTH or "\x00" in path:
        raise ApiProblem(400, "bad-path", "a result's path is empty, too long or holds a NUL")
    if ".." in PurePosixPath(path).parts or "\\" in path:
        raise ApiProblem(403, "path-escape", "a result's path climbs out with '..'")
    state.gate.check_inside(path)


def index_item(state: IndexState) -> IndexStateItem:
    return IndexStateItem(files=state.files, images=state.images, digest=state.digest)


@router.get("/saved", response_model=SavedSearchesResponse, responses=error_responses(400, 401))
def saved_list(state: State) -> SavedSearchesResponse:
    """The saved searches of the index (kept in its folder, shared with `spyglass
    saved`), by name, with when each last ran."""
    searches = SavedSearches(state.engine.index.folder).all()
    return SavedSearchesResponse(
        searches=[
            SavedSearchItem(
                name=s.name,
                query=s.search.describe(),
                saved_at=s.saved_at,
                last_run_at=s.last_run_at,
            )
            for s in searches
        ]
    )


@router.post(
    "/saved",
    response_model=SavedSearchItem,
    status_code=201,
    responses=error_responses(400, 401, 403, 404, 409, 422),
)
def saved_save(
    body: SearchRequest,
    state: State,
    name: Annotated[str, Query(min_length=1, max_length=64, description="Its name.")],
    replace: Annotated[bool, Query(description="Overwrite a search of this name.")] = False,
) -> SavedSearchItem:
    """Save a search (the body of ``POST /api/search``, filters included; ``limit``
    and ``offset`` are the saved search's page) as ``name``: up to 64 letters, digits,
    spaces and . @ + - _. Query images are kept by copy, so an upload stays usable."""
    built = build_query(body, state.gate, state.uploads)
    store = SavedSearches(state.engine.index.folder)
    if not replace and any(s.name == name for s in store.all()):
        raise ApiProblem(
            409, "saved-search-exists", f"a saved search named {name!r} exists: give replace=true"
        )
    spec = state.engine.record(built.query, DuplicateRule() if body.collapse_duplicates else None)
    saved = store.save(name, spec, replace_existing=replace)
    return SavedSearchItem(
        name=saved.name, query=spec.describe(), saved_at=saved.saved_at, last_run_at=None
    )


@router.delete(
    "/saved/{name}",
    status_code=204,
    response_class=Response,
    responses=error_responses(400, 401, 404),
)
def saved_delete(name: SavedName, state: State) -> Response:
    """Forget the saved search ``name``, as `spyglass saved delete` does: 204, or 404
    when there is none of that name."""
    SavedSearches(state.engine.index.folder).delete(name)
    return Response(status_code=204)


@router.post(
    "/saved/{name}/run",
    response_model=SavedRunResponse,
    responses=error_responses(400, 401, 404, 409, 422),
)
def saved_run(
    request: Request,
    name: SavedName,
    state: State,
    new: Annotated[bool, Query(description="Only images indexed since its last run.")] = False,
) -> SavedRunResponse:
    """Run the saved search ``name`` (and record the run); with ``new=true``, only the
    images indexed since its last run (all of them the first time), as `spyglass saved
    run --new`. It queues with the other expensive requests."""
    store = SavedSearches(state.engine.index.folder)
    state.refresh_if_due()
    state.prepare_thread()
    with state.admission.slot(heavy=True):  # --new reads down the ranking: deep searches
        saved, items = store.run(name, state.engine.index, state.engine.run_recorded, new_only=new)
    spec = saved.search
    groups = [
        item if isinstance(item, CollapsedResult) else CollapsedResult(item) for item in items
    ]
    results = [
        result_item(request, state, spec.offset + n + 1, group) for n, group in enumerate(groups)
    ]
    if state.audit is not None:  # a saved search's run is a search: the log has it too
        state.audit.record(
            "saved-search",
            client=client_of(request, state),
            query={"name": name, "new_only": new, **spec.to_json(copies=False)},
            results=[g.result.image_id for g in groups],
        )
    return SavedRunResponse(
        name=name,
        query=spec.describe(),
        new_only=new,
        since=saved.last_run_at if new else None,
        results=results,
    )
