"""``text``: one text query per class, ranking the whole collection; same class is relevant.

The query of a class is a prompt template filled with the class name written as words
(``car_side`` -> "a photo of a car side"). Several templates are an ensemble: each
becomes a term of one query with weight 1/n. A query file replaces the templates with
the user's own wording per class.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import IndexedCollection, class_phrase
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
from spyglass.query.terms import Query, TextTerm

DEFAULT_TEMPLATE = "a photo of a {}"
METRICS = MetricSet(precision=(10, 100), recall=(10, 100), r_precision=True)
COLUMNS = ["mAP", "P@10", "P@100", "recall@100", "R-prec"]


def read_query_file(path: str | Path) -> dict[str, list[str]]:
    """A CSV with columns ``label,query`` (a label may have several rows: an ensemble)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidQuery(f"query file not found: {path}")
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"label", "query"} <= set(reader.fieldnames):
            raise InvalidQuery(f"{path} needs the columns 'label' and 'query'")
        queries: dict[str, list[str]] = {}
        for row in reader:
            text = (row["query"] or "").strip()
            if text:
                queries.setdefault(row["label"], []).append(text)
    return queries


def class_texts(
    labels: Sequence[str],
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    query_file: Mapping[str, list[str]] | None = None,
) -> dict[str, list[str]]:
    """Class label -> its query texts (from the query file, else the templates)."""
    for template in templates:
        if "{}" not in template:
            raise InvalidQuery(f"template '{template}' needs a {{}} where the class name goes")
    texts: dict[str, list[str]] = {}
    for label in labels:
        if query_file is not None:
            if label not in query_file:
                continue  # classes the user wrote no query for are not asked
            texts[label] = list(query_file[label])
        else:
            texts[label] = [t.format(class_phrase(label)) for t in templates]
    return texts


def text_terms(texts: Sequence[str]) -> tuple[TextTerm, ...]:
    return tuple(TextTerm(t, 1.0 / len(texts)) for t in texts)


def class_queries(
    collection: IndexedCollection, texts: Mapping[str, list[str]]
) -> list[JudgedQuery]:
    labels = collection.column(collection.collection.rules.label)
    return [
        JudgedQuery(label, labels == label, parts={"texts": texts[label]})
        for label in sorted(texts)
    ]


def run_text(
    collection: IndexedCollection,
    variants: Sequence[Variant],
    *,
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    query_file: str | Path | None = None,
    settings: RunSettings | None = None,
    progress: ProgressFunction | None = None,
) -> ProtocolResult:
    settings = settings or RunSettings()
    label_column, column = collection.class_labels()
    labels = sorted(set(column) - {""})
    file_queries = read_query_file(query_file) if query_file else None
    texts = class_texts(labels, templates, file_queries)
    if not texts:
        raise InvalidQuery(f"no query in {query_file} names a class of the collection")
    queries = class_queries(collection, texts)

    def build(query: JudgedQuery, variant: Variant) -> Query:
        return Query(text_terms(query.parts["texts"]), method=variant.method, rerank=variant.rerank)

    methods, notes = compare(
        collection, queries, variant_approaches(variants, build), METRICS, settings, progress
    )
    details = {
        "label_column": label_column,
        "classes": len(queries),
        "templates": list(templates) if file_queries is None else None,
        "query_file": str(query_file) if query_file else None,
    }
    return protocol_result("text", collection, settings, details, methods, COLUMNS, notes)
