"""Pic2Word trained for real: the CLI command on 120 of the 240 real PACS images of the
test index (3 epochs, seconds), the mapping saved in the index and then used by the
search method."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

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


def search_hits(index_folder, image: str, text: str, method: str) -> list[dict]:
    result = CliRunner().invoke(
        main,
        [
            *("search", "--index", str(index_folder), "--image", image, text),
            *("--method", method, "--rerank", "none", "--json", "-k", "5"),
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def pseudo_word_query(bundled, saved: Path, stored: dict, prompt: str) -> np.ndarray:
    """The query Pic2Word defines, computed here: the saved network's layers read from
    the .npz and applied in NumPy (float64), its output put in place of "*" among the
    prompt's input token vectors, and the text model run on them (PyTorch: the training
    path, not the search's onnxruntime one)."""
    import torch

    arrays = np.load(saved)
    record = json.loads(str(arrays["record"]))
    x = np.concatenate([stored[s].astype(np.float64) for s in record["input_spaces"]])
    depth = sum(1 for name in arrays.files if name.startswith("weight"))
    for i in range(depth):
        x = arrays[f"weight{i}"].astype(np.float64) @ x + arrays[f"bias{i}"]
        x = np.maximum(x, 0.0) if i < depth - 1 else x
    text = bundled.pseudo_word_text()
    ids, mask, positions = text.tokenize([prompt])
    inputs = text.token_vectors(ids).copy()
    inputs[0, positions[0]] = x
    with torch.no_grad():
        query = text.torch_model()(torch.from_numpy(inputs), torch.from_numpy(mask))
    vector = query.numpy()[0].astype(np.float64)
    return vector / np.linalg.norm(vector)


def test_search_uses_the_mapping(pacs_subset, bundled, trained) -> None:
    index = pacs_subset.engine.index
    photo = pacs_subset.ids_where(label="dog", domain="photo")[0]
    image = str(pacs_subset.paths[photo])
    hits = search_hits(index.folder, image, "as a cartoon", "pic2word")
    by_path = {str(p): i for i, p in pacs_subset.paths.items()}
    found = [by_path[h["path"]] for h in hits]

    assert pic2word_prompt("as a cartoon") == "a photo of * as a cartoon"
    stored = pacs_subset.engine.searcher.stored_vectors(photo)
    saved = mapping_path(index.folder)
    query = pseudo_word_query(bundled, saved, stored, "a photo of * as a cartoon")
    owners = index.stores["joint"].visible_owners()
    scores = index.stores["joint"].fetch(owners).astype(np.float64) @ query
    expected = owners[np.lexsort((owners, -scores))][:5]
    np.testing.assert_allclose(
        [h["rank_score"] for h in hits], np.sort(scores)[::-1][:5], atol=1e-4
    )
    assert found == expected.tolist()

    # Ablations, each changes the answer: the method replaced by sum, the text dropped
    # from the prompt, and the mapping on disk replaced by another.
    by_sum = search_hits(index.folder, image, "as a cartoon", "sum")
    assert [h["path"] for h in by_sum] != [h["path"] for h in hits]
    no_text = pseudo_word_query(bundled, saved, stored, "a photo of *")
    assert no_text @ query < 0.999
    without_text = owners[np.argsort(-(index.stores["joint"].fetch(owners) @ no_text))][:5]
    assert without_text.tolist() != found
    original = Pic2WordMapping.load(saved)
    rng = np.random.default_rng(0)
    other = replace(
        original,
        layers=tuple(
            (rng.normal(0, 0.1, w.shape).astype(np.float32), b) for w, b in original.layers
        ),
    )
    other.save(saved)
    try:
        changed = search_hits(index.folder, image, "as a cartoon", "pic2word")
    finally:
        original.save(saved)
    assert [h["rank_score"] for h in changed] != [h["rank_score"] for h in hits]


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
