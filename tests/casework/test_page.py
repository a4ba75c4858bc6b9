"""The page's case work, in real headless Chromium: "Hide near-duplicates" shows each
group once with its size, and the JSON export button saves a case file that verifies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spyglass.casework.casefile import CaseFile
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app
from spyglass.store.index import Index

from ..server.browser.conftest import browser, page, page_errors  # noqa: F401
from ..server.browser.test_page import searches, tiles, until, wait_for_search
from ..server.conftest import served_in_thread
from .conftest import EditedCollection, image_id


@pytest.fixture
def served_page(edited_index: Path, bundled: Encoder) -> Iterator[tuple[str, Spyglass]]:
    """The app over the edited collection, served by uvicorn in a thread."""
    engine = Spyglass(bundled, Index.open(edited_index))
    with engine, served_in_thread(lambda port: create_app(engine, settings_at(port))) as url:
        yield url, engine


def settings_at(port: int) -> ServerSettings:
    return ServerSettings.for_binding("127.0.0.1", port, None, prepare_at_start=False)


def test_hide_near_duplicates_and_export_a_case_file(
    page: Any,  # noqa: F811 - the fixture imported above
    served_page: tuple[str, Spyglass],
    edited: EditedCollection,
) -> None:
    url, engine = served_page
    source = next(iter(edited.copies))
    group = {image_id(engine, p) for p in [source, *edited.copies[source].values()]}
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    before = searches(page)
    page.fill("#query-text", "a sunflower")
    page.press("#query-text", "Enter")
    wait_for_search(page, before)
    shown = [t["id"] for t in tiles(page)]
    assert len(set(shown) & group) >= 3
    before = searches(page)
    page.check("#collapse-duplicates")
    wait_for_search(page, before)
    collapsed = tiles(page)
    assert len({t["id"] for t in collapsed} & group) == 1
    badge = until(
        page,
        """(ids) => {
            const tile = [...document.querySelectorAll('#grid-sizer .tile')]
                .find(t => ids.includes(Number(t.dataset.id)));
            const badge = tile && tile.querySelector('.group');
            return badge && !badge.hidden && badge.textContent;
        }""",
        sorted(group),
    )
    assert badge.startswith("+") and int(badge[1:]) >= 2
    with page.expect_download() as download_info:
        page.click("#export-json")
    case = CaseFile.from_json(Path(download_info.value.path()).read_text())
    assert case.intact and case.search.collapse is not None
    assert [r.image_id for r in case.results[: len(collapsed)]] == [t["id"] for t in collapsed]
    assert engine.verify(case).ok
