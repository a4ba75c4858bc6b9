"""The evaluation protocols, one module each: ``text``, ``image``, ``fewshot``,
``composed``, ``attribute``, ``caption``, ``feedback`` and ``qrels`` (the user's own judgements).

Each ``run_*`` function takes an :class:`~spyglass.eval.datasets.IndexedCollection` and
the variants to compare, asks the engine every query, and returns a
:class:`~spyglass.eval.results.ProtocolResult`.
"""

#: Protocol -> the query task whose registered methods it compares.
PROTOCOL_TASKS = {
    "text": "text",
    "image": "image",
    "fewshot": "feedback",
    "composed": "image+text",
    "attribute": "text",
    "caption": "text",
    "feedback": "feedback",
}
