"""Composed queries: a reference image plus a text saying how the wanted images differ.

"This shirt, in red", "this dog, as a sketch". Every method here answers the task
``image+text``; a query that lacks either part is ranked by ``sum``, since every
composition below reduces to its single part then.

The query's terms are first split (:func:`split_query`) into

- the reference ``v``: the weighted sum of the positive image terms, per space, unit;
- the modification ``t``: the weighted sum of the positive text terms, unit, in the
  text space, with their words joined (for methods that re-read the words);
- the text share ``a = sum(w_text) / (sum(w_image) + sum(w_text))`` over positive
  weights (``spyglass search --image-weight 0.3`` gives a = 0.7);
- the terms with negative weights, subtracted from whatever vector is finally searched
  (as ``sum`` does: q <- normalize(q + sum_j w_j u_j), w_j < 0).

Images marked good or bad join as image terms of weight +1 / -1, as in ``sum``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np

from spyglass.errors import InvalidQuery
from spyglass.query.fusion import fused_ranking
from spyglass.query.methods import (
    EmbeddedTerm,
    RankContext,
    Ranking,
    rank_sum,
    register,
    weighted_sum,
)

#: PDV's scale of the prompt direction added to the reference image (alpha_v).
PDV_IMAGE_SCALE = 1.0
#: PDV's scale of the prompt direction added to the stand-in's text (alpha_t).
PDV_TEXT_SCALE = 1.0
#: WeiMoCIR's weight of the caption similarity (beta): measured, docs/methods.md.
WEIMOCIR_CAPTION_WEIGHT = 0.5
#: How many of the best images by cos(q, x) WeiMoCIR re-scores with their captions.
WEIMOCIR_DEPTH = 100


@runtime_checkable
class DescribesImages(Protocol):
    """An encoder that can put an image into words: a text stand-in for it.

    Works from the vectors an image already has, so an indexed image needs no second
    pass through the model and no file read, and an uploaded or cropped one is treated
    the same way."""

    def describe_vectors(self, vectors: Mapping[str, np.ndarray]) -> list[str]:
        """{space: (n, dims) float32} vectors of n images -> n short texts."""
        ...


@runtime_checkable
class EmbedsCaptions(Protocol):
    """An encoder that keeps the vectors of the captions it wrote: WeiMoCIR embeds the
    captions of a hundred images per query, and they repeat across queries."""

    def embed_captions(self, captions: Sequence[str]) -> np.ndarray:
        """n captions -> (n, dims) float32 unit vectors in the text space."""
        ...


@dataclass(frozen=True)
class Composition:
    """A query split into its reference image and its modifying text (see the module)."""

    #: space -> (dims,) float32 unit vector of the reference image(s).
    reference: dict[str, np.ndarray]
    #: (dims,) float32 unit vector of the modifying text, in the text space.
    text: np.ndarray
    #: The modifying text's words (positive text terms joined by ", ").
    words: str
    #: a in [0, 1]: the text's share of the positive weight.
    text_share: float
    #: Terms with negative weights.
    against: tuple[EmbeddedTerm, ...]

    def searched(self, query: np.ndarray, space: str) -> np.ndarray:
        """``query`` (dims,) with the negative terms that live in ``space`` subtracted."""
        terms = [EmbeddedTerm("text", 1.0, {space: query})]
        terms += [t for t in self.against if space in t.vectors]
        return weighted_sum(terms, space)


def split_query(context: RankContext) -> Composition | None:
    """The reference / modification split of a query; ``None`` without both parts."""
    terms = list(context.terms)
    spaces = list(context.info.spaces)
    for sign, marked in ((1.0, context.positives), (-1.0, context.negatives)):
        count = min((len(marked[s]) for s in spaces if s in marked), default=0)
        for row in range(count):
            terms.append(EmbeddedTerm("image", sign, {s: marked[s][row] for s in spaces}))
    images = [t for t in terms if t.kind == "image" and t.weight > 0]
    texts = [t for t in terms if t.kind == "text" and t.weight > 0]
    if not images or not texts:
        return None
    text_space = context.info.text_space
    image_weight = sum(t.weight for t in images)
    text_weight = sum(t.weight for t in texts)
    # Weights relative to their part's total: a part's direction does not depend on how
    # small its weights are, only on their ratios.
    images = [replace(t, weight=t.weight / image_weight) for t in images]
    texts = [replace(t, weight=t.weight / text_weight) for t in texts]
    reference = {
        space: weighted_sum(images, space)
        for space in spaces
        if all(space in t.vectors for t in images)
    }
    if text_space not in reference:
        raise InvalidQuery(f"the query image has no vector in the {text_space} space")
    return Composition(
        reference=reference,
        text=weighted_sum(texts, text_space),
        words=", ".join(t.label for t in texts if t.label),
        text_share=text_weight / (image_weight + text_weight),
        against=tuple(t for t in terms if t.weight < 0),
    )


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise InvalidQuery("the query's image and text cancel each other out")
    return (vector / norm).astype(np.float32)


# -- WeiMoCIR ----------------------------------------------------------------------------


def weimocir_query(reference: np.ndarray, text: np.ndarray, text_share: float) -> np.ndarray:
    """q = (1 - a) v + a t for unit (dims,) vectors v and t, returned unit (dims,)."""
    return _unit((1.0 - text_share) * reference + text_share * text)


def caption_fusion(
    image_scores: np.ndarray, caption_scores: np.ndarray, caption_weight: float
) -> np.ndarray:
    """WeiMoCIR's similarity fusion s = (1 - b) cos(q, x) + b cos(q, c): (n,), (n,) -> (n,)."""
    return (1.0 - caption_weight) * image_scores + caption_weight * caption_scores


