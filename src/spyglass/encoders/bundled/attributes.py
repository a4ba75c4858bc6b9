"""The bundled model's attribute channel: an image's colours and depiction style as words.

ConSE (see :mod:`spyglass.encoders.bundled`) only knows what ImageNet's classes name, so
"a red dress" ranked dresses of every colour. This channel names two things the
classifier ignores, from the pixels, and writes them into the same MiniLM space:

- **colour**: every pixel of the centre crop (pooled to 56 x 56) is converted to CIE Lab
  and softly assigned to the basic colour terms of :data:`PALETTE` (Berlin and Kay's
  eleven, plus five that catalogues use), by a Gaussian of its Lab distance to each term's
  prototype. Pixels count more towards the object than towards the background: a centre
  prior, and a weight that falls for pixels that look like the image's border (the
  backdrop of a product photo, the paper of a sketch). The result is a distribution
  ``h`` over the terms.
- **style**: photo / cartoon / sketch from image statistics (saturation, chroma, the
  share of near-white pixels, edge density, flat regions, tone spread) by a softmax
  regression (:data:`STYLE_WEIGHTS`), fitted on PACS classes dog, elephant and giraffe
  only (:mod:`~spyglass.encoders.bundled.fit_style`); guitar, horse, house and person
  are held out.

Each term is a MiniLM embedding of its word, centred on the mean of its group so that
only what tells the terms apart is added (every colour word shares a "colour" direction
that would otherwise move all images alike). The image's joint vector becomes

    joint(x) = normalize( conse(x) + w_c * sum_c h_c (s(c) - mean_c s)
                                   + w_s * sum_s p_s (s(s) - mean_s s) )

with the weights ``w_c``, ``w_s`` chosen by measurement (docs/methods.md). A text query
naming a colour ("a red dress", "something red") is embedded by MiniLM as before, so it
now lands nearer images of that colour.
"""

from __future__ import annotations

import numpy as np

#: sRGB prototypes of the colour terms (the word -> (r, g, b) on 0..255): Berlin and
#: Kay's (1969) basic colour terms, with navy, maroon, olive, beige and silver added
#: because product catalogues name them; typical shades set by hand, not fitted to data.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "white": (250, 250, 250),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "red": (200, 25, 30),
    "maroon": (115, 20, 35),
    "pink": (240, 140, 175),
    "orange": (245, 130, 30),
    "yellow": (245, 215, 40),
    "green": (40, 150, 60),
    "olive": (110, 110, 45),
    "blue": (40, 90, 200),
    "navy blue": (25, 35, 85),
    "purple": (120, 50, 150),
    "brown": (120, 75, 40),
    "beige": (220, 200, 165),
}
#: The style terms, in :data:`STYLE_WEIGHTS`' order, and the words that stand for them.
STYLES: dict[str, str] = {"photo": "a photo", "cartoon": "a cartoon", "sketch": "a sketch"}
#: Softmax regression from :func:`style_features` (standardised by STYLE_MEAN/STYLE_SCALE)
#: to the styles, the last row the intercepts; fitted on PACS dog, elephant and giraffe
#: (:mod:`spyglass.encoders.bundled.fit_style`): 94.8% right on the 4,740 held-out
#: images of the other four classes (photo 92.5%, cartoon 89.7%, sketch 99.9%).
STYLE_MEAN = np.array([0.1263, 0.1175, 0.637, 0.799, 0.2435, 0.5787, 0.3511, 0.2539], np.float32)
STYLE_SCALE = np.array([0.2, 0.1791, 0.3209, 0.2929, 0.0891, 0.2402, 0.1083, 0.1883], np.float32)
STYLE_WEIGHTS = np.array(
    [
        [0.3451, 0.5653, -0.9104],
        [0.4292, 2.1002, -2.5294],
        [-3.1579, -1.1114, 4.2693],
        [-0.8708, -0.1442, 1.0149],
        [-1.4677, -0.3321, 1.7997],
        [-3.1325, 0.151, 2.9815],
        [0.8553, -0.2037, -0.6516],
        [1.463, 0.6396, -2.1026],
        [-2.4546, 4.762, -2.3073],
    ],
    np.float32,
)

