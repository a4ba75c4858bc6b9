"""The map tab (progress while laying out, a legend of groups named by words, images
when zoomed in), cluster names, and the page on a phone-sized screen: real headless
Chromium against the real server and the real bundled model, over real images."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app

from ..conftest import Collection, LiveServer, served_in_thread
from .conftest import screenshot
from .test_page import (
    link_out_id,
    open_page,
    search_text,
    searches,
    tiles,
    until,
    wait_for_search,
)

pytestmark = pytest.mark.slow


@pytest.fixture()
def cold_server(server_engine: Spyglass) -> Iterator[str]:
    """A server that has not laid out its map yet (it starts on the first request)."""

    def app(port: int) -> FastAPI:
        settings = ServerSettings.for_binding("127.0.0.1", port, None, prepare_at_start=False)
        return create_app(server_engine, settings)

    with served_in_thread(app) as url:
        yield url


def test_map_shows_progress_then_a_legend_named_by_words(page: Any, cold_server: str) -> None:
    page.goto(cold_server + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.click("#tab-map")
    # The first answer is "computing": the page shows how far the layout has got.
    page.wait_for_selector("#map-progress:not([hidden])", timeout=20_000)
    assert "Laying out the collection" in str(page.text_content("#map-status-text"))
    until(page, "Number(document.querySelector('#map-progress').value) > 0.5", timeout=120)
    screenshot(page, "14a-map-progress")
    until(page, "document.body.dataset.map === '152'", timeout=120)
    assert not page.is_visible("#map-progress")
    entries = page.locator("#map-legend button")
    count = entries.count()
    assert 2 <= count <= 12
    names = [str(entries.nth(n).locator(".words").text_content()) for n in range(count)]
    assert all(name and not name.startswith("Group") for name in names), names
    assert len(set(names)) == count
    sizes = [int(str(entries.nth(n).locator(".size").text_content())) for n in range(count)]
    assert sum(sizes) == 152 and sizes == sorted(sizes, reverse=True)
    time.sleep(0.3)
    screenshot(page, "14b-map-legend")
    entries.nth(0).click()
    assert "active" in str(entries.nth(0).get_attribute("class"))
    time.sleep(0.2)
    screenshot(page, "14c-map-group-focused")


def test_map_draws_images_when_zoomed_in(
    page: Any, live_server: LiveServer, server_engine: Spyglass, collection: Collection
) -> None:
    """The map module, mounted alone with 10,000 points (ids of real images, so the
    thumbnails are real): dots when zoomed out, images when zoomed in."""
    open_page(page, live_server)
    hidden = link_out_id(server_engine, collection)
    ids = sorted(set(server_engine.index.stores["image"].visible_owners().tolist()) - {hidden})
    page.evaluate(
        """async ([ids]) => {
            const { CollectionMapView } = await import('/static/js/map.js');
            document.querySelector('.layout').hidden = true;
            const host = document.createElement('div');
            host.style.position = 'fixed';
            host.style.inset = '56px 0 0 0';
            const canvas = document.createElement('canvas');
            canvas.id = 'big-map';
            canvas.className = 'map-canvas';
            const legend = document.createElement('div');
            legend.className = 'map-legend';
            const box = document.createElement('div');
            const text = document.createElement('span');
            const bar = document.createElement('progress');
            box.append(text, bar);
            host.append(canvas, legend);
            document.body.appendChild(host);
            // Seeded points in 12 blobs, as a t-SNE map looks.
            let seed = 7;
            const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
            const n = 10000, x = [], y = [], group = [], pointIds = [];
            for (let i = 0; i < n; i++) {
                const g = i % 12;
                group.push(g);
                x.push(0.15 + 0.7 * ((g % 4) / 3) + (random() - 0.5) * 0.12);
                y.push(0.2 + 0.6 * (Math.floor(g / 4) / 2) + (random() - 0.5) * 0.12);
                pointIds.push(ids[i % ids.length]);
            }
            const groups = Array.from({length: 12}, (_, g) => ({
                id: g, size: Math.round(n / 12), words: [`word ${g}`],
                x: 0.15 + 0.7 * ((g % 4) / 3), y: 0.2 + 0.6 * (Math.floor(g / 4) / 2),
            }));
            const view = new CollectionMapView(canvas, {box, text, bar}, legend, {
                search() {}, hover() {},
            });
            view.setPoints({ids: pointIds, x, y, group, groups, count: n, total: n, seconds: 1});
            window.bigMap = view;
        }""",
        [ids],
    )
    time.sleep(0.5)
    assert page.evaluate("document.querySelector('#big-map').dataset.thumbnails") == "0"
    screenshot(page, "15a-map-10000-zoomed-out")
    box = page.locator("#big-map").bounding_box()
    assert box is not None
    # Zoom in on one blob of points, 3.7 times: still far more points in view than
    # images fit, so one image per patch of the screen, over the dots.
    sx, sy = page.evaluate("window.bigMap.frame().toScreen(0.15 + 0.7 / 3, 0.5)")
    page.mouse.move(box["x"] + sx, box["y"] + sy)
    for _ in range(3):
        page.mouse.wheel(0, -300)
        time.sleep(0.05)
    in_view = page.evaluate(
        """() => {
            const view = window.bigMap, frame = view.frame(), {x, y} = view.points;
            let count = 0;
            for (let i = 0; i < x.length; i++) {
                const [sx, sy] = frame.toScreen(x[i], y[i]);
                if (sx >= 0 && sy >= 0 && sx <= frame.width && sy <= frame.height) count++;
            }
            return count;
        }"""
    )
    assert in_view > 1000
    until(page, "Number(document.querySelector('#big-map').dataset.thumbnails) >= 20", timeout=60)
    time.sleep(0.5)
    screenshot(page, "15b-map-10000-zoomed-in")


def test_clusters_are_named_by_words(page: Any, live_server: LiveServer) -> None:
    open_page(page, live_server)
    search_text(page, "a butterfly")
    page.click("#tab-clusters")
    until(page, "document.querySelectorAll('#cluster-graph .node').length === 50")
    chips = page.locator("#cluster-legend button")
    count = chips.count()
    assert count >= 2
    names = [str(chips.nth(n).text_content()) for n in range(count)]
    assert not any(name.startswith("Group") for name in names), names
    assert "nearest words" in str(chips.nth(0).get_attribute("title"))
    time.sleep(0.5)
    screenshot(page, "16-cluster-names")


def test_narrow_screen(browser: Any, page_errors: list[str], live_server: LiveServer) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True
    )
    page = context.new_page()
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        open_page(page, live_server)
        screenshot(page, "17a-narrow-start")
        search_text(page, "an airplane")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing sticks out sideways
        boxes = page.evaluate(
            """() => [...document.querySelectorAll('#grid-sizer .tile')].slice(0, 4).map(t => {
                const r = t.getBoundingClientRect(); return [r.left, r.right, r.top];
            })"""
        )
        assert all(left >= 0 and right <= 390 for left, right, _ in boxes)
        assert boxes[0][2] == boxes[1][2]  # two columns
        assert page.is_visible("#search-button") and page.is_visible("#tab-map")
        # Marks are there without hovering (no hover on a touch screen).
        first = tiles(page)[0]["id"]
        page.tap(f"#grid-sizer .tile[data-id='{first}'] .mark-good")
        assert page.text_content("#good-count") == "1 good"
        screenshot(page, "17b-narrow-results")
        # The query panel is a drawer.
        assert not page.evaluate(
            "document.querySelector('#query-panel').getBoundingClientRect().right > 0"
        )
        page.tap("#panel-toggle")
        until(page, "document.querySelector('#query-panel').getBoundingClientRect().left >= 0")
        time.sleep(0.3)
        assert page.is_visible("#exclude") and page.is_visible("#rerank")
        screenshot(page, "17c-narrow-panel")
        before = searches(page)
        page.tap("#rerank")
        wait_for_search(page, before)
        until(page, "document.querySelector('#query-panel').getBoundingClientRect().right <= 0")
        page.tap("#tab-map")
        until(page, "document.body.dataset.map === '152'", timeout=120)
        assert page.is_visible("#map-legend button >> nth=0")
        time.sleep(0.3)
        screenshot(page, "17d-narrow-map")
        page.tap("#map-zoom-in")  # no wheel on a phone: the zoom buttons
        page.tap("#map-zoom-in")
        until(page, "Number(document.querySelector('#map-canvas').dataset.thumbnails) > 0")
        time.sleep(0.3)
        screenshot(page, "17e-narrow-map-zoomed")
    finally:
        context.close()
