"""The one small interface every encoder implements.

An encoder turns texts and images into unit vectors. An image may get vectors in more
than one *space*: the joint space shared with text (for text queries), and optionally
an image-only space that is better for image-to-image similarity (the bundled model's
pooled CNN features). :class:`EncoderInfo` says which space serves which purpose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

JOINT_SPACE = "joint"


@dataclass(frozen=True)
class EncoderInfo:
    """What an index records about the encoder that built it.

    Two encoders with the same ``name`` and ``version`` produce the same vectors; an index
    refuses to mix vectors whose info differ.
    """

    name: str
    version: str
    #: Space name -> dimensions of its vectors.
    spaces: Mapping[str, int]
    #: The space text queries are embedded into.
    text_space: str = JOINT_SPACE
    #: The space that works best for image -> image similarity.
    image_space: str = JOINT_SPACE
    #: How to load this encoder again (the model spec), recorded in the index.
    spec: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "spaces": dict(self.spaces),
            "text_space": self.text_space,
            "image_space": self.image_space,
            "spec": dict(self.spec),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EncoderInfo:
        return cls(
            name=data["name"],
            version=data["version"],
            spaces={k: int(v) for k, v in data["spaces"].items()},
            text_space=data.get("text_space", JOINT_SPACE),
            image_space=data.get("image_space", JOINT_SPACE),
            spec=data.get("spec", {}),
        )

    def same_vectors_as(self, other: EncoderInfo) -> bool:
        return (
            self.name == other.name
            and self.version == other.version
            and dict(self.spaces) == dict(other.spaces)
        )

    def describe(self) -> str:
        dims = ", ".join(f"{space} {d}-d" for space, d in self.spaces.items())
        return f"'{self.name}' (version {self.version}; {dims})"


def mismatch_message(folder: object, recorded: EncoderInfo, wanted: EncoderInfo) -> str:
    """One line for an index whose vectors another encoder made. Versions read
    ``<generation>-<config hash>``: another generation of the same model makes other
    vectors for the same settings, so the index must be rebuilt; another model, or the
    same one set up otherwise, needs ``--model``."""
    generations = [v.split("-", 1)[0] for v in (recorded.version, wanted.version)]
    newer = all(g.isdigit() for g in generations) and generations[0] != generations[1]
    if recorded.name == wanted.name and newer:
        return (
            f"index {folder} was built by version {recorded.version} of model "
            f"'{recorded.name}', whose vectors this Spyglass no longer makes (version "
            f"{wanted.version}): re-index: remove {folder} and run spyglass index again"
        )
    if recorded.name == wanted.name:
        # Same name, set up otherwise (say, the bundled model's float image model
        # before int8 became its default): the index's recorded spec reloads its own.
        return (
            f"index {folder} was built with model {recorded.describe()}, set up otherwise "
            f"than {wanted.describe()}; leave out --model to use the index's own, or "
            "use another --index"
        )
    return (
        f"index {folder} was built with model {recorded.describe()}, not "
        f"{wanted.describe()}; use --model {recorded.name} or another --index"
    )


@runtime_checkable
class Encoder(Protocol):
    """Texts and images to unit vectors.

    ``preprocess`` must be thread-safe: ingest calls it from decode workers while the
    encoder runs ``embed_pixels`` on the previous batch.
    """

    info: EncoderInfo

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> model input, float32 array of the encoder's fixed shape."""
        ...

    def embed_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Stacked ``preprocess`` outputs (n, ...) -> {space: (n, dims) float32 unit rows}."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """n texts -> (n, dims[text_space]) float32 unit rows."""
        ...


@runtime_checkable
class CountsTokens(Protocol):
    """An encoder that can say how much of a text it reads.

    Text models read at most ``max_text_tokens`` tokens and silently drop the rest; this
    lets the engine tell the person (see :meth:`spyglass.engine.Spyglass.query_notes`).
    Kept apart from :class:`Encoder` so that an encoder without a tokenizer of its own
    (a test double, a plug-in) still is one: the engine asks ``isinstance(encoder,
    CountsTokens)`` and stays quiet when the answer is no.
    """

    @property
    def max_text_tokens(self) -> int:
        """Tokens the text model reads, special tokens included; the rest is cut."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` before any cut, counted as ``max_text_tokens`` is (special
        tokens included, after the model's own text cleaning)."""
        ...


def embed_images(encoder: Encoder, images: Sequence[Image.Image]) -> dict[str, np.ndarray]:
    """Convenience: preprocess and embed in one call. Returns {space: (n, dims) float32}."""
    if not images:
        return {
            space: np.zeros((0, dims), np.float32) for space, dims in encoder.info.spaces.items()
        }
    pixels = np.stack([encoder.preprocess(image) for image in images])
    return encoder.embed_pixels(pixels)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d) float32 with unit L2 rows; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
