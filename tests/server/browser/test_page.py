"""The search page in real headless Chromium against the real `spyglass serve`
process and the real bundled model, over real images: every step of the issue, with a
screenshot of each under test-artifacts/screenshots/."""

from __future__ import annotations

import base64
import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app

from ..conftest import Collection, LiveServer, served_in_thread
from .conftest import screenshot

pytestmark = pytest.mark.slow


def until(page: Any, expression: str, arg: Any = None, timeout: float = 30.0) -> Any:
    """Poll a JavaScript expression (or function) until it is truthy. Playwright's own
    wait_for_function evaluates strings inside the page, which the page's content
    security policy forbids (no eval), so the polling happens from here."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {expression}")
        time.sleep(0.05)


def open_page(page: Any, live_server: LiveServer) -> None:
    page.goto(live_server.url + "/")
    page.wait_for_selector("body[data-ready='1']")


def searches(page: Any) -> int:
    """Searches the page has completed (it counts them in data-searches)."""
    return int(page.evaluate("Number(document.body.dataset.searches || 0)"))


def wait_for_search(page: Any, before: int) -> None:
    until(page, "([before]) => Number(document.body.dataset.searches || 0) > before", [before])
    wait_for_thumbnails(page)


def search_text(page: Any, text: str) -> None:
    before = searches(page)
    page.fill("#query-text", text)
    page.press("#query-text", "Enter")
    wait_for_search(page, before)


def wait_for_thumbnails(page: Any, grid: str = "#grid-sizer", count: int = 10) -> None:
    """The first ``count`` thumbnails in the DOM have loaded, with real pixels."""
    until(
        page,
        """([grid, count]) => {
            const images = [...document.querySelectorAll(grid + ' .tile img:not([hidden])')]
                .slice(0, count);
            return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
        }""",
        [grid, count],
    )


def tiles(page: Any) -> list[dict[str, Any]]:
    """The tiles in the DOM, in rank order: id, rank, file name shown, path (title)."""
    found: list[dict[str, Any]] = page.evaluate(
        """() => [...document.querySelectorAll('#grid-sizer .tile')].map(t => ({
            id: Number(t.dataset.id),
            index: Number(t.dataset.index),
            name: t.querySelector('.name').textContent,
            title: t.title,
        })).sort((a, b) => a.index - b.index)"""
    )
    return found


def summary(page: Any) -> str:
    return str(page.text_content("#summary"))


def label_of(collection: Collection, title: str) -> str:
    path = Path(title.split("\n")[0])
    return collection.labels.get(str(path.relative_to(collection.root)), "")


# -- the steps of the issue -------------------------------------------------------------


def test_type_a_query_and_see_results(
    page: Any, live_server: LiveServer, collection: Collection, server_engine: Spyglass
) -> None:
    open_page(page, live_server)
    assert "152 images" in str(page.text_content("#index-info"))
    search_text(page, "an airplane")
    shown = tiles(page)
    assert len(shown) >= 20
    top = [label_of(collection, t["title"]) for t in shown[:5]]
    assert top.count("airplanes") >= 4, top
    assert '"an airplane"' in summary(page)
    screenshot(page, "01-text-search")
    # Scrolling loads the rest of the ranking, page by page, until the end.
    page.evaluate("document.querySelector('#grid-scroll').scrollTop = 1e9")
    count = server_engine.index.count()
    until(page, f"document.body.dataset.results === '{count}'")
    page.evaluate("document.querySelector('#grid-scroll').scrollTop = 1e9")
    until(page, "document.querySelector('.grid-status').textContent.includes('End')")
    wait_for_thumbnails(page, count=1000)  # the tiles now in view load their thumbnails
    screenshot(page, "01b-scrolled-to-the-end")


def test_drop_paste_and_pick_an_image(
    page: Any, live_server: LiveServer, collection: Collection
) -> None:
    open_page(page, live_server)
    photo = collection.root / "photos" / "07_Kite.jpg"
    data = base64.b64encode(photo.read_bytes()).decode()
    before = searches(page)
    page.evaluate(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
            const target = document.querySelector('#grid-scroll');
            const init = {dataTransfer: transfer, bubbles: true};
            target.dispatchEvent(new DragEvent('dragenter', init));
            target.dispatchEvent(new DragEvent('drop', init));
        }""",
        [data, photo.name],
    )
    wait_for_search(page, before)
    first = tiles(page)[0]
    assert first["name"] == "photos/07_Kite.jpg"
    assert "uploaded image" in summary(page)
    assert page.is_visible("#query-image")
    screenshot(page, "02-dropped-image")

    # Paste another photo from the clipboard.
    other = collection.root / "photos" / "22_Storm.jpg"
    before = searches(page)
    page.evaluate(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
            const init = {clipboardData: transfer, bubbles: true};
            document.dispatchEvent(new ClipboardEvent('paste', init));
        }""",
        [base64.b64encode(other.read_bytes()).decode(), other.name],
    )
    wait_for_search(page, before)
    assert tiles(page)[0]["name"] == "photos/22_Storm.jpg"

    # And the file picker.
    picked = collection.paths_of("sunflower")[0]
    before = searches(page)
    page.set_input_files("#file-input", str(picked))
    wait_for_search(page, before)
    assert tiles(page)[0]["name"].endswith(picked.name)
    labels = [label_of(collection, t["title"]) for t in tiles(page)[:5]]
    assert labels.count("sunflower") >= 3, labels


def test_non_image_drop_says_why(
    page: Any, page_errors: list[str], live_server: LiveServer
) -> None:
    open_page(page, live_server)
    page.evaluate(
        """() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(['not pixels'], 'notes.png', {type: 'image/png'}));
            document.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
        }"""
    )
    page.wait_for_selector("#toast:not([hidden])")
    assert "not an image" in str(page.text_content("#toast"))
    assert not page.is_visible("#query-image")
    screenshot(page, "02b-not-an-image")
    page_errors[:] = [e for e in page_errors if "422" not in e]  # the refused upload


def test_click_a_result_then_draw_a_region(
    page: Any, live_server: LiveServer, collection: Collection
) -> None:
    open_page(page, live_server)
    search_text(page, "a motorcycle")
    target = next(t for t in tiles(page) if t["name"] == "photos/30_motorcycle_left.jpg")
    before = searches(page)
    page.click(f"#grid-sizer .tile[data-id='{target['id']}'] img")
    wait_for_search(page, before)
    assert summary(page).startswith(f"image #{target['id']} ")
    whole = [t["id"] for t in tiles(page)[:12]]
    assert whole[0] == target["id"]
    assert page.input_value("#query-text") == ""  # the image replaced the words
    until(page, "document.querySelector('#query-image').naturalWidth > 0")

    box = page.locator("#query-image").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] * 0.35)
    before = searches(page)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.6, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.95, steps=5)
    page.mouse.up()
    wait_for_search(page, before)
    assert page.is_visible("#region-box") and page.is_visible("#clear-region")
    focused = [t["id"] for t in tiles(page)[:12]]
    assert focused != whole
    region = str(summary(page)).split("region ")[1].split(" ")[0].split(",")
    left, top, right, bottom = (float(v) for v in region)
    assert left == pytest.approx(0.05, abs=0.02) and right == pytest.approx(0.5, abs=0.02)
    assert top == pytest.approx(0.35, abs=0.02) and bottom == pytest.approx(0.95, abs=0.02)
    screenshot(page, "03-region")

    # The modification box and the balance slider join the image.
    before = searches(page)
    page.fill("#modifier", "a helmet")
    page.press("#modifier", "Enter")
    wait_for_search(page, before)
    assert '"a helmet" × 0.50' in summary(page) and "region" in summary(page)
    before = searches(page)
    page.fill("#balance", "80")  # the slider: 80% image, 20% words
    wait_for_search(page, before)
    assert "× 0.80" in summary(page) and '"a helmet" × 0.20' in summary(page)
    assert page.text_content("#image-share") == "80%"


def test_feedback_and_rerank(page: Any, live_server: LiveServer, collection: Collection) -> None:
    open_page(page, live_server)
    search_text(page, "a thing")
    plain = tiles(page)
    starfish_before = sum(label_of(collection, t["title"]) == "starfish" for t in plain[:10])
    search_text(page, "a starfish")
    shown = tiles(page)
    good = [t for t in shown if label_of(collection, t["title"]) == "starfish"][:3]
    bad = [t for t in shown[:12] if label_of(collection, t["title"]) != "starfish"][:2]
    assert len(good) == 3
    for tile in good:
        page.hover(f"#grid-sizer .tile[data-id='{tile['id']}']")
        page.click(f"#grid-sizer .tile[data-id='{tile['id']}'] .mark-good")
    for tile in bad:
        page.hover(f"#grid-sizer .tile[data-id='{tile['id']}']")
        page.click(f"#grid-sizer .tile[data-id='{tile['id']}'] .mark-bad")
    assert page.text_content("#good-count") == "3 good"
    assert page.text_content("#bad-count") == f"{len(bad)} bad"
    assert page.locator("#grid-sizer .tile.good").count() == 3
    screenshot(page, "04a-marked")

    # Re-rank the vague query with the marks.
    page.fill("#query-text", "a thing")
    before = searches(page)
    page.click("#rerank")
    wait_for_search(page, before)
    assert "marked good" in summary(page)
    reranked = tiles(page)
    starfish_after = sum(label_of(collection, t["title"]) == "starfish" for t in reranked[:10])
    assert starfish_after > starfish_before and starfish_after >= 7
    assert {t["id"] for t in bad}.isdisjoint(t["id"] for t in reranked[:10])
    screenshot(page, "04b-reranked")


def test_cluster_view(page: Any, live_server: LiveServer, collection: Collection) -> None:
    open_page(page, live_server)
    search_text(page, "a butterfly")
    page.click("#tab-clusters")
    page.wait_for_selector("#cluster-graph .node")
    until(page, "document.querySelectorAll('#cluster-graph .node').length === 50")
    groups = int(page.evaluate("document.body.dataset.clusters"))
    assert 2 <= groups <= 8
    assert page.locator("#cluster-legend button").count() == groups
    assert page.locator("#cluster-graph line").count() >= 50
    until(page, """() => [...document.querySelectorAll('#cluster-graph image')].length === 50""")
    # No two thumbnails overlap.
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('#cluster-graph .node')].map(n => {
            const r = n.getBoundingClientRect(); return [r.x, r.y, r.width, r.height];
        })"""
    )
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        for x2, y2, _, _ in boxes[i + 1 :]:
            assert abs(x1 - x2) >= w1 - 1 or abs(y1 - y2) >= h1 - 1
    time.sleep(0.5)  # let the thumbnails paint
    screenshot(page, "05a-clusters")
    page.click("#cluster-legend button >> nth=0")
    assert page.locator("#cluster-graph .node.dim").count() > 0
    screenshot(page, "05b-cluster-focused")
    node = page.locator("#cluster-graph .node:not(.dim)").first
    chosen = int(node.get_attribute("data-id") or -1)
    before = searches(page)
    node.click()
    wait_for_search(page, before)
    assert page.get_attribute("#tab-results", "aria-selected") == "true"
    assert tiles(page)[0]["id"] == chosen


