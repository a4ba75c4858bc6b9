"""The bundled model's image model variants: the float model keeps the version indexes
recorded before variants existed; the int8 one (quantised on first use) is another
version, so an index built with one refuses the other, and its vectors stay close to
the float model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spyglass.encoders import Encoder, load_encoder
from spyglass.errors import EncoderMismatch, ModelError
from spyglass.images import open_image_file
from spyglass.settings import RuntimeSettings
from spyglass.store.index import Index


@pytest.fixture(scope="module")
def fp32(runtime: RuntimeSettings, bundled: Encoder) -> Encoder:
    """The float model, from a spec without ``image_model`` (as every index recorded
    before the key existed), whatever ``models.json`` makes the default."""
    spec = {k: v for k, v in bundled.info.spec.items() if k != "image_model"}
    return load_encoder(spec, runtime)


@pytest.fixture(scope="module")
def int8(runtime: RuntimeSettings, fp32: Encoder) -> Encoder:
    """The int8 variant (quantised once per model cache: 10-50 s the first time)."""
    return load_encoder({**fp32.info.spec, "image_model": "int8"}, runtime)


def test_a_spec_without_image_model_is_the_float_model_with_its_old_version(
    runtime: RuntimeSettings, fp32: Encoder
) -> None:
    explicit = load_encoder({**fp32.info.spec, "image_model": "fp32"}, runtime)
    assert "image_model" not in fp32.info.spec
    assert explicit.info.version == fp32.info.version
    assert dict(explicit.info.spec) == dict(fp32.info.spec)
    with pytest.raises(ModelError, match="unknown image_model 'int4'"):
        load_encoder({**fp32.info.spec, "image_model": "int4"}, runtime)


def test_an_index_of_the_float_model_refuses_the_int8_one(
    runtime: RuntimeSettings, fp32: Encoder, int8: Encoder, tmp_path: Path
) -> None:
    assert int8.info.spec["image_model"] == "int8"
    assert int8.info.version != fp32.info.version
    Index.open_for_writing(tmp_path / "index", fp32.info).close()
    with pytest.raises(EncoderMismatch, match="was built with model"):
        Index.open_for_writing(tmp_path / "index", int8.info)
    # The recorded spec reloads the model that built the index.
    with Index.open(tmp_path / "index") as index:
        spec = dict(index.info.spec)
    assert load_encoder(spec, runtime).info == fp32.info


def test_int8_vectors_stay_close_to_the_float_models(
    data_root: Path, fp32: Encoder, int8: Encoder
) -> None:
    # Caltech photos, not the sample photos the quantisation was calibrated on.
    photos = sorted((data_root / "caltech101" / "images").rglob("*.jpg"))[::100]
    pixels = np.stack(
        [
            fp32.preprocess(open_image_file(p, max_pixels=10**8, max_bytes=1 << 28).image)
            for p in photos
        ]
    )
    exact, quantised = fp32.embed_pixels(pixels), int8.embed_pixels(pixels)
    for space, rows in exact.items():
        cosines = np.sum(rows * quantised[space], axis=1)
        assert cosines.min() > 0.9, (space, cosines)
        assert cosines.mean() > 0.98, (space, cosines)


def test_the_default_is_int8_and_indexes_of_the_float_model_keep_theirs(
    runtime: RuntimeSettings, fp32: Encoder, int8: Encoder, tmp_path: Path
) -> None:
    """int8 costs under 0.01 mAP on Caltech-101 and indexes 1.6x faster (docs/ingest.md),
    so ``bundled`` names it; ``bundled-fp32`` is the float model, with the version that
    indexes built before recorded, and asking such an index for the default says how
    to go on rather than what to rebuild."""
    assert load_encoder("bundled", runtime).info == int8.info
    assert load_encoder("bundled-fp32", runtime).info == fp32.info
    Index.open_for_writing(tmp_path / "index", fp32.info).close()
    with pytest.raises(EncoderMismatch, match="leave out --model to use the index's own"):
        Index.open_for_writing(tmp_path / "index", int8.info)
