"""Why it matched: on real photos pasted at known boxes into real backgrounds, the
occlusion heatmap's peak lands on the pasted object far more often than chance, and
the same code with masks that hide nothing gives a flat map (the ablation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from spyglass.bench.explain import PROMPT
from spyglass.casework.explain import OcclusionSettings
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.errors import ImageNotFound, UnknownImageId
from spyglass.query.terms import ImageTerm, Query, TextTerm
from spyglass.store.index import Index

from .conftest import PastedObjects, image_id

#: The bench's default grid: the rate docs/casework.md reports is for it.
SETTINGS = OcclusionSettings()
#: Hiding nothing: every copy is the image itself.
NO_OP = OcclusionSettings(windows=(3,), fill="none")


@pytest.fixture
def engine(pasted: PastedObjects, bundled: Encoder) -> Iterator[Spyglass]:
    with Spyglass(bundled, Index.open(pasted.index)) as opened:
        yield opened


def inside(box: tuple[float, float, float, float], point: tuple[float, float]) -> bool:
    left, top, right, bottom = box
    return left <= point[0] <= right and top <= point[1] <= bottom


def hits(engine: Spyglass, pasted: PastedObjects, kind: str, settings: OcclusionSettings) -> int:
    found = 0
    for path, words, box, thing in zip(
        pasted.paths, pasted.words, pasted.boxes, pasted.things, strict=True
    ):
        term = TextTerm(PROMPT.format(words)) if kind == "text" else ImageTerm(path=str(thing))
        explanation = engine.explain(
            Query((term,)), image_id(engine, path), settings, parts=("result",)
        )
        if settings is NO_OP:
            assert np.ptp(explanation.result.cells) == 0  # flat: nothing to point at
        found += inside(box, explanation.result.peak())
    return found


@pytest.mark.parametrize("kind", ["text", "image"])
def test_the_peak_falls_on_the_pasted_object(
    engine: Spyglass, pasted: PastedObjects, kind: str
) -> None:
    chance = float(np.mean([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in pasted.boxes]))
    measured = hits(engine, pasted, kind, SETTINGS)
    ablated = hits(engine, pasted, kind, NO_OP)
    assert chance < 0.3
    assert measured >= 4, f"{measured} of {len(pasted.paths)} peaks in the box"
    assert measured > ablated


def test_the_score_explained_is_the_search_score_and_the_heat_is_repeatable(
    engine: Spyglass, pasted: PastedObjects
) -> None:
    query = Query(
        (ImageTerm(path=str(pasted.things[1]), weight=0.5), TextTerm(pasted.words[1], 0.5)),
        k=len(pasted.paths),
    )
    results = {r.image_id: r.score for r in engine.search(query)}
    target = image_id(engine, pasted.paths[1])
    settings = OcclusionSettings(grid=3)
    first = engine.explain(query, target, settings)
    again = engine.explain(query, target, settings)
    assert first.space == engine.encoder.info.text_space  # image + text: the joint space
    assert first.score == pytest.approx(results[target], abs=1e-5)
    # The unmasked copy, embedded again, scores what the index says (decoding aside).
    assert first.result.base == pytest.approx(first.score, abs=0.02)
    assert np.array_equal(first.result.cells, again.result.cells)
    assert first.query is not None and again.query is not None
    assert np.array_equal(first.query.cells, again.query.cells)
    assert np.ptp(first.query.cells) > 0


def test_a_text_query_has_no_query_heatmap(engine: Spyglass, pasted: PastedObjects) -> None:
    explanation = engine.explain(
        Query((TextTerm(pasted.words[0]),)),
        image_id(engine, pasted.paths[0]),
        OcclusionSettings(grid=2, windows=(1,)),
    )
    assert explanation.query is None and explanation.query_overlay() is None
    assert explanation.overlay().size == explanation.result_image.size


def test_unknown_ids_and_lost_files_are_typed_errors(
    pasted: PastedObjects, bundled: Encoder, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(pasted.index, copy)
    with Spyglass(bundled, Index.open(copy)) as engine:
        query = Query((TextTerm("a cup"),))
        with pytest.raises(UnknownImageId):
            engine.explain(query, 10_000)
        target = image_id(engine, pasted.paths[2])
        moved = tmp_path / "moved.png"
        shutil.copyfile(pasted.paths[2], moved)
        pasted.paths[2].unlink()
        try:
            with pytest.raises(ImageNotFound):
                engine.explain(query, target, OcclusionSettings(grid=2, windows=(1,)))
        finally:
            shutil.copyfile(moved, pasted.paths[2])
