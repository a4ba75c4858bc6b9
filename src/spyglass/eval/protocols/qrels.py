"""``qrels``: the user's own queries and judgements, on the user's own index.

A qrels file is JSON lines, one query per line (blank lines and lines starting with
``#`` are ignored)::

    {"query": "a dog on the beach", "relevant": ["2023/beach/dog1.jpg", "2023/beach/dog2.jpg"]}
    {"image": "2023/cats/tabby.jpg", "query": "in the snow", "relevant": ["2024/snow.jpg"]}
    {"name": "same boat", "image": "boats/red.jpg", "relevant": ["boats/red2.jpg", 812]}

``query`` is a text, ``image`` an image (a path, or an indexed image id); a line needs at
least one of them. ``relevant`` lists the images judged relevant, as paths or ids; paths
are relative to the qrels file's folder unless absolute. Every relevant image must be in
the index. A query image that is in the index leaves its own ranking. ``name`` labels the
query in per-query output (default: the line number).

Every method registered for all the kinds of query in the file is compared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import IndexedCollection, absolute_path
from spyglass.eval.protocols.running import (
    JudgedQuery,
    ProgressFunction,
    RunSettings,
    compare,
    protocol_result,
    variant_approaches,
)
from spyglass.eval.results import MetricSet, ProtocolResult
from spyglass.eval.variants import Variant
from spyglass.query.terms import ImageTerm, Query, Term, TextTerm

METRICS = MetricSet(precision=(1, 5, 10), recall=(10, 100), hit=(1, 10), mrr=True)
COLUMNS = ["mAP", "P@5", "P@10", "recall@10", "recall@100", "hit@1", "MRR"]


@dataclass(frozen=True)
class UserQuery:
    """One line of a qrels file, resolved against the index."""

    name: str
    text: str | None
    image_id: int | None
    image_path: str | None
    relevant_ids: tuple[int, ...]

    @property
    def task(self) -> str:
        has_image = self.image_id is not None or self.image_path is not None
        if has_image and self.text:
            return "image+text"
        return "image" if has_image else "text"


def read_qrels(path: str | Path, collection: IndexedCollection) -> list[UserQuery]:
    """Parse and resolve a qrels file; errors name the line and what is wrong."""
    file = absolute_path(path)
    if not file.is_file():
        raise InvalidQuery(f"qrels file not found: {path}")
    queries = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}, line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidQuery(f"{where}: not valid JSON ({error.msg})") from error
        if not isinstance(entry, dict):
            raise InvalidQuery(f"{where}: each line must be a JSON object")
        queries.append(_resolve(entry, number, where, file.parent, collection))
    if not queries:
        raise InvalidQuery(f"{path} holds no query")
    return queries


def _resolve(
    entry: dict[str, Any], number: int, where: str, base: Path, collection: IndexedCollection
) -> UserQuery:
    unknown = set(entry) - {"name", "query", "image", "relevant"}
    if unknown:
        raise InvalidQuery(f"{where}: unknown keys {sorted(unknown)}")
    text = entry.get("query")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise InvalidQuery(f"{where}: 'query' must be a non-empty text")
    relevant = entry.get("relevant")
    if not isinstance(relevant, list):
        raise InvalidQuery(f"{where}: 'relevant' must be a list of paths or ids")
    image = entry.get("image")
    if text is None and image is None:
        raise InvalidQuery(f"{where}: give a 'query' text, an 'image', or both")
    image_id = image_path = None
    if image is not None:
        found = _image_id(image, base, collection, where, must_exist=False)
        if found is None:
            image_path = _absolute(str(image), base)
            if not Path(image_path).is_file():
                raise InvalidQuery(f"{where}: query image {image} not found")
        image_id = found
    relevant_ids = tuple(
        _require(_image_id(item, base, collection, where, must_exist=True)) for item in relevant
    )
    return UserQuery(
        str(entry.get("name", f"line {number}")), text, image_id, image_path, relevant_ids
    )


def _require(value: int | None) -> int:
    if value is None:  # _image_id raises first when must_exist
        raise AssertionError("unreachable")
    return value


def _absolute(path: str, base: Path) -> str:
    resolved = Path(path).expanduser()
    return os.path.normpath(str(resolved if resolved.is_absolute() else base / resolved))


def _image_id(
    item: object, base: Path, collection: IndexedCollection, where: str, *, must_exist: bool
) -> int | None:
    """An indexed image's id from a path or an id; None (or an error) if not indexed."""
    if isinstance(item, bool) or not isinstance(item, int | str):
        raise InvalidQuery(f"{where}: {item!r} is neither a path nor an image id")
    if isinstance(item, int):
        if collection.positions_of([item])[0] < 0:
            raise InvalidQuery(f"{where}: no image with id {item} in the index")
        return item
    state = collection.engine.index.catalogue.file(_absolute(item, base))
    if state is None or collection.positions_of([state.image_id])[0] < 0:
        if must_exist:
            raise InvalidQuery(
                f"{where}: {item} is not in the index {collection.engine.index.folder} "
                f"(paths are relative to the qrels file's folder)"
            )
        return None
    return state.image_id


def query_terms(query: UserQuery, image_weight: float) -> tuple[Term, ...]:
    terms: list[Term] = []
    both = query.task == "image+text"
    if query.image_id is not None or query.image_path is not None:
        weight = image_weight if both else 1.0
        if query.image_id is not None:
            terms.append(ImageTerm(image_id=query.image_id, weight=weight))
        else:
            terms.append(ImageTerm(path=query.image_path, weight=weight))
    if query.text:
        terms.append(TextTerm(query.text, 1.0 - image_weight if both else 1.0))
    return tuple(terms)


def qrels_tasks(queries: Sequence[UserQuery]) -> list[str]:
    return sorted({q.task for q in queries})


def run_qrels(
    collection: IndexedCollection,
    variants: Sequence[Variant],
    *,
    qrels: str | Path,
    queries: Sequence[UserQuery] | None = None,
    image_weight: float = 0.5,
    settings: RunSettings | None = None,
    progress: ProgressFunction | None = None,
) -> ProtocolResult:
    """``variants`` must answer every task in :func:`qrels_tasks` of the file."""
    settings = settings or RunSettings()
    user_queries = list(queries) if queries is not None else read_qrels(qrels, collection)
    judged = []
    for query in user_queries:
        relevant = np.zeros(len(collection), bool)
        relevant[collection.positions_of(query.relevant_ids)] = True
        leave_out: tuple[int, ...] = ()
        if query.image_id is not None:
            leave_out = (int(collection.positions_of([query.image_id])[0]),)
        judged.append(
            JudgedQuery(
                query.name,
                relevant,
                leave_out=leave_out,
                parts={"terms": query_terms(query, image_weight)},
            )
        )

    def build(query: JudgedQuery, variant: Variant) -> Query:
        return Query(query.parts["terms"], method=variant.method, rerank=variant.rerank)

    methods, notes = compare(
        collection, judged, variant_approaches(variants, build), METRICS, settings, progress
    )
    details = {
        "qrels": str(qrels),
        "queries": len(judged),
        "tasks": qrels_tasks(user_queries),
        "image_weight": image_weight,
    }
    return protocol_result("qrels", collection, settings, details, methods, COLUMNS, notes)
