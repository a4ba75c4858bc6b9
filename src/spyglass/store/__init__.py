"""Where vectors and the catalogue live: the :class:`Index` and its vector stores."""

from spyglass.store.base import Neighbours, VectorStore
from spyglass.store.catalogue import Catalogue, FileState, ImageRecord, NewImage, SkippedFile
from spyglass.store.index import Index
from spyglass.store.local import LocalVectorStore
from spyglass.store.memory import MemoryVectorStore

__all__ = [
    "Catalogue",
    "FileState",
    "ImageRecord",
    "Index",
    "LocalVectorStore",
    "MemoryVectorStore",
    "Neighbours",
    "NewImage",
    "SkippedFile",
    "VectorStore",
]