def caption_vectors(context: RankContext, image_ids: Sequence[int]) -> np.ndarray | None:
    """(n, dims) float32 unit text vectors of the captions of indexed images, in the
    text space: each image described from its stored vectors, each distinct caption
    embedded once (or remembered, :class:`EmbedsCaptions`). ``None`` when the encoder
    cannot describe images."""
    encoder = context.encoder
    if not isinstance(encoder, DescribesImages):
        return None
    ids = np.asarray(image_ids, np.int64)
    stores = context.index.stores
    vectors = {s: stores[s].fetch(ids) for s in context.info.spaces if s in stores}
    captions = encoder.describe_vectors(vectors)
    if isinstance(encoder, EmbedsCaptions):
        return encoder.embed_captions(captions)
    distinct = sorted(set(captions))
    embedded = dict(zip(distinct, encoder.embed_texts(distinct), strict=True))
    return np.stack([embedded[c] for c in captions]).astype(np.float32)


@register(
    "weimocir",
    "WeiMoCIR: q = (1-a) v_ref + a t_mod, scored on images and their captions (= sum if the "
    "model cannot caption)",
    tasks=("image+text",),
)
def rank_weimocir(context: RankContext, k: int) -> Ranking:
    """WeiMoCIR (Wu, Lin and Yang, "Training-free Zero-shot Composed Image Retrieval via
    Weighted Modality Fusion and Similarity", TAAI 2024, arXiv:2409.04918).

    Query: q = (1 - a) v + a t, with v the reference image's and t the text's unit
    vectors in the joint space and a the text share of the query's weights. Score of
    gallery image n: s_n = (1 - b) cos(q, x_n) + b cos(q, c_n) (:func:`caption_fusion`),
    where c_n embeds a caption of image n. The paper captions the gallery with a
    multimodal LLM; here the caption comes from the encoder when it can describe images
    (:class:`DescribesImages`: the bundled model names an image's nearest class, its
    colour and its style, "a photo of a red jersey"), for the best
    :data:`WEIMOCIR_DEPTH` images by cos(q, x); the rest follow in that order. b is
    :data:`WEIMOCIR_CAPTION_WEIGHT`. With a model that cannot describe images, b = 0
    and this ranks exactly as ``sum`` does.
    """
    parts = split_query(context)
    if parts is None:
        return rank_sum(context, k)
    space = context.info.text_space
    query = parts.searched(
        weimocir_query(parts.reference[space], parts.text, parts.text_share), space
    )
    if not isinstance(context.encoder, DescribesImages) or WEIMOCIR_CAPTION_WEIGHT == 0:
        return context.search(space, query, k)
    first = context.search(space, query, max(k, WEIMOCIR_DEPTH))
    head, tail = first[:WEIMOCIR_DEPTH], first[WEIMOCIR_DEPTH:]
    ids = [i for i, _ in head]
    captions = caption_vectors(context, ids) if ids else None
    if captions is None:
        return first[:k]
    scores = caption_fusion(
        np.array([s for _, s in head], np.float64), captions @ query, WEIMOCIR_CAPTION_WEIGHT
    )
    order = np.lexsort((np.asarray(ids, np.int64), -scores))
    rescored = [(ids[i], float(scores[i])) for i in order.tolist()]
    # The rest keep their order below the re-scored head.
    floor = min(s for _, s in rescored) if rescored else 0.0
    shift = floor - max((s for _, s in tail), default=floor) - 1e-6
    return (rescored + [(i, s + shift) for i, s in tail])[:k]


