"""Relevance feedback, re-ranking and region queries end to end: the real bundled model,
the real index of all 2,748 Caltech-101 object images, through the Python API and the
CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from spyglass.cli import main
from spyglass.engine import Spyglass
from spyglass.query.terms import ImageTerm, Query, TextTerm

pytestmark = pytest.mark.slow

FEEDBACK_METHODS = (
    "rocchio",
    "svm",
    "svm-text-balanced",
    "seesaw-style",
    "svm-fusion",
    "sum",
)
#: Methods as their papers write them, whose text prior holds with three good marks and
#: no bad one: Moll's unit-weight loss keeps w on the text (the bias meets the hinge), and
#: SeeSaw's model, trained on the marked images only, centred, has nothing to contrast.
TEXT_BOUND_METHODS = ("svm-text", "seesaw")
#: The first ten classes in alphabetical order (no choosing): text-only mAP ~0.58.
CLASSES = 10
MARKED = 3


class Caltech:
    """Image ids and labels of the session's Caltech index."""

    def __init__(self, engine: Spyglass, root: Path, rows: list[dict[str, str]]):
        self.engine = engine
        self.labels: dict[int, str] = {}
        for row in rows:
            state = engine.index.catalogue.file(str((root / row["path"]).absolute()))
            assert state is not None, row["path"]
            self.labels[state.image_id] = row["label"]
        self.classes = sorted(set(self.labels.values()))

    def members(self, label: str) -> list[int]:
        return sorted(i for i, lab in self.labels.items() if lab == label)

    def average_precision(self, ranking: list[int], label: str, leave_out=()) -> float:
        relevant = set(self.members(label)) - set(leave_out)
        hits, total = 0, 0.0
        for rank, image_id in enumerate((i for i in ranking if i not in leave_out), 1):
            if image_id in relevant:
                hits += 1
                total += hits / rank
        return total / len(relevant)

    def ranked_ids(self, query: Query) -> list[int]:
        return [i for i, _ in self.engine.searcher.rank(query)]


@pytest.fixture(scope="module")
def caltech(caltech_engine) -> Caltech:
    engine, labelled = caltech_engine
    return Caltech(engine, labelled.root, labelled.rows)


def class_text(label: str) -> TextTerm:
    return TextTerm(f"a photo of a {label.replace('_', ' ').lower()}")


def test_marking_three_images_good_raises_average_precision_over_the_text_alone(
    caltech: Caltech,
) -> None:
    everything = len(caltech.labels)
    text_aps, method_aps = [], {m: [] for m in FEEDBACK_METHODS + TEXT_BOUND_METHODS}
    for label in caltech.classes[:CLASSES]:
        good = tuple(caltech.members(label)[:MARKED])
        text_only = caltech.ranked_ids(Query((class_text(label),), k=everything))
        text_aps.append(caltech.average_precision(text_only, label, good))
        for method in method_aps:
            query = Query((class_text(label),), k=everything, method=method, positives=good)
            ranking = caltech.ranked_ids(query)
            assert len(ranking) == everything
            method_aps[method].append(caltech.average_precision(ranking, label, good))
    baseline = float(np.mean(text_aps))
    for method in FEEDBACK_METHODS:
        # Measured: text 0.58; every method 0.67 or more (svm-fusion 0.83).
        aps = method_aps[method]
        assert np.mean(aps) > baseline + 0.05, (method, np.mean(aps), baseline)
    for method in TEXT_BOUND_METHODS:
        # As on all of Caltech-101 at 5 shots + text: 0.436 and 0.435 against the text's
        # 0.436 (docs/methods.md, "Moll's loss, as written and balanced").
        aps = method_aps[method]
        assert abs(np.mean(aps) - baseline) < 0.03, (method, np.mean(aps), baseline)
        assert np.mean(aps) < np.mean(method_aps["svm-text-balanced"]) - 0.03


def test_marking_images_bad_sinks_them(caltech: Caltech) -> None:
    label = "airplanes"
    text_only = caltech.ranked_ids(Query((class_text(label),), k=100))
    bad = tuple(i for i in text_only[:30] if caltech.labels[i] != label)[:3]
    assert bad, "the text query should show some wrong images in its top 30"
    good = tuple(i for i in text_only[:30] if caltech.labels[i] == label)[:3]
    # Measured on this query: these methods push each marked image down by 30 places or
    # more (svm and svm-fusion below rank 250); rocchio (gamma = 0.15) barely moves them,
    # and seesaw-style and svm-text-balanced, whose text prior dominates, can even lift one
    # (docs/methods.md).
    for method in ("svm", "svm-fusion", "sum"):
        # The same marks of good images, with and without the marks of bad ones.
        without = caltech.ranked_ids(
            Query((class_text(label),), k=300, method=method, positives=good)
        )
        marked = caltech.ranked_ids(
            Query((class_text(label),), k=300, method=method, positives=good, negatives=bad)
        )
        for image_id in bad:
            before = without.index(image_id) if image_id in without else 300
            after = marked.index(image_id) if image_id in marked else 300
            assert after > before + 30, (method, image_id, before, after)


