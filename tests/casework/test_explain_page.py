"""The page's "why it matched", in real headless Chromium: the toggle on a result tile
lays the heatmap over the thumbnail and takes it off again, and the lightbox's toggle
shows the large image with its heatmap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from spyglass.bench.explain import PROMPT
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.server import create_app
from spyglass.store.index import Index

from ..server.browser.conftest import (  # noqa: F401
    browser,
    page,
    page_errors,
    screenshot,
)
from ..server.browser.test_page import searches, until, wait_for_search
from ..server.conftest import served_in_thread
from .conftest import PastedObjects, image_id
from .test_page import settings_at


@pytest.fixture
def served_page(pasted: PastedObjects, bundled: Encoder) -> Iterator[tuple[str, Spyglass]]:
    engine = Spyglass(bundled, Index.open(pasted.index))
    with engine, served_in_thread(lambda port: create_app(engine, settings_at(port))) as url:
        yield url, engine


HEAT_LOADED = """([id]) => {
    const tile = document.querySelector(`#grid-sizer .tile[data-id="${id}"]`);
    const heat = tile && tile.querySelector('.heat');
    return Boolean(tile && tile.classList.contains('explained') && !heat.hidden
        && heat.src.startsWith('blob:') && heat.complete && heat.naturalWidth > 0);
}"""


def test_explain_toggle_on_a_tile_and_in_the_lightbox(
    page: Any,  # noqa: F811 - the fixture imported above
    served_page: tuple[str, Spyglass],
    pasted: PastedObjects,
) -> None:
    url, engine = served_page
    target = image_id(engine, pasted.paths[0])
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    before = searches(page)
    page.fill("#query-text", PROMPT.format(pasted.words[0]))
    page.press("#query-text", "Enter")
    wait_for_search(page, before)
    tile = page.locator(f"#grid-sizer .tile[data-id='{target}']")
    assert tile.locator(".heat").is_hidden()
    tile.hover()
    tile.locator(".explain").click()
    until(page, HEAT_LOADED, [target], timeout=120)
    assert tile.locator(".explain").get_attribute("aria-pressed") == "true"
    # The overlay is the image with its heat: as large as the thumbnail it covers.
    sizes = page.evaluate(
        """([id]) => {
            const tile = document.querySelector(`#grid-sizer .tile[data-id="${id}"]`);
            const [thumb, heat] = tile.querySelectorAll('img');
            return [thumb.naturalWidth / thumb.naturalHeight,
                    heat.naturalWidth / heat.naturalHeight,
                    heat.getBoundingClientRect().width, thumb.getBoundingClientRect().width];
        }""",
        [target],
    )
    assert sizes[0] == pytest.approx(sizes[1], rel=0.02) and sizes[2] == sizes[3]
    screenshot(page, "explain-tile")
    tile.locator(".explain").click()  # off again
    until(page, "([id]) => !document.querySelector(`#grid-sizer .tile[data-id=\"${id}\"]`)"
          ".classList.contains('explained')", [target])  # fmt: skip
    assert tile.locator(".heat").is_hidden()

    tile.hover()
    tile.locator(".open").click()
    page.wait_for_selector("#lightbox[open]")
    page.click("#lightbox-explain")
    until(
        page,
        """() => {
            const image = document.getElementById('lightbox-image');
            const button = document.getElementById('lightbox-explain');
            return button.getAttribute('aria-pressed') === 'true'
                && image.src.startsWith('blob:') && image.complete && image.naturalWidth > 0;
        }""",
        timeout=120,
    )
    screenshot(page, "explain-lightbox")
    page.click("#lightbox-explain")
    until(page, "() => document.getElementById('lightbox-image').src.includes('/thumbnail')")