def link_out_id(engine: Spyglass, collection: Collection) -> int:
    """The id of the image indexed through a link out of the collection (never shown)."""
    state = engine.index.catalogue.file(str(collection.link_out))
    assert state is not None
    return state.image_id


def test_map_view_click_searches(
    page: Any, live_server: LiveServer, server_engine: Spyglass, collection: Collection
) -> None:
    open_page(page, live_server)
    search_text(page, "a wrist watch")
    page.click("#tab-map")
    until(page, "document.body.dataset.map", timeout=120)
    layout = httpx.get(live_server.url + "/api/map", timeout=30).json()
    assert layout["status"] == "ready" and layout["count"] == 152
    assert "152 images" in str(page.text_content("#map-status"))
    time.sleep(0.3)
    screenshot(page, "06a-map")
    # Click the point of one image: where the page draws it (side = min(w, h) - 48).
    canvas = page.locator("#map-canvas").bounding_box()
    assert canvas is not None
    side = min(canvas["width"], canvas["height"]) - 48
    left = canvas["x"] + (canvas["width"] - side) / 2
    top = canvas["y"] + (canvas["height"] - side) / 2
    # Choose a point with no close neighbour, so the click cannot hit another one.
    points = list(zip(layout["ids"], layout["x"], layout["y"], strict=True))
    hidden = link_out_id(server_engine, collection)

    def isolation(point: tuple[int, float, float]) -> float:
        return min(
            (point[1] - q[1]) ** 2 + (point[2] - q[2]) ** 2 for q in points if q[0] != point[0]
        )

    image_id, x, y = max((p for p in points if p[0] != hidden), key=isolation)
    page.mouse.move(left + x * side, top + y * side)
    page.wait_for_selector("#tooltip:not([hidden]) img")
    screenshot(page, "06b-map-hover")
    before = searches(page)
    page.mouse.click(left + x * side, top + y * side)
    wait_for_search(page, before)
    assert summary(page).startswith(f"image #{image_id} ")
    assert tiles(page)[0]["id"] == image_id
    assert f"/api/images/{image_id}/thumbnail" in str(page.get_attribute("#query-image", "src"))


