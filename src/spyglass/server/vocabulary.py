"""Words for groups of images: a vocabulary embedded once per server with the index's own
text encoder, so that a cluster can be named by the words nearest its centre instead of
"Group 1".

The vocabulary is the 1,000 ImageNet-1k class names (bundled with Spyglass), each
embedded as "a photo of a {name}". Image vectors of the text space (``info.text_space``,
where text queries meet images) are compared with them, which works for the bundled
model (its joint space is built from these very names) and for CLIP-family models alike.
Embedding takes a few seconds; the matrix is kept on disk per model when a cache folder
is given, and in memory otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spyglass.encoders import Encoder
from spyglass.encoders.base import normalize_rows
from spyglass.server.background import BackgroundStopped, stop_point

log = logging.getLogger("spyglass.server")

PROMPT = "a photo of a {}"
#: Texts per encoder call: large enough to be quick, small enough to leave the searches
#: that run next to it room on a busy machine.
BATCH = 64
#: Share of a word's mean similarity to the other groups subtracted from its score, so
#: that a group is named by what sets it apart (words every group is near lose).
CONTRAST = 0.5


def imagenet_words() -> list[str]:
    """The ImageNet-1k class names, each once (two names occur twice), in class order."""
    from spyglass.encoders.bundled import imagenet_class_names

    return list(dict.fromkeys(imagenet_class_names()))


@dataclass(frozen=True)
class GroupName:
    """The words naming one group, best first, with each word's cosine similarity to
    the group's mean direction."""

    words: tuple[str, ...]
    similarity: tuple[float, ...]


class Vocabulary:
    """Words and their (n, d) float32 unit vectors in the encoder's text space."""

    def __init__(
        self,
        encoder: Encoder,
        folder: Path | None,
        words: Sequence[str] | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.encoder = encoder
        self.folder = folder
        self.words = list(words) if words is not None else imagenet_words()
        self.stopping = stopping
        self._vectors: np.ndarray | None = None
        self._failed: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        info = self.encoder.info
        digest = hashlib.blake2b(digest_size=10)
        digest.update(f"{info.name}|{info.version}|{info.text_space}|{PROMPT}|".encode())
        digest.update("\n".join(self.words).encode())
        return f"{info.name}-{digest.hexdigest()}"

    def start(self) -> None:
        """Embed the words in a background thread (the server calls this at start)."""
        self._thread = threading.Thread(
            target=self.vectors, name="spyglass-vocabulary", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the background embedding (after ``stopping`` is set: one batch)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def vectors(self) -> np.ndarray | None:
        """(words, d) float32 unit rows; embeds them on first call (others wait). None
        if they cannot be embedded (the failure is logged once)."""
        with self._lock:
            if self._vectors is None and self._failed is None:
                try:
                    loaded = self._load()
                    self._vectors = loaded if loaded is not None else self._embed()
                except BackgroundStopped:
                    return None  # shutting down; a later server embeds them again
                except Exception as error:  # names are a nicety: never fail a request
                    log.exception("the vocabulary could not be embedded")
                    self._failed = str(error)
            return self._vectors

    def name(self, centres: np.ndarray, count: int = 3) -> list[GroupName]:
        """Name each of (g, d) float32 mean directions in the text space by its ``count``
        best words: nearest the centre, less ``CONTRAST`` times the word's mean
        similarity to the other centres. No word names two groups' first place: a
        later group (in the given order) takes its next best word instead. Ties go to
        the earlier word of the vocabulary. Empty names if the vocabulary is missing."""
        vectors = self.vectors()
        groups = len(centres)
        if vectors is None or groups == 0:
            return [GroupName((), ()) for _ in range(groups)]
        similarity = normalize_rows(np.asarray(centres, np.float32)) @ vectors.T  # (g, words)
        score = similarity.copy()
        if groups > 1:
            others = (similarity.sum(0, keepdims=True) - similarity) / (groups - 1)
            score -= CONTRAST * others
        taken: set[int] = set()
        names = []
        for g in range(groups):
            order = np.argsort(-score[g], kind="stable")
            first = next((int(w) for w in order if int(w) not in taken), int(order[0]))
            taken.add(first)
            chosen = [first, *[int(w) for w in order if int(w) != first][: count - 1]]
            names.append(
                GroupName(
                    tuple(self.words[w] for w in chosen),
                    tuple(round(float(similarity[g, w]), 4) for w in chosen),
                )
            )
        return names

    def _embed(self) -> np.ndarray:
        prompts = [PROMPT.format(word) for word in self.words]
        parts = []
        for start in range(0, len(prompts), BATCH):
            stop_point(self.stopping)
            parts.append(self.encoder.embed_texts(prompts[start : start + BATCH]))
        vectors = normalize_rows(np.concatenate(parts))
        self._save(vectors)
        return vectors

    def _path(self) -> Path | None:
        return None if self.folder is None else self.folder / f"{self.key}.npy"

    def _load(self) -> np.ndarray | None:
        path = self._path()
        if path is None or not path.is_file():
            return None
        try:
            vectors = np.load(path)
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable vocabulary cache %s: %s", path, error)
            return None
        if vectors.shape[0] != len(self.words):
            return None
        return np.asarray(vectors, np.float32)

    def _save(self, vectors: np.ndarray) -> None:
        path = self._path()
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
            try:
                with os.fdopen(handle, "wb") as out:
                    np.save(out, vectors)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            log.warning("the vocabulary is not cached: cannot write %s (%s)", path.parent, error)
