"""``attribute``: text queries that name an attribute value, with and without the object.

For every (object, value) pair with at least ``min_images`` images, the query
"a <value> <object>" (``a red tshirts``) ranks the whole collection, and the images
relevant to it are those with both that object and that value. For every value with at
least ``min_images`` images, "something <value>" (the value alone) ranks it too, and the
relevant images are those with the value, whatever their object.

Two rows per method: ``<method>`` for the object + value queries and
``<method>, value alone`` for the value-only ones. Then, for the first method only, one
row per value (values with at least ``min_images`` images), its object + value queries
and its value-alone query pooled: ``<method> · <value>``; they are the same rankings
regrouped, not new queries.

Reported: mAP, P@10 and hit@10 (the share of queries with a relevant image in the top
10).
"""

from __future__ import annotations

from collections.abc import Sequence

from spyglass.errors import InvalidQuery
from spyglass.eval.datasets import IndexedCollection, class_phrase
from spyglass.eval.protocols.running import (
    Approach,
    JudgedQuery,
    ProgressFunction,
    RunSettings,
    Steps,
    protocol_result,
    run_approach,
)
from spyglass.eval.results import (
    MethodResult,
    MetricSet,
    ProtocolResult,
    QueryOutcome,
    summarise,
)
from spyglass.eval.variants import Variant
from spyglass.query.terms import Query, TextTerm

METRICS = MetricSet(precision=(10,), hit=(10,))
COLUMNS = ["mAP", "P@10", "hit@10"]
DEFAULT_TEMPLATE = "a {value} {object}"
DEFAULT_VALUE_TEMPLATE = "something {value}"
#: Pairs and values with fewer images are not asked (their mAP is mostly noise).
DEFAULT_MIN_IMAGES = 5
ALONE = "value alone"


def attribute_queries(
    collection: IndexedCollection,
    *,
    attribute: str,
    object_column: str,
    template: str,
    value_template: str,
    min_images: int,
) -> tuple[list[JudgedQuery], list[JudgedQuery]]:
    """(object + value queries, value-alone queries), in sorted order. Each query's
    ``parts`` hold its ``text`` and its ``value``."""
    for wanted, name in ((template, "--template"), (value_template, "--value-template")):
        if "{value}" not in wanted:
            raise InvalidQuery(f"{name} '{wanted}' needs a {{value}} where the value goes")
    objects = collection.column(object_column).astype(str)
    values = collection.column(attribute).astype(str)
    usable = (objects != "") & (values != "")
    pairs: list[JudgedQuery] = []
    alone: list[JudgedQuery] = []
    for obj, value in sorted(set(zip(objects[usable], values[usable], strict=True))):
        relevant = (objects == obj) & (values == value)
        if relevant.sum() < min_images:
            continue
        text = template.format(value=class_phrase(value), object=class_phrase(obj))
        pairs.append(JudgedQuery(f"{value} {obj}", relevant, parts={"text": text, "value": value}))
    for value in sorted(set(values[usable])):
        relevant = usable & (values == value)
        if relevant.sum() < min_images:
            continue
        text = value_template.format(value=class_phrase(value))
        alone.append(JudgedQuery(value, relevant, parts={"text": text, "value": value}))
    return pairs, alone


def run_attribute(
    collection: IndexedCollection,
    variants: Sequence[Variant],
    *,
    attribute: str | None = None,
    object_column: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    value_template: str = DEFAULT_VALUE_TEMPLATE,
    min_images: int = DEFAULT_MIN_IMAGES,
    per_value: bool = True,
    settings: RunSettings | None = None,
    progress: ProgressFunction | None = None,
) -> ProtocolResult:
    settings = settings or RunSettings()
    attribute, object_column = collection.collection.attribute_and_object(
        attribute, object_column, ("the attribute the queries name", "the object the queries name")
    )
    pairs, alone = attribute_queries(
        collection,
        attribute=attribute,
        object_column=object_column,
        template=template,
        value_template=value_template,
        min_images=min_images,
    )
    if not pairs and not alone:
        raise InvalidQuery(
            f"no value of '{attribute}' has {min_images} images in {collection.collection.folder}"
        )
    steps = Steps((len(pairs) + len(alone)) * len(variants), progress)
    methods: list[MethodResult] = []
    notes: list[str] = []
    by_value: list[MethodResult] = []
    for number, variant in enumerate(variants):

        def build(query: JudgedQuery, variant: Variant = variant) -> Query:
            return Query(
                (TextTerm(query.parts["text"]),), method=variant.method, rerank=variant.rerank
            )

        approach = Approach(variant.name, build)
        try:
            paired = run_approach(collection, pairs, approach, steps)
            single = run_approach(collection, alone, approach, steps)
        except InvalidQuery as error:
            notes.append(f"{variant.name}: not applicable here ({error})")
            continue
        for name, outcomes in ((variant.name, paired), (f"{variant.name}, {ALONE}", single)):
            if outcomes:
                methods.append(_summary(name, outcomes, collection, settings))
        if number == 0 and per_value:
            value_of = {q.name: q.parts["value"] for q in [*pairs, *alone]}
            for value in sorted({q.parts["value"] for q in alone}):
                mine = [o for o in [*paired, *single] if value_of[o.name] == value]
                by_value.append(_summary(f"{variant.name} · {value}", mine, collection, settings))
    details = {
        "attribute": attribute,
        "object_column": object_column,
        "template": template,
        "value_template": value_template,
        "min_images": min_images,
        "queries": len(pairs),
        "value_queries": len(alone),
    }
    return protocol_result(
        "attribute", collection, settings, details, methods + by_value, COLUMNS, notes
    )


def _summary(
    name: str, outcomes: list[QueryOutcome], collection: IndexedCollection, settings: RunSettings
) -> MethodResult:
    return summarise(
        name,
        outcomes,
        METRICS,
        seed=settings.seed,
        resamples=settings.resamples,
        collection_size=len(collection),
    )