def test_keyboard_and_export(page: Any, live_server: LiveServer) -> None:
    open_page(page, live_server)
    search_text(page, "a grand piano")
    with page.expect_download() as download_info:
        page.click("#export-csv")
    download = download_info.value
    assert download.suggested_filename.startswith("spyglass-results-")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    shown = tiles(page)
    every = httpx.get(live_server.url + "/api/status?skipped=0", timeout=30).json()
    assert len(rows) == every["unique_images"] and rows[0]["id"] == str(shown[0]["id"])
    assert rows[0]["query"] == '"a grand piano"'
    with page.expect_download() as download_info:
        page.click("#export-json")
    assert download_info.value.suggested_filename.endswith(".json")

    # The larger view, and searching from it.
    second = shown[1]
    page.hover(f"#grid-sizer .tile[data-id='{second['id']}']")
    page.click(f"#grid-sizer .tile[data-id='{second['id']}'] .open")
    page.wait_for_selector("#lightbox[open]")
    until(page, "document.querySelector('#lightbox-path').textContent.length > 0")
    until(page, "document.querySelector('#lightbox-image').naturalWidth > 0")
    assert second["title"].split("\n")[0] == page.text_content("#lightbox-path")
    original = page.get_attribute("#lightbox-original", "href")
    assert original == f"/api/images/{second['id']}/original"
    screenshot(page, "07a-lightbox")
    before = searches(page)
    page.click("#lightbox-search")
    wait_for_search(page, before)
    assert tiles(page)[0]["id"] == second["id"]

    page.keyboard.press("Escape")
    until(page, "document.body.dataset.results === '0'")
    assert page.locator("#grid-sizer .tile").count() == 0
    assert page.input_value("#query-text") == ""
    assert page.is_visible("#results-empty")
    screenshot(page, "07b-cleared")