# -- Slerp ---------------------------------------------------------------------------


def slerp(start: np.ndarray, end: np.ndarray, share: float) -> np.ndarray:
    """Spherical interpolation between unit (dims,) vectors, ``share`` of the way to ``end``:

        slerp(v, t; a) = sin((1 - a) theta) / sin(theta) v + sin(a theta) / sin(theta) t,
        theta = arccos(v . t).

    The result is unit and makes the angle a * theta with ``start``. Nearly parallel
    vectors fall back to the normalised linear mix (the limit as theta -> 0); opposite
    vectors have no unique great circle and are refused.
    """
    cosine = float(np.clip(np.dot(start, end), -1.0, 1.0))
    theta = float(np.arccos(cosine))
    if theta < 1e-4:
        return _unit((1.0 - share) * start + share * end)
    if np.pi - theta < 1e-4:
        raise InvalidQuery("the query's image and text point in opposite directions")
    sine = np.sin(theta)
    mixed = (np.sin((1.0 - share) * theta) / sine) * start + (np.sin(share * theta) / sine) * end
    return _unit(mixed)


@register(
    "slerp",
    "spherical interpolation from the reference image to the text in the joint space",
    tasks=("image+text",),
)
def rank_slerp(context: RankContext, k: int) -> Ranking:
    """Slerp (Jang, Kim, Kang and Kim, "Spherical Linear Interpolation and
    Text-Anchoring for Zero-shot Composed Image Retrieval", ECCV 2024; the
    interpolation is Shoemake's, SIGGRAPH 1985).

    q = slerp(v, t; a) (see :func:`slerp`): unlike the linear mix, the query stays on
    the unit sphere and moves by an angle proportional to a, so a = 0.5 lands halfway
    in angle between the image and the text.
    """
    parts = split_query(context)
    if parts is None:
        return rank_sum(context, k)
    space = context.info.text_space
    query = slerp(parts.reference[space], parts.text, parts.text_share)
    return context.search(space, parts.searched(query, space), k)


# -- Prompt Directional Vectors ------------------------------------------------------------


def pdv_query(
    reference: np.ndarray,
    stand_in: np.ndarray,
    composed: np.ndarray,
    text_share: float,
    image_scale: float = PDV_IMAGE_SCALE,
    text_scale: float = PDV_TEXT_SCALE,
) -> np.ndarray:
    """PDV's fused query from unit (dims,) vectors:

        d     = T(c + m) - T(c)                       the prompt's direction
        v'    = normalize(v + alpha_v d)               composed image
        t'    = normalize(T(c) + alpha_t d)            composed text
        q     = normalize((1 - a) v' + a t')

    with ``reference`` = v, ``stand_in`` = T(c), ``composed`` = T(c + m).
    """
    direction = composed - stand_in
    image = _unit(reference + image_scale * direction)
    text = _unit(stand_in + text_scale * direction)
    return _unit((1.0 - text_share) * image + text_share * text)


def compose_prompt(stand_in: str, modification: str) -> str:
    """The stand-in's text followed by the modification: "a photo of a dog as a sketch"."""
    return f"{stand_in.rstrip(' .,')} {modification.strip()}".strip()


