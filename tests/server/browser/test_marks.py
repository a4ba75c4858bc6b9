"""Marks belong to one query, a refused query is one line on the page, and export holds
every result with its mark: real headless Chromium against the real `spyglass serve`
process and the real bundled model, over real images."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Collection, LiveServer
from .conftest import screenshot
from .test_page import label_of, open_page, search_text, searches, tiles, until, wait_for_search

pytestmark = pytest.mark.slow


def mark(page: Any, image_id: int, kind: str) -> None:
    page.hover(f"#grid-sizer .tile[data-id='{image_id}']")
    page.click(f"#grid-sizer .tile[data-id='{image_id}'] .mark-{kind}")


def marked(page: Any) -> dict[str, list[int]]:
    found: dict[str, list[int]] = page.evaluate(
        """() => {
            const ids = (kind) => [...document.querySelectorAll('#grid-sizer .tile.' + kind)]
                .map(t => Number(t.dataset.id));
            return {good: ids('good'), bad: ids('bad')};
        }"""
    )
    return found


def test_a_new_query_clears_the_marks_and_undo_brings_them_back(
    page: Any, live_server: LiveServer, collection: Collection
) -> None:
    open_page(page, live_server)
    search_text(page, "an umbrella")
    shown = tiles(page)
    umbrellas = [t["id"] for t in shown if label_of(collection, t["title"]) == "umbrella"][:2]
    other = next(t["id"] for t in shown[:12] if label_of(collection, t["title"]) != "umbrella")
    for image_id in umbrellas:
        mark(page, image_id, "good")
    mark(page, other, "bad")
    assert page.text_content("#good-count") == "2 good"
    assert page.text_content("#bad-count") == "1 bad"

    # Another query: the marks are gone, visibly, and do not pull umbrellas to the top.
    search_text(page, "a starfish")
    assert page.text_content("#good-count") == "0 good"
    assert page.text_content("#bad-count") == "0 bad"
    assert page.is_visible("#marks-notice")
    assert "3 marks cleared" in str(page.text_content("#marks-notice"))
    assert marked(page) == {"good": [], "bad": []}
    top = [label_of(collection, t["title"]) for t in tiles(page)[:5]]
    assert "umbrella" not in top and top.count("starfish") >= 4, top
    assert "marked good" not in str(page.text_content("#summary"))
    screenshot(page, "11a-marks-cleared-by-a-new-query")

    # Undo: the previous query comes back with its marks and its results.
    before = searches(page)
    page.click("#marks-undo")
    wait_for_search(page, before)
    assert page.input_value("#query-text") == "an umbrella"
    assert page.text_content("#good-count") == "2 good"
    assert page.text_content("#bad-count") == "1 bad"
    assert not page.is_visible("#marks-notice")
    assert [t["id"] for t in tiles(page)[:20]] == [t["id"] for t in shown[:20]]
    assert marked(page) == {
        "good": sorted(umbrellas, key=lambda i: [t["id"] for t in shown].index(i)),
        "bad": [other],
    }
    screenshot(page, "11b-marks-restored-by-undo")

    # Refining the same query (words to leave out) keeps the marks.
    before = searches(page)
    page.fill("#exclude", "a flower")
    page.press("#exclude", "Enter")
    wait_for_search(page, before)
    assert page.text_content("#good-count") == "2 good"
    assert not page.is_visible("#marks-notice")

    # A result clicked as the new query starts fresh, even one that was marked.
    clicked = umbrellas[0]
    before = searches(page)
    page.click(f"#grid-sizer .tile[data-id='{clicked}'] img")
    wait_for_search(page, before)
    assert str(page.text_content("#summary")).startswith(f"image #{clicked} ")
    assert page.text_content("#good-count") == "0 good"
    assert "3 marks cleared" in str(page.text_content("#marks-notice"))
    assert marked(page) == {"good": [], "bad": []}
    assert tiles(page)[0]["id"] == clicked
    screenshot(page, "11c-clicked-result-starts-fresh")


def test_an_image_is_good_or_bad_never_both(
    page: Any, live_server: LiveServer, collection: Collection
) -> None:
    open_page(page, live_server)
    search_text(page, "a camera")
    first, second = (t["id"] for t in tiles(page)[:2])
    mark(page, first, "good")
    mark(page, first, "bad")  # marking bad takes back good
    mark(page, second, "bad")
    mark(page, second, "good")  # and the other way round
    assert marked(page) == {"good": [second], "bad": [first]}
    assert page.text_content("#good-count") == "1 good"
    assert page.text_content("#bad-count") == "1 bad"
    with page.expect_request("**/api/search") as sent:
        page.click("#rerank")
    body = json.loads(sent.value.post_data)
    assert body["positives"] == [second] and body["negatives"] == [first]
    until(page, "document.body.dataset.searches === '2'")
    screenshot(page, "12-good-or-bad")


def test_a_refused_query_is_one_line_on_the_page(
    page: Any, page_errors: list[str], live_server: LiveServer
) -> None:
    open_page(page, live_server)
    search_text(page, "a wrist watch")
    shown = [t["id"] for t in tiles(page)[:10]]
    # A phrase to leave out longer than the API takes (500 characters): a real 422.
    page.fill("#exclude", "x" * 600)
    page.press("#exclude", "Enter")
    page.wait_for_selector("#problem:not([hidden])")
    line = str(page.text_content("#problem"))
    assert line.startswith("Not searched: ") and "exclude" in line
    height = page.evaluate("document.querySelector('#problem').clientHeight")
    assert height < 40  # one line, however long the message
    assert not page.is_visible("#toast")
    assert [t["id"] for t in tiles(page)[:10]] == shown  # the results stay
    screenshot(page, "13-refused-query")
    page.fill("#exclude", "")
    search_text(page, "a wrist watch")
    assert not page.is_visible("#problem")
    page_errors[:] = [e for e in page_errors if "422" not in e]  # the refused search


def test_export_holds_every_result_with_its_mark(
    page: Any, live_server: LiveServer, collection: Collection
) -> None:
    open_page(page, live_server)
    search_text(page, "a sunflower")
    loaded = int(page.evaluate("Number(document.body.dataset.results)"))
    shown = tiles(page)
    good = [t["id"] for t in shown if label_of(collection, t["title"]) == "sunflower"][:2]
    bad = next(t["id"] for t in shown[:12] if label_of(collection, t["title"]) != "sunflower")
    for image_id in good:
        mark(page, image_id, "good")
    mark(page, bad, "bad")
    before = searches(page)
    page.click("#rerank")
    wait_for_search(page, before)
    status = page.evaluate("fetch('/api/status?skipped=0').then(r => r.json())")
    every = status["unique_images"]
    assert loaded < every  # the grid holds only its first page
    with page.expect_download() as download_info:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert len(rows) == every
    assert [r["rank"] for r in rows] == [str(n) for n in range(1, every + 1)]
    marks = {int(r["id"]): r["mark"] for r in rows if r["mark"]}
    assert marks == {**{i: "good" for i in good}, bad: "bad"}
    with page.expect_download() as download_info:
        page.click("#export-json")
    document = json.loads(Path(download_info.value.path()).read_text())
    assert document["count"] == every == len(document["results"])
    assert {r["id"]: r["mark"] for r in document["results"] if r["mark"]} == marks
    assert f"{every:,} results" in str(page.text_content("#summary"))
