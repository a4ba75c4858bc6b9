"""Spyglass: text-guided image search. Find images by words, by example, and by both.

The engine is a library: :class:`Spyglass` takes an encoder and an index; the CLI and
the HTTP server only translate.
"""

from spyglass.encoders import Encoder, EncoderInfo, load_encoder
from spyglass.engine import IndexStatus, Spyglass
from spyglass.errors import SpyglassError
from spyglass.ingest.pipeline import IngestReport
from spyglass.query.terms import ImageTerm, Query, TextTerm, parse_terms
from spyglass.search import SearchResult
from spyglass.settings import IngestSettings, RuntimeSettings
from spyglass.store.index import Index

__all__ = [
    "Encoder",
    "EncoderInfo",
    "ImageTerm",
    "Index",
    "IndexStatus",
    "IngestReport",
    "IngestSettings",
    "Query",
    "RuntimeSettings",
    "SearchResult",
    "Spyglass",
    "SpyglassError",
    "TextTerm",
    "load_encoder",
    "parse_terms",
]