@register(
    "pdv",
    "Prompt Directional Vectors: move the reference along T(stand-in + text) - T(stand-in)",
    tasks=("image+text",),
)
def rank_pdv(context: RankContext, k: int) -> Ranking:
    """PDV (Tursun, Kalkan, Denman and Fookes, "PDV: Prompt Directional Vectors for
    Zero-shot Composed Image Retrieval", arXiv:2502.07215, 2025); formula in
    :func:`pdv_query`.

    The text stand-in c for the reference image comes from the encoder when it can
    describe images (:class:`DescribesImages`; the bundled model names the ImageNet
    classes nearest to the image's joint vector). Scales alpha_v = alpha_t = 1; the
    fusion weight is the query's text share a.
    """
    parts = split_query(context)
    if parts is None:
        return rank_sum(context, k)
    encoder = context.encoder
    if not isinstance(encoder, DescribesImages):
        name = context.info.name
        raise InvalidQuery(
            f"method pdv needs a model that can describe an image in words; '{name}' "
            "cannot: use --method slerp or late-fusion"
        )
    space = context.info.text_space
    vectors = {s: v.reshape(1, -1) for s, v in parts.reference.items()}
    (stand_in,) = encoder.describe_vectors(vectors)
    stand_in_vector, composed = encoder.embed_texts(
        [stand_in, compose_prompt(stand_in, parts.words)]
    )
    query = pdv_query(parts.reference[space], stand_in_vector, composed, parts.text_share)
    return context.search(space, parts.searched(query, space), k)


# -- late fusion across spaces ------------------------------------------------------------


@register(
    "late-fusion",
    "image-only space for the reference, joint space for the text, z-scores fused per image",
    tasks=("image+text",),
)
def rank_late_fusion(context: RankContext, k: int) -> Ranking:
    """Late fusion of scores across spaces (as in the score-level fusion of
    multi-modal retrieval, e.g. Atrey et al., "Multimodal fusion for multimedia
    analysis: a survey", Multimedia Systems 2010; WeiMoCIR's similarity fusion is
    the same rule within one space).

    The reference is scored where images compare best (the encoder's image space:
    pooled CNN features for the bundled model), the text where it lives (the joint
    space). Over the union U of the top ``max(k, FUSION_DEPTH)`` of each list, each
    cosine is standardised by its mean and spread over the collection (estimated on a
    random sample: :func:`~spyglass.query.fusion.fused_ranking`) and combined:

        s(x) = (1 - a) z(cos(v_img, x_img)) + a z(cos(t, x_joint))

    A candidate missing from one list gets its exact whole-image cosine there. The
    returned scores are these fused z-scores, not cosines.
    """
    parts = split_query(context)
    if parts is None:
        return rank_sum(context, k)
    image_space = context.info.image_space
    text_space = context.info.text_space
    if image_space not in parts.reference:
        image_space = text_space
    fused = [
        (
            image_space,
            parts.searched(parts.reference[image_space], image_space),
            1.0 - parts.text_share,
        ),
        (text_space, parts.searched(parts.text, text_space), parts.text_share),
    ]
    return fused_ranking(context, fused, k)


# -- Pic2Word ---------------------------------------------------------------------------


@register(
    "pic2word",
    "Pic2Word: the image as a pseudo word in 'a photo of * <text>' (train it first)",
    tasks=("image+text",),
)
def rank_pic2word(context: RankContext, k: int) -> Ranking:
    """Pic2Word (Saito, Sohn, Zhang, Li, Lee, Saenko and Pfister, "Pic2Word: Mapping
    Pictures to Words for Zero-shot Composed Image Retrieval", CVPR 2023).

    A network f trained on this index's images (``spyglass train pic2word``) maps the
    reference to a pseudo word s = f(v); the query is the text encoder's embedding of
    the prompt "a photo of * <text>" with s as the input vector of ``*``:
    q = T("a photo of", s, text). A text that holds ``*`` itself ("a sketch of *") is
    used as the prompt as written. The image / text weights do not apply.
    """
    parts = split_query(context)
    if parts is None:
        return rank_sum(context, k)
    from spyglass.query.pic2word import pic2word_query

    space = context.info.text_space
    query = pic2word_query(context, parts.reference, parts.words)
    return context.search(space, parts.searched(query, space), k)
