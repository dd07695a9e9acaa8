"""History list, import, export/share downloads and SVG export in real Chromium."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import Page, expect

from test_page import generate, wait_rendered

pytestmark = pytest.mark.browser


def item(page: Page, run_id: str):
    return page.locator(f"[data-testid='history-item'][data-run-id='{run_id}']")


def current_run_id(page: Page) -> str:
    return page.get_by_test_id("conversation").get_attribute("data-run-id")


def test_history_reopen_rename_delete(page: Page, screenshot_dir):
    generate(page, "First run: name a colour.", max_new_tokens=4)
    first = current_run_id(page)
    generate(page, "Second run: name a fruit.", max_new_tokens=4)
    second = current_run_id(page)
    expect(item(page, first)).to_be_visible()
    expect(item(page, second)).to_have_class(re.compile(r"\bcurrent\b"))
    assert f"run={second}" in page.url

    # reopen after a reload: the list comes from the server's history, and ?run= reopens the run
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-run-id", second)
    item(page, first).get_by_test_id("history-open").click()
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-run-id", first)
    expect(page.locator("[data-testid='token']").first).to_be_visible()
    wait_rendered(page, "attention")
    expect(item(page, first)).to_have_class(re.compile(r"\bcurrent\b"))
    page.get_by_test_id("history").screenshot(path=str(screenshot_dir / "history.png"))

    # rename: Enter saves; the title is shown as text
    item(page, first).get_by_test_id("history-rename").click()
    box = page.get_by_test_id("history-rename-input")
    box.fill("<b>colours</b> run")
    box.press("Enter")
    expect(item(page, first).locator(".history-title")).to_have_text("<b>colours</b> run")
    assert item(page, first).locator(".history-title b").count() == 0

    # delete asks for a second click
    delete = item(page, second).get_by_test_id("history-delete")
    delete.click()
    expect(delete).to_have_class(re.compile(r"\bconfirm\b"))
    delete.click()
    expect(item(page, second)).to_have_count(0)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{page.base_url}/api/run?run_id={second}")
    assert info.value.code == 404


def test_import_export_share_and_svg(page: Page, tmp_path):
    generate(page, "Export me: say hi.", max_new_tokens=4)
    run_id = current_run_id(page)
    with page.expect_download() as dl:
        page.get_by_test_id("export-run").click()
    bundle = tmp_path / "run.llmvis"
    dl.value.save_as(bundle)
    assert dl.value.suggested_filename == f"llmvis-{run_id}.llmvis"

    # delete it on the server, then bring it back through the page's file input
    req = urllib.request.Request(f"{page.base_url}/api/history/{run_id}", method="DELETE")
    assert json.loads(urllib.request.urlopen(req).read())["deleted"] is True
    page.get_by_test_id("import-file").set_input_files(str(bundle))
    # an import always gets a fresh id: wait for the page to show that run (not the deleted one,
    # which the page still shows until then), so the next import never overlaps this one
    expect(page.get_by_test_id("conversation")).not_to_have_attribute("data-run-id", run_id, timeout=60_000)
    imported = current_run_id(page)
    expect(item(page, imported)).to_be_visible()
    expect(page.get_by_test_id("error")).to_be_empty()

    # an unreadable file shows the server's clear error
    bad = tmp_path / "bad.llmvis"
    bad.write_bytes(b"definitely not a bundle")
    page.get_by_test_id("import-file").set_input_files(str(bad))
    expect(page.get_by_test_id("error")).to_contain_text("bundle: is not a llmvis bundle")

    # every view saves as SVG (an offscreen SVG-renderer copy of the chart)
    for view in ("attention", "entropy", "projection"):
        before = page.get_by_test_id("chart").get_attribute("data-rendered")
        page.get_by_test_id(f"tab-{view}").click()
        if view != "attention":
            wait_rendered(page, view, before)
        with page.expect_download() as dl:
            page.get_by_test_id("save-svg").click()
        svg = tmp_path / f"{view}.svg"
        dl.value.save_as(svg)
        text = svg.read_text()
        assert text.lstrip().startswith("<svg") and "</svg>" in text and len(text) > 2000, view

    # the share file works from disk with no server
    with page.expect_download() as dl:
        page.get_by_test_id("share-run").click()
    html = tmp_path / "share.html"
    dl.value.save_as(html)
    viewer = page.context.new_page()
    errors = []
    viewer.on("pageerror", lambda exc: errors.append(str(exc)))
    viewer.goto(html.as_uri())
    viewer.wait_for_selector("body[data-ready='true']")
    assert viewer.locator(".chip").count() > 10 and viewer.locator("canvas").count() >= 3
    viewer.locator(".chip").nth(5).click()
    expect(viewer.locator("#candidates .card-title")).to_contain_text("5")
    assert not errors
    viewer.close()