def test_grid_stays_small_with_10000_results(
    page: Any, live_server: LiveServer, server_engine: Spyglass, collection: Collection
) -> None:
    """The grid module, mounted alone and fed 10,000 results (ids of real images, so
    the thumbnails are real): the DOM holds only the rows in view."""
    open_page(page, live_server)
    hidden = link_out_id(server_engine, collection)
    ids = sorted(set(server_engine.index.stores["image"].visible_owners().tolist()) - {hidden})
    result = page.evaluate(
        """async ([ids]) => {
            const { ResultGrid } = await import('/static/js/grid.js');
            document.querySelector('.layout').hidden = true;
            const scroller = document.createElement('div');
            scroller.className = 'grid-scroll';
            const sizer = document.createElement('div');
            sizer.className = 'grid-sizer';
            sizer.id = 'big-grid';
            scroller.appendChild(sizer);
            const host = document.createElement('div');
            host.className = 'view';
            host.style.position = 'fixed';
            host.style.inset = '56px 0 0 0';
            host.appendChild(scroller);
            document.body.appendChild(host);
            let asked = 0;
            const grid = new ResultGrid(scroller, sizer, {
                search() {}, open() {}, mark() {}, markOf: () => undefined, needMore: () => asked++,
            });
            const items = Array.from({length: 10000}, (_, n) => ({
                id: ids[n % ids.length], rank: n + 1, score: 1 - n / 20000,
                path: `/collection/result-${n + 1}.jpg`, width: 256, height: 200,
                thumbnail: `/api/images/${ids[n % ids.length]}/thumbnail`,
            }));
            grid.setItems(items, false);
            const frame = () =>
                new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
            await frame();
            const counts = [sizer.querySelectorAll('.tile').length];
            for (const fraction of [0.25, 0.5, 0.75, 1]) {
                scroller.scrollTop = fraction * (scroller.scrollHeight - scroller.clientHeight);
                await frame();
                counts.push(sizer.querySelectorAll('.tile').length);
            }
            const ranks = [...sizer.querySelectorAll('.tile .rank')].map(r => r.textContent);
            const elements = document.querySelectorAll('*').length;
            return {counts, last: ranks.includes('#10000'), elements, asked};
        }""",
        [ids],
    )
    assert result["last"] is True
    assert max(result["counts"]) <= 120, result
    assert result["elements"] < 2000, result
    assert result["asked"] == 0  # nothing more to load: no request storm
    wait_for_thumbnails(page, "#big-grid", count=1000)
    screenshot(page, "08-10000-results-bottom")


