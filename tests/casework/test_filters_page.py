"""The page's filter panel, in real headless Chromium: the facets show their counts,
picking one lists only the images it keeps (newest first, with no query) and narrows
the other facets' counts (not its own), a search then stays inside it, and a second
facet narrows it further; a browse can be listed oldest first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spyglass.encoders import Encoder
from spyglass.engine import Spyglass

from ..server.browser.conftest import browser, page, page_errors, screenshot  # noqa: F401
from ..server.browser.test_page import searches, tiles, until, wait_for_search
from .filtered_collection import Planned
from .test_page import served_page  # noqa: F401


@pytest.fixture
def edited_index(filtered_index: Path) -> Path:
    """test_page's server, over the collection with known metadata."""
    return filtered_index


def ids_where(engine: Spyglass, collection: list[Planned], keep: Any) -> set[int]:
    found = set()
    for item in collection:
        if keep(item):
            state = engine.index.catalogue.file(str(item.path))
            assert state is not None
            found.add(state.image_id)
    return found


def facet_button(tab: Any, facet: str, value: str) -> Any:
    return tab.locator(f'#facets [data-facet="{facet}"] .facet-value[data-value="{value}"]')


def test_picking_facets_shows_only_matching_images(
    page: Any,  # noqa: F811 - the fixture imported above
    served_page: tuple[str, Spyglass],  # noqa: F811
    filter_collection: list[Planned],
    bundled: Encoder,
) -> None:
    url, engine = served_page
    jpegs = ids_where(engine, filter_collection, lambda p: p.format == "JPEG")
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    jpeg = facet_button(page, "formats", "JPEG")
    assert jpeg.locator(".facet-count").text_content() == str(len(jpegs))

    before = searches(page)
    jpeg.click()
    wait_for_search(page, before)
    assert jpeg.get_attribute("aria-pressed") == "true"
    assert {t["id"] for t in tiles(page)} == jpegs  # filters alone: browse what they keep
    # The other facets now count JPEGs only; the formats facet still counts every PNG.
    root = filter_collection[0].path.parents[2]
    jpegs_in_b = sum(p.format == "JPEG" and p.folder == "site-b" for p in filter_collection)
    in_b = sum(p.folder == "site-b" for p in filter_collection)
    assert jpegs_in_b < in_b
    site_b_count = facet_button(page, "folders", str(root / "site-b")).locator(".facet-count")
    until(
        page,
        "([path, n]) => [...document.querySelectorAll('#facets .facet-value')].some((b) =>"
        " b.dataset.value === path && b.querySelector('.facet-count').textContent === String(n))",
        [str(root / "site-b"), jpegs_in_b],
    )
    assert site_b_count.text_content() == str(jpegs_in_b)
    pngs = sum(p.format == "PNG" for p in filter_collection)
    assert facet_button(page, "formats", "PNG").locator(".facet-count").text_content() == str(pngs)

    before = searches(page)
    page.fill("#query-text", "a wrist watch")
    page.press("#query-text", "Enter")
    wait_for_search(page, before)
    shown = [t["id"] for t in tiles(page)]
    assert set(shown) == jpegs  # every JPEG, and nothing else, ranked for the words
    assert not page.is_visible("#filter-sort")  # a query is ordered by similarity
    before = searches(page)
    facet_button(page, "folders", str(root / "site-b")).click()
    wait_for_search(page, before)
    both = ids_where(
        engine, filter_collection, lambda p: p.format == "JPEG" and p.folder == "site-b"
    )
    assert 0 < len(both) < len(jpegs)
    until(page, "() => document.querySelectorAll('#grid-sizer .tile').length > 0")
    assert {t["id"] for t in tiles(page)} == both
    assert "format JPEG" in page.text_content("#summary")
    screenshot(page, "filters-facets")

    before = searches(page)
    page.click("#filters-clear")
    wait_for_search(page, before)
    assert len(tiles(page)) == len(filter_collection)  # the words alone again

    page.fill("#query-text", "")
    before = searches(page)
    facet_button(page, "gps", "yes").click()  # browse: no words, one filter
    wait_for_search(page, before)
    with_gps = ids_where(engine, filter_collection, lambda p: p.gps)
    assert {t["id"] for t in tiles(page)} == with_gps
    # Oldest first: by the planned dates, ties by id (two pairs share a date).
    ids = {p.path: next(iter(ids_where(engine, [p], lambda _: True))) for p in filter_collection}
    gps = sorted((p for p in filter_collection if p.gps), key=lambda p: (p.date, ids[p.path]))
    assert len({p.date for p in gps}) < len(gps)
    assert page.is_visible("#filter-sort")
    before = searches(page)
    page.select_option("#filter-sort", "oldest")
    wait_for_search(page, before)
    assert [t["id"] for t in tiles(page)] == [ids[p.path] for p in gps]
    page.select_option("#filter-sort", "newest")
    facet_button(page, "gps", "yes").click()  # taken off: nothing is asked any more
    until(page, "() => document.querySelectorAll('#grid-sizer .tile').length === 0")
    assert page.is_visible("#results-empty")
