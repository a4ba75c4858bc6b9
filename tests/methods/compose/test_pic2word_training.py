"""Pic2Word trained for real: the CLI command on 120 of the 240 real PACS images of the
test index (3 epochs, seconds), the mapping saved in the index and then used by the
search method."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from spyglass.cli import main
from spyglass.errors import InvalidQuery
from spyglass.query.pic2word import (
    TRAINING_PROMPT,
    Pic2WordMapping,
    mapping_path,
    pic2word_prompt,
)
from spyglass.query.terms import ImageTerm, Query, TextTerm


def contrastive_loss(texts: np.ndarray, images: np.ndarray, temperature: float) -> float:
    """The symmetric InfoNCE loss of Pic2Word over one batch, in NumPy."""
    logits = texts.astype(np.float64) @ images.T.astype(np.float64) / temperature

    def cross_entropy(rows: np.ndarray) -> float:
        rows = rows - rows.max(axis=1, keepdims=True)
        log_softmax = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return float(-np.mean(np.diag(log_softmax)))

    return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


@pytest.fixture(scope="module")
def trained(pacs_subset):
    folder = pacs_subset.engine.index.folder
    result = CliRunner().invoke(
        main,
        [
            *("train", "pic2word", "--index", str(folder)),
            *("--epochs", "3", "--batch-size", "40", "--max-images", "120", "--json"),
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_training_lowers_the_loss_and_saves_the_mapping(pacs_subset, trained) -> None:
    assert trained["images"] == 120
    assert trained["epochs"] == 3
    losses = trained["losses"]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    path = mapping_path(pacs_subset.engine.index.folder)
    assert trained["path"] == str(path) and path.is_file()
    mapping = Pic2WordMapping.load(path)
    assert mapping.input_spaces == ("image", "joint")
    assert mapping.record["model_version"] == pacs_subset.engine.encoder.info.version


def test_the_saved_mapping_is_the_trained_one(pacs_subset, bundled, trained) -> None:
    """Recompute the training objective with the saved mapping in NumPy and the
    onnxruntime text model: on the training images it is below the first epoch's mean
    (a random or mis-saved network sits near log(batch) = 4.1)."""
    index = pacs_subset.engine.index
    owners = index.stores["joint"].visible_owners()[:60]
    vectors = {s: index.stores[s].fetch(owners) for s in ("image", "joint")}
    mapping = Pic2WordMapping.load(mapping_path(index.folder))
    words = mapping.words(vectors)
    texts = bundled.pseudo_word_text().embed([TRAINING_PROMPT] * len(owners), words)
    loss = contrastive_loss(texts, vectors["joint"], temperature=0.05)
    assert loss < trained["losses"][0], (loss, trained["losses"])
    assert loss < np.log(60) - 1


def test_search_uses_the_mapping(pacs_subset, bundled, trained) -> None:
    index = pacs_subset.engine.index
    photo = pacs_subset.ids_where(label="dog", domain="photo")[0]
    result = CliRunner().invoke(
        main,
        [
            *("search", "--index", str(index.folder), "--image", str(pacs_subset.paths[photo])),
            *("as a cartoon", "--method", "pic2word", "--json", "-k", "5"),
        ],
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)

    # The same query computed by hand: f(v) into "a photo of * as a cartoon".
    mapping = Pic2WordMapping.load(mapping_path(index.folder))
    stored = pacs_subset.engine.searcher.stored_vectors(photo)
    word = mapping.words({s: stored[s][None] for s in mapping.input_spaces})
    prompt = pic2word_prompt("as a cartoon")
    assert prompt == "a photo of * as a cartoon"
    (query,) = bundled.pseudo_word_text().embed([prompt], word)
    owners = index.stores["joint"].visible_owners()
    scores = index.stores["joint"].fetch(owners) @ query
    best = np.argsort(-scores)[:5]
    by_path = {str(p): i for i, p in pacs_subset.paths.items()}
    assert [by_path[h["path"]] for h in hits] == owners[best].tolist()
    np.testing.assert_allclose([h["rank_score"] for h in hits], scores[best], atol=1e-4)


def test_a_mapping_for_another_model_is_refused(pacs_subset, trained) -> None:
    path = mapping_path(pacs_subset.engine.index.folder)
    original = Pic2WordMapping.load(path)
    stale = replace(original, record={**original.record, "model_version": "0-other"})
    stale.save(path)
    try:
        photo = pacs_subset.ids_where(label="dog", domain="photo")[0]
        query = Query(
            (ImageTerm(image_id=photo, weight=0.5), TextTerm("as a cartoon", 0.5)),
            method="pic2word",
        )
        with pytest.raises(InvalidQuery, match="trained for another model"):
            pacs_subset.engine.search(query)
    finally:
        original.save(path)