# -- a server with a token --------------------------------------------------------------

TOKEN = "browser-test-token-0123456789"


@pytest.fixture(scope="module")
def guarded_server(server_engine: Spyglass) -> Iterator[str]:
    """The app with a token, served by uvicorn in a thread on a loopback port."""

    def app(port: int) -> FastAPI:
        return create_app(server_engine, ServerSettings.for_binding("127.0.0.1", port, TOKEN))

    with served_in_thread(app) as url:
        yield url


def test_token_dialog_opens_a_session(
    page: Any, page_errors: list[str], guarded_server: str
) -> None:
    page.goto(guarded_server + "/")
    page.wait_for_selector("#token-dialog[open]")
    page.fill("#token-input", "not-the-token-at-all")
    page.press("#token-input", "Enter")
    page.wait_for_selector("#token-error:not([hidden])")
    screenshot(page, "09a-token-asked")
    page.fill("#token-input", TOKEN)
    page.press("#token-input", "Enter")
    page.wait_for_selector("body[data-ready='1']")
    search_text(page, "a laptop")  # thumbnails load through the session cookie
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["spyglass_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["value"] != TOKEN
    screenshot(page, "09b-token-accepted")
    # The 401s before the token was given are expected console noise.
    page_errors[:] = [e for e in page_errors if "401" not in e]


def test_index_status_lists_skipped_files(page: Any, live_server: LiveServer) -> None:
    open_page(page, live_server)
    page.click("#index-info")
    page.wait_for_selector("#status-dialog[open]")
    facts = str(page.text_content("#status-facts"))
    assert "bundled" in facts and "152 files" in facts and "Audit logoff" in facts
    skipped = page.locator("#skipped-list li")
    assert skipped.count() == 1
    assert "not-an-image" in str(skipped.first.text_content())
    assert "notes.jpg" in str(skipped.first.text_content())
    screenshot(page, "10-index-status")
    page.keyboard.press("Escape")  # closes the dialog, and only the dialog
    until(page, "!document.querySelector('#status-dialog').open")
