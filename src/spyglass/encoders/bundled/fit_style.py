"""Fit the attribute channel's style regression (:data:`attributes.STYLE_WEIGHTS`).

    python -m spyglass.encoders.bundled.fit_style --data ../shared/data/pacs

Reads PACS images of the fitting classes only (dog, elephant, giraffe: the other four,
guitar, horse, house and person, are held out, and the accuracy printed is on them), and
prints the constants to paste into :mod:`spyglass.encoders.bundled.attributes`. A
development tool: the engine never runs it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from spyglass.encoders.bundled import preprocess_image
from spyglass.encoders.bundled.attributes import STYLES, pooled_lab, style_features

FIT_CLASSES = ("dog", "elephant", "giraffe")
#: L2 penalty of the softmax regression (scikit-learn's C): small, for 9 x 3 weights.
REGULARISATION = 1.0


def pacs_features(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 8) style features, (n,) style index, (n,) bool "in the fitting classes"."""
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["domain"] in STYLES]
    features = []
    for start in range(0, len(rows), 64):
        batch = rows[start : start + 64]
        pixels = np.stack([preprocess_image(Image.open(folder / r["path"])) for r in batch])
        features.append(style_features(pooled_lab(pixels)))
    styles = np.array([list(STYLES).index(r["domain"]) for r in rows])
    fitting = np.array([r["label"] in FIT_CLASSES for r in rows])
    return np.concatenate(features), styles, fitting


def fit(features: np.ndarray, styles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise, then a multinomial logistic regression: (mean (8,), scale (8,),
    weights (9, 3) with the intercepts as the last row)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    model = LogisticRegression(C=REGULARISATION, max_iter=2000, class_weight="balanced")
    model.fit((features - mean) / scale, styles)
    weights = np.vstack([model.coef_.T, model.intercept_[None, :]])
    return mean.astype(np.float32), scale.astype(np.float32), weights.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="the PACS folder")
    folder = parser.parse_args().data
    features, styles, fitting = pacs_features(folder)
    mean, scale, weights = fit(features[fitting], styles[fitting])
    logits = np.hstack([(features - mean) / scale, np.ones((len(features), 1))]) @ weights
    held_out = ~fitting
    accuracy = float((logits.argmax(axis=1) == styles)[held_out].mean())
    print(f"# held-out accuracy {accuracy:.3f} on {int(held_out.sum())} images")
    print(f"STYLE_MEAN = np.array({np.round(mean, 4).tolist()}, np.float32)")
    print(f"STYLE_SCALE = np.array({np.round(scale, 4).tolist()}, np.float32)")
    print(f"STYLE_WEIGHTS = np.array({np.round(weights, 4).tolist()}, np.float32)")


if __name__ == "__main__":
    main()
