"""The page's case work, in real headless Chromium against a real server and the real
bundled model, on real images: saved searches (save, list, replace, run, "new only",
delete), checking a case file exported by the page (verified, then edited, then with a
result's file changed), and the near-duplicate groups tab. Screenshots of each step
go to test-artifacts/screenshots/."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from spyglass.casework.saved import SavedSearches
from spyglass.encoders import Encoder
from spyglass.engine import Spyglass
from spyglass.server import ServerSettings, create_app
from spyglass.store.index import Index

from ..server.browser.conftest import (  # noqa: F401
    browser,
    page,
    page_errors,
    screenshot,
)
from ..server.browser.test_page import searches, tiles, until, wait_for_search
from ..server.conftest import served_in_thread
from .conftest import CLASSES, EditedCollection, image_id
from .test_casework_http import next_sunflower
from .test_page import served_page  # noqa: F401


@contextmanager
def serving(
    folder: Path, bundled: Encoder, audit_log: Path | None = None
) -> Iterator[tuple[str, Spyglass]]:
    """The app over the index in ``folder``, served by uvicorn in a thread; it sees
    images indexed meanwhile at once (refresh_seconds=0)."""

    def app(port: int) -> FastAPI:
        return create_app(
            engine,
            ServerSettings.for_binding(
                "127.0.0.1",
                port,
                None,
                prepare_at_start=False,
                refresh_seconds=0.0,
                audit_log=audit_log,
            ),
        )

    with Spyglass(bundled, Index.open(folder)) as engine, served_in_thread(app) as url:
        yield url, engine


@pytest.fixture
def own_served(
    own_collection: tuple[EditedCollection, Path], bundled: Encoder
) -> Iterator[tuple[str, Spyglass, EditedCollection, Path]]:
    """A server over an index of this test's own (saved searches are written into its
    folder; files may change and images be added), keeping an audit log beside it."""
    collection, folder = own_collection
    with serving(folder, bundled, folder.parent / "audit.jsonl") as (url, engine):
        yield url, engine, collection, folder


def open_page(tab: Any, url: str) -> None:
    tab.goto(url + "/")
    tab.wait_for_selector("body[data-ready='1']")


def search_for(tab: Any, text: str) -> list[int]:
    before = searches(tab)
    tab.fill("#query-text", text)
    tab.press("#query-text", "Enter")
    wait_for_search(tab, before)
    return [t["id"] for t in tiles(tab)]


def saved_runs(tab: Any) -> int:
    return int(tab.evaluate("Number(document.body.dataset.savedRuns || 0)"))


def run_saved(tab: Any, name: str, button: str) -> None:
    before = saved_runs(tab)
    tab.click(f'#saved-list [data-name="{name}"] .{button}')
    until(tab, "([before]) => Number(document.body.dataset.savedRuns || 0) > before", [before])


def expected_errors(errors: list[str], *statuses: int) -> None:
    """Chromium logs a failed fetch (a refusal the page shows) as a console error."""
    errors[:] = [e for e in errors if not any(f"status of {s}" in e for s in statuses)]


# -- saved searches ---------------------------------------------------------------------


def test_save_list_run_new_only_and_delete_a_search(
    page: Any,  # noqa: F811 - the fixture imported above
    page_errors: list[str],  # noqa: F811
    own_served: tuple[str, Spyglass, EditedCollection, Path],
    bundled: Encoder,
    data_root: Path,
) -> None:
    url, _, collection, folder = own_served
    open_page(page, url)
    assert page.locator("#saved-list .saved-item").count() == 0
    searched = search_for(page, "a sunflower")

    page.fill("#saved-name", "sunflowers")
    page.click("#saved-save")
    item = page.locator('#saved-list [data-name="sunflowers"]')
    item.wait_for()
    assert "sunflower" in str(item.locator(".saved-query").text_content())
    assert item.locator(".saved-when").text_content() == "never run"
    [saved] = SavedSearches(folder).all()  # written where `spyglass saved` reads it
    assert saved.name == "sunflowers" and "a sunflower" in saved.search.describe()
    assert saved.search.k == 100  # the grid's first page

    # The same name again asks first, and replaces only when told to.
    page.fill("#saved-name", "sunflowers")
    page.click("#saved-save")
    page.wait_for_selector("#saved-confirm:not([hidden])")
    assert "exists" in str(page.text_content("#saved-confirm"))
    page.click("#saved-confirm .confirm-yes")
    page.wait_for_selector("#saved-confirm", state="hidden")
    expected_errors(page_errors, 409)
    assert page.locator("#saved-list .saved-item").count() == 1
    screenshot(page, "casework-01-saved-search-listed")

    # Run: its results in the grid, as the search's were, under a summary naming it.
    run_saved(page, "sunflowers", "saved-run")
    assert [t["id"] for t in tiles(page)][:10] == searched[:10]
    assert "saved search “sunflowers”" in str(page.text_content("#summary"))
    assert "ran " in str(item.locator(".saved-when").text_content())
    # The server keeps an audit log: the index's dialog says so, and the run is in it.
    page.click("#index-info")
    page.wait_for_selector("#status-dialog[open]")
    assert "Audit logon: this server records" in str(page.text_content("#status-facts"))
    page.keyboard.press("Escape")
    logged = [json.loads(line) for line in (folder.parent / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in logged] == ["search", "saved-search"]
    assert logged[-1]["results"][:10] == searched[:10]

    # New only, right after a run: nothing new, said so.
    run_saved(page, "sunflowers", "saved-new")
    assert page.evaluate("document.body.dataset.results") == "0"
    assert page.is_visible("#results-empty")
    assert "Nothing new" in str(page.text_content("#results-empty h3"))
    assert "0 new" in str(page.text_content("#summary"))
    screenshot(page, "casework-02-saved-search-nothing-new")

    # An image indexed since: "new only" shows it alone.
    added = collection.root / CLASSES[0] / "added-sunflower.jpg"
    shutil.copyfile(next_sunflower(data_root), added)
    with Spyglass(bundled, Index.open_for_writing(folder, bundled.info)) as writer:
        writer.add([str(added)])
        added_id = image_id(writer, added)
    run_saved(page, "sunflowers", "saved-new")
    assert [t["id"] for t in tiles(page)] == [added_id]
    assert "1 new" in str(page.text_content("#summary"))
    screenshot(page, "casework-03-saved-search-new-only")

    # Delete asks, then the search is gone from the page and from the index's folder.
    item.locator(".saved-delete").click()
    page.wait_for_selector("#saved-confirm:not([hidden])")
    page.click("#saved-confirm .confirm-yes")
    page.wait_for_selector('#saved-list [data-name="sunflowers"]', state="detached")
    assert SavedSearches(folder).all() == []


# -- checking a case file ---------------------------------------------------------------


def drop_file(tab: Any, selector: str, path: Path) -> None:
    """Drop ``path`` on ``selector`` as a person dragging it from their files would."""
    tab.evaluate(
        """([selector, text, name]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, {type: 'application/json'}));
            const target = document.querySelector(selector);
            const init = {dataTransfer: transfer, bubbles: true};
            window.dispatchEvent(new DragEvent('dragenter', init));
            target.dispatchEvent(new DragEvent('dragover', init));
            target.dispatchEvent(new DragEvent('drop', init));
        }""",
        [selector, path.read_text(), path.name],
    )


def verify_on_page(tab: Any, path: Path, drop: bool = False) -> dict[str, str]:
    """Check ``path`` on the page (chosen, or dropped on the card); the verdict and its
    facts, by name."""
    if tab.is_visible("#verify-dialog"):
        tab.click("#verify-close")
    tab.evaluate("delete document.querySelector('#verify-dialog').dataset.verified")
    if drop:
        drop_file(tab, "#verify-drop", path)
    else:
        tab.set_input_files("#verify-file", str(path))
    until(tab, "document.querySelector('#verify-dialog').dataset.verified")
    found: dict[str, str] = tab.evaluate(
        """() => Object.fromEntries([
            ['verified', document.querySelector('#verify-dialog').dataset.verified],
            ['verdict', document.querySelector('#verify-verdict').textContent],
            ...[...document.querySelectorAll('#verify-facts dd')]
                .map(d => [d.dataset.fact, d.textContent]),
        ])"""
    )
    return found


def test_verify_an_exported_case_file_then_an_edited_one_and_a_changed_file(
    page: Any,  # noqa: F811
    page_errors: list[str],  # noqa: F811
    own_served: tuple[str, Spyglass, EditedCollection, Path],
    tmp_path: Path,
) -> None:
    url, _, _, _ = own_served
    open_page(page, url)
    search_for(page, "a watch")
    with page.expect_download() as download_info:
        page.click("#export-json")
    exported = tmp_path / "case.json"
    shutil.copyfile(download_info.value.path(), exported)

    found = verify_on_page(page, exported)
    assert found["verified"] == "true", found
    assert found["verdict"].startswith("Verified")
    assert "unchanged" in found["case-file"] and "same" in found["results"]
    screenshot(page, "casework-04-case-file-verified")

    # An edited case file: its digest no longer holds.
    case = json.loads(exported.read_text())
    case["results"][0]["mark"] = "good" if case["results"][0].get("mark") != "good" else None
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(case))
    found = verify_on_page(page, edited, drop=True)
    assert found["verified"] == "false" and found["verdict"].startswith("Not verified")
    assert "edited" in found["case-file"]
    # Dropped on its card, a case file is not taken for an image to search by.
    assert not page.is_visible("#toast") and not page.is_visible("#drop-overlay")

    # A result's file changed since the export: named, with its rank.
    top = case["results"][0]
    with Path(top["path"]).open("ab") as handle:
        handle.write(b"tampered")
    found = verify_on_page(page, exported)
    assert found["verified"] == "false"
    assert "unchanged" in found["case-file"]  # the case file itself is intact
    assert "1 changed" in found["files"]
    assert f"#{top['rank']} {top['path']}: changed" in found["files"]
    screenshot(page, "casework-05-case-file-not-verified")

    # What is no case file is refused in one line.
    page.click("#verify-close")
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    page.set_input_files("#verify-file", str(other))
    page.wait_for_selector("#toast:not([hidden])")
    refusal = str(page.text_content("#toast"))
    assert refusal and "\n" not in refusal
    assert not page.is_visible("#verify-dialog")
    expected_errors(page_errors, 400, 422)


# -- near-duplicate groups ----------------------------------------------------------------


def test_duplicates_tab_lists_the_known_groups(
    page: Any,  # noqa: F811
    served_page: tuple[str, Spyglass],  # noqa: F811
    edited: EditedCollection,
) -> None:
    url, engine = served_page
    open_page(page, url)
    page.click("#tab-duplicates")
    until(page, "document.body.dataset.duplicates !== undefined")
    assert page.is_visible("#view-duplicates") and not page.is_visible("#view-results")
    groups: list[dict[str, Any]] = page.evaluate(
        """() => [...document.querySelectorAll('#dup-groups .dup-group')].map(g => ({
            size: g.querySelector('.dup-size').textContent,
            ids: [...g.querySelectorAll('.dup-member')].map(m => Number(m.dataset.id)),
        }))"""
    )
    # Known from how the collection was made: each edited source with its half-size
    # copy and its quality-30 re-encode lies in one group.
    assert len(groups) >= len(edited.copies)
    for source, copies in edited.copies.items():
        known = {image_id(engine, p) for p in (source, copies["half"], copies["q30"])}
        holding = [g for g in groups if known <= set(g["ids"])]
        assert len(holding) == 1, (source, groups)
        assert holding[0]["size"] == f"{len(holding[0]['ids'])} images"
    sizes = [len(g["ids"]) for g in groups]
    assert sizes == sorted(sizes, reverse=True)  # largest first
    until(
        page,
        """() => [...document.querySelectorAll('#dup-groups img')]
            .every(i => i.complete && i.naturalWidth > 0)""",
    )
    screenshot(page, "casework-06-duplicates")

    # A member opens in the lightbox, from where it can be searched by.
    first = groups[0]["ids"][0]
    page.click(f'#dup-groups .dup-member[data-id="{first}"]')
    page.wait_for_selector("#lightbox[open]")
    assert page.evaluate("document.querySelector('#lightbox').dataset.id") == str(first)
    before = searches(page)
    page.click("#lightbox-search")
    wait_for_search(page, before)
    assert tiles(page)[0]["id"] == first

    # A stricter similarity asks the server again, with that threshold.
    page.click("#tab-duplicates")
    page.fill("#dup-threshold", "0.999")
    page.press("#dup-threshold", "Enter")
    until(page, "document.querySelector('#dup-summary').textContent.includes('0.999')")