#: How much the colour and the style words weigh against the ConSE vector (unit): chosen
#: by measurement on a split of the data, docs/methods.md.
COLOUR_WEIGHT = 1.0
STYLE_WEIGHT = 0.5
#: Lab distance at which a pixel's vote for a colour term has fallen to exp(-1/2).
COLOUR_SPREAD = 12.0
#: Centre prior: a Gaussian whose standard deviation is this share of the crop's side.
CENTRE_SIGMA = 0.3
#: Lab distance within which a pixel looks like the border (the backdrop), and how much
#: such a pixel still counts.
BACKDROP_DISTANCE = 10.0
BACKDROP_WEIGHT = 0.05
#: The crop is pooled by this factor before colours are named (224 -> 56).
POOL = 4
#: EfficientNet-Lite's normalisation, undone to get 0..255 pixels back.
PIXEL_MEAN = 127.0
PIXEL_SCALE = 128.0


def _linear_table() -> np.ndarray:
    c = np.arange(256, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


#: sRGB byte -> linear light (the sRGB transfer function, tabulated).
_LINEAR = _linear_table()
#: Linear sRGB -> CIE XYZ, each column divided by D65 white's X, Y, Z.
_TO_XYZ = (
    np.array(
        [[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]],
        np.float32,
    )
    / np.array([0.95047, 1.0, 1.08883], np.float32)
).astype(np.float32)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB on 0..255 (rounded to bytes) -> (..., 3) CIE Lab (D65), float32."""
    codes = np.clip(np.rint(np.asarray(rgb, np.float32)), 0, 255).astype(np.uint8)
    xyz = _LINEAR[codes] @ _TO_XYZ
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    lab = np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )
    return lab.astype(np.float32)


PALETTE_LAB = srgb_to_lab(np.array(list(PALETTE.values()), np.float32))


def pooled_lab(pixels: np.ndarray) -> np.ndarray:
    """(n, 3, 224, 224) normalised model input -> (n, 56, 56, 3) float32 Lab of the
    crop's sRGB pooled by :data:`POOL`."""
    rgb = np.asarray(pixels, np.float32)
    n, _, height, width = rgb.shape
    # POOL x POOL means as sums of strided slices: numpy's mean over two non-adjacent
    # short axes ran at a third of this speed (about 3 ms an image, a sixth of what
    # the model itself costs).
    across = rgb.reshape(n, 3, height, width // POOL, POOL)
    columns = sum(across[..., i] for i in range(1, POOL)) + across[..., 0]
    down = columns.reshape(n, 3, height // POOL, POOL, width // POOL)
    pooled = (sum(down[:, :, :, i] for i in range(1, POOL)) + down[:, :, :, 0]) / (POOL * POOL)
    return srgb_to_lab(pooled.transpose(0, 2, 3, 1) * PIXEL_SCALE + PIXEL_MEAN)


def object_weights(lab: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) Lab -> (n, h, w) float32 weights, summing to 1 per image: a centre
    prior times a low weight for pixels close to the border's median colour."""
    _, height, width, _ = lab.shape
    ys = (np.arange(height) + 0.5) / height - 0.5
    xs = (np.arange(width) + 0.5) / width - 0.5
    centre = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * CENTRE_SIGMA**2))
    border = np.concatenate(
        [lab[:, 0], lab[:, -1], lab[:, 1:-1, 0], lab[:, 1:-1, -1]], axis=1
    )  # (n, perimeter, 3)
    backdrop = np.median(border, axis=1)  # (n, 3)
    distance = np.linalg.norm(lab - backdrop[:, None, None, :], axis=-1)
    looks_like_border = distance < BACKDROP_DISTANCE
    weights = centre[None] * np.where(looks_like_border, BACKDROP_WEIGHT, 1.0)
    return (weights / weights.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


def colour_histogram(lab: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) Lab (:func:`pooled_lab`) -> (n, len(PALETTE)) float32: each image's
    share of each colour term, object-weighted; rows sum to 1."""
    # Colours on the middle axis, pixels last: the reductions over the 16 colours are
    # then element-wise over long rows (reduced along a last axis of 16 they were slow).
    channels = lab.reshape(len(lab), -1, 3).transpose(0, 2, 1)  # (n, 3, h*w)
    squared = (
        (channels**2).sum(axis=1, keepdims=True)
        - 2 * (PALETTE_LAB @ channels)
        + (PALETTE_LAB**2).sum(axis=-1)[:, None]
    )  # (n, colours, h*w)
    votes = np.exp(-(squared - squared.min(axis=1, keepdims=True)) / (2 * COLOUR_SPREAD**2))
    votes /= votes.sum(axis=1, keepdims=True)
    weights = object_weights(lab).reshape(len(lab), -1, 1)
    return (votes @ weights)[:, :, 0].astype(np.float32)


def style_features(lab: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) Lab (:func:`pooled_lab`) -> (n, 8) float32 image statistics: mean
    chroma, spread of chroma, share of near-white pixels, share of grey pixels, edge
    density, share of flat pixels, spread of lightness, and entropy of the hue-lightness
    histogram."""
    light, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma = np.hypot(a, b)
    gy = np.abs(np.diff(light, axis=1))[:, :, :-1]
    gx = np.abs(np.diff(light, axis=2))[:, :-1, :]
    gradient = np.hypot(gx, gy)
    # 4 lightness bands x (grey, or one of 6 hue sectors): 28 bins.
    band = np.clip(light // 25, 0, 3).astype(np.int64)
    hue = ((np.arctan2(b, a) + np.pi) / (2 * np.pi) * 6).astype(np.int64) % 6
    codes = band * 7 + np.where(chroma < 8, 0, hue + 1)
    counts = np.stack([np.bincount(c.ravel(), minlength=28) for c in codes]).astype(np.float32)
    shares = counts / counts.sum(axis=1, keepdims=True)
    entropy = -(shares * np.log(np.where(shares > 0, shares, 1.0))).sum(axis=1)
    features = np.stack(
        [
            chroma.mean(axis=(1, 2)) / 50.0,
            chroma.std(axis=(1, 2)) / 50.0,
            (light > 90).mean(axis=(1, 2)),
            (chroma < 8).mean(axis=(1, 2)),
            (gradient > 10).mean(axis=(1, 2)),
            (gradient < 1).mean(axis=(1, 2)),
            light.std(axis=(1, 2)) / 50.0,
            entropy / np.log(28),
        ],
        axis=1,
    )
    return features.astype(np.float32)


def style_probabilities(features: np.ndarray) -> np.ndarray:
    """(n, 8) :func:`style_features` -> (n, 3) float32 probabilities of :data:`STYLES`."""
    standard = (np.asarray(features, np.float32) - STYLE_MEAN) / STYLE_SCALE
    logits = np.concatenate([standard, np.ones((len(standard), 1), np.float32)], axis=1)
    logits = logits @ STYLE_WEIGHTS
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def fingerprint() -> bytes:
    """Bytes that change with any constant of the channel: part of the model's version,
    so that an index made with other colour prototypes or another style fit is refused
    rather than mixed."""
    numbers = (COLOUR_SPREAD, CENTRE_SIGMA, BACKDROP_DISTANCE, BACKDROP_WEIGHT, POOL)
    parts = [repr(PALETTE), repr(STYLES), repr(numbers)]
    arrays = (STYLE_MEAN, STYLE_SCALE, STYLE_WEIGHTS)
    return "\n".join(parts).encode() + b"".join(a.tobytes() for a in arrays)


def centred(vectors: np.ndarray) -> np.ndarray:
    """(k, d) word embeddings minus their mean: what tells the words apart."""
    return (vectors - vectors.mean(axis=0, keepdims=True)).astype(np.float32)