def test_reranking_raises_image_to_image_mean_average_precision(caltech: Caltech) -> None:
    queries = sorted(caltech.labels)[::70]  # 40 images spread over the classes
    results: dict[str, list[float]] = {"none": [], "aqe": [], "kreciprocal": []}
    for image_id in queries:
        label = caltech.labels[image_id]
        for rerank in results:
            query = Query((ImageTerm(image_id=image_id),), k=len(caltech.labels), rerank=rerank)
            ranking = caltech.ranked_ids(query)
            assert sorted(ranking) == sorted(caltech.labels)  # re-ordered, nothing lost
            results[rerank].append(caltech.average_precision(ranking, label, (image_id,)))
    plain = float(np.mean(results["none"]))
    # Measured: none 0.72, aqe 0.74, kreciprocal 0.80.
    assert np.mean(results["aqe"]) > plain
    assert np.mean(results["kreciprocal"]) > plain + 0.03


def search_cli(caltech: Caltech, *arguments: str) -> list[dict]:
    result = CliRunner().invoke(
        main, ["search", *arguments, "--index", str(caltech.engine.index.folder), "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_cli_feedback_and_rerank(caltech: Caltech) -> None:
    """The CLI passes marks (by path and by id) and the re-ranking to the engine: its
    results are the engine's for the same query, they differ from the text alone, and
    over the first classes (alphabetical, no choosing) the marks find more of the class.

    One class alone is no measure: with three marks among 14-24 members the top 20 moves
    by a few images either way (crocodile: 6 text-only hits, 5 marked, with version 2
    vectors; dolphin 6 -> 17)."""
    plain_hits, marked_hits = 0, 0
    for label in caltech.classes[:5]:
        text = class_text(label).text
        members = caltech.members(label)
        good = members[:MARKED]
        plain = [
            r
            for r in search_cli(caltech, text, "-k", "23", "--rerank", "none")
            if r["id"] not in good
        ]
        plain_hits += sum(caltech.labels[r["id"]] == label for r in plain[:20])
        # Mark three images good: one by path, two by id.
        by_path = caltech.engine.index.catalogue.images([good[0]])[good[0]].path
        marks = ["--good", by_path, "--good", str(good[1]), "--good", str(good[2])]
        marked = search_cli(
            caltech, text, "-k", "23", "--method", "svm-fusion", *marks, "--rerank", "kreciprocal"
        )
        engine = caltech.ranked_ids(
            Query(
                (class_text(label),),
                k=23,
                method="svm-fusion",
                positives=tuple(good),
                rerank="kreciprocal",
            )
        )
        assert [r["id"] for r in marked] == engine, label
        unmarked = [r for r in marked if r["id"] not in good][:20]
        marked_hits += sum(caltech.labels[r["id"]] == label for r in unmarked)
    # Measured (version 2 vectors, first five classes): 69 text-only hits, 91 marked.
    assert marked_hits > plain_hits + 5, (plain_hits, marked_hits)


def test_cli_rejects_an_unknown_mark_and_an_unknown_reranker(caltech: Caltech) -> None:
    index = str(caltech.engine.index.folder)
    unknown = CliRunner().invoke(main, ["search", "cat", "--index", index, "--good", "nope.jpg"])
    assert unknown.exit_code == 2
    assert "neither an indexed image" in unknown.output
    assert "Traceback" not in unknown.output
    bad = CliRunner().invoke(main, ["search", "cat", "--index", index, "--rerank", "magic"])
    assert bad.exit_code == 2
    assert "unknown re-ranking 'magic'" in bad.output


@pytest.fixture(scope="module")
def two_object_image(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sunflower photo on the left, a real motorbike photo on the right."""
    images = data_root / "caltech101" / "images"
    left = sorted((images / "sunflower").iterdir())[0]
    right = sorted((images / "Motorbikes").iterdir())[0]
    canvas = Image.new("RGB", (512, 256))
    canvas.paste(Image.open(left).convert("RGB").resize((256, 256)), (0, 0))
    canvas.paste(Image.open(right).convert("RGB").resize((256, 256)), (256, 0))
    path = tmp_path_factory.mktemp("region") / "sunflower-and-motorbike.jpg"
    canvas.save(path, quality=92)
    return path


def test_region_query_finds_the_object_in_the_box(caltech: Caltech, two_object_image) -> None:
    def labels_of(results) -> list[str]:
        return [caltech.labels[r["id"]] for r in results]

    whole = search_cli(caltech, "--image", str(two_object_image), "-k", "10")
    left = search_cli(
        caltech, "--image", str(two_object_image), "--region", "0,0,0.5,1", "-k", "10"
    )
    # Measured: the whole picture finds 1 sunflower in 10, its left half 10.
    assert labels_of(left).count("sunflower") >= 8
    assert labels_of(whole).count("sunflower") <= 3
    right = caltech.engine.search(
        Query((ImageTerm(path=str(two_object_image), region=(0.5, 0.0, 1.0, 1.0)),), k=10)
    )
    assert [caltech.labels[r.image_id] for r in right].count("Motorbikes") >= 8
