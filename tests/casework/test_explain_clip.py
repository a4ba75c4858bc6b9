"""Explanations need nothing of an encoder but its ordinary image path: a CLIP (the
real ViT-B/32 code paths and preprocessing, narrowed, random weights) gives a heatmap
of the same shape, that differs from a flat map and repeats exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from spyglass.casework.explain import OcclusionSettings, cosine_with, occlusion_heatmap
from spyglass.encoders import Encoder

from ..encoders.conftest import (  # noqa: F401 - fixtures
    clip_files,
    cpu_runtime,
    encoder_for,
    tiny_clip_dir,
    transformers_quiet,
)
from .conftest import PastedObjects


def test_a_clip_encoder_explains_through_its_own_preprocessing(
    tiny_clip_dir: Path,  # noqa: F811
    encoder_for: Callable[[Path], Encoder],  # noqa: F811
    pasted: PastedObjects,
) -> None:
    encoder = encoder_for(tiny_clip_dir)
    assert encoder.info.image_space == encoder.info.text_space  # one joint space
    with Image.open(pasted.paths[0]) as opened:
        image = opened.convert("RGB")
    query = encoder.embed_texts([pasted.words[0]])[0]
    score = cosine_with(encoder.info.text_space, query)
    settings = OcclusionSettings(grid=4)
    first = occlusion_heatmap(encoder, image, score, settings)
    again = occlusion_heatmap(encoder, image, score, settings)
    flat = occlusion_heatmap(encoder, image, score, OcclusionSettings(grid=4, fill="none"))
    assert first.cells.shape == (4, 4)
    assert np.array_equal(first.cells, again.cells)
    assert np.ptp(first.cells) > 1e-4 and np.ptp(flat.cells) == 0
