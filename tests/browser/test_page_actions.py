"""Issue 13, the page's actions: what happens while a run is made, forks that stream and stop,
reopened runs that look as they were made, numbers tied to their distribution, stable branch
numbers, the history list by keyboard, and the controls that must not offer what is not there.
Real server, real default model, real headless Chromium; short greedy runs.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from test_interactive import GENERATED, api_run, bar_point, fill_form, generate, open_tab, run_to_end
from test_page import rendered, wait_rendered

pytestmark = pytest.mark.browser

BUSY = "A run is in progress: press Stop or wait for it to finish."


def history_item(page: Page, run_id: str):
    return page.locator(f"[data-testid='history-item'][data-run-id='{run_id}']")


def start_long_run(page: Page, prompt: str = "Write a very long story about a dragon who learns to cook.") -> str:
    """Start a 300-token run and wait until it has streamed two tokens; return its run id.

    The wait is on the new run's own stream id and count: the chips of the run on show before
    the click also say data-source="generated", so counting chips alone can pass before the
    server has even answered (that race failed CI once).
    """
    conv = page.get_by_test_id("conversation")
    before = conv.get_attribute("data-stream-run-id") or ""
    fill_form(page, prompt, 300)
    page.get_by_test_id("generate").click()
    page.wait_for_function(
        """(before) => {
            const c = document.getElementById('conversation');
            return c.dataset.streaming === 'true' && (c.dataset.streamRunId || '') !== before
                && Number(c.dataset.streamed || 0) >= 2;
        }""",
        arg=before,
    )
    return conv.get_attribute("data-stream-run-id")


def test_actions_during_a_generation_are_refused_with_the_reason(page: Page):
    old = generate(page, "Name a colour.", 3)
    streaming_id = start_long_run(page)
    assert streaming_id and streaming_id != old
    conv = page.get_by_test_id("conversation")
    url = page.url
    # Opening a history item: refused, said so; the page stays on the streaming run.
    # (aria-disabled: assistive tech hears why; a mouse click still reaches it, hence force)
    history_item(page, old).get_by_test_id("history-open").click(force=True)
    expect(page.get_by_test_id("error")).to_have_text(BUSY)
    expect(conv).to_have_attribute("data-streaming", "true")
    assert page.url == url
    expect(conv).to_have_attribute("data-stream-run-id", streaming_id)
    # Score text: refused with the same reason (it used to be silently ignored).
    page.locator(".mode-btn[data-mode='score']").click()
    page.get_by_test_id("score-text").fill("Some text to score.")
    page.get_by_test_id("error").evaluate("el => { el.textContent = ''; }")
    page.get_by_test_id("score-submit").click(force=True)
    expect(page.get_by_test_id("error")).to_have_text(BUSY)
    expect(page.get_by_test_id("score-submit")).to_have_attribute("aria-disabled", "true")
    page.locator(".mode-btn[data-mode='generate']").click()
    # Stop is the way out; the streamed run is the one that lands on the page.
    page.get_by_test_id("stop").click()
    assert run_to_end(page) == streaming_id
    assert api_run(page, streaming_id)["status"] == "cancelled"
    expect(page.get_by_test_id("score-submit")).to_have_attribute("aria-disabled", "false")


def test_a_fork_streams_with_the_forms_settings_and_stops(page: Page):
    parent = generate(page, "Tell me a long story about a cat.", 4)
    page.locator(GENERATED).nth(1).click()
    open_tab(page, "probs")
    # The form now asks for more tokens than the parent had; the fork says so before the click.
    page.get_by_test_id("max-new-tokens").fill("200")
    hint = page.get_by_test_id("fork-settings")
    expect(hint).to_be_visible()
    expect(hint).to_contain_text("Max new tokens 200")
    expect(hint).to_contain_text("T 0")
    x, y = bar_point(page, 0, 2)
    with page.expect_request(lambda r: r.url.endswith("/api/fork/stream")) as req:
        page.mouse.click(x, y)
    body = req.value.post_data_json
    assert body["max_new_tokens"] == 200 and body["temperature"] == 0 and body["run_id"] == parent
    expect(page.get_by_test_id("stop")).to_be_visible()
    page.wait_for_function(
        """() => document.getElementById('conversation').dataset.streaming === 'true'
                 && Number(document.getElementById('conversation').dataset.streamed) >= 3"""
    )
    before = rendered(page)
    page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("busy")).to_be_hidden(timeout=180_000)
    wait_rendered(page, "probs", before)
    fork_id = page.get_by_test_id("conversation").get_attribute("data-run-id")
    fork = api_run(page, fork_id)
    assert fork["kind"] == "fork" and fork["parent_id"] == parent
    assert fork["status"] == "cancelled" and fork["params"]["max_new_tokens"] == 200
    # Branch numbers follow creation, also when the fork is opened first (a reload of ?run=fork).
    tree = page.get_by_test_id("fork-tree")
    expect(tree.locator(f"[data-run-id='{parent}'] .branch-order")).to_have_text("#1")
    expect(tree.locator(f"[data-run-id='{fork_id}'] .branch-order")).to_have_text("#2")
    page.goto(f"{page.base_url}/?run={fork_id}")
    page.wait_for_selector("body[data-ready='true']")
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-run-id", fork_id)
    expect(tree.get_by_test_id("branch")).to_have_count(2)
    expect(tree.locator(f"[data-run-id='{parent}'] .branch-order")).to_have_text("#1")
    expect(tree.locator(f"[data-run-id='{fork_id}'] .branch-order")).to_have_text("#2")
    # The history tells a fork from a generation.
    expect(history_item(page, fork_id).get_by_test_id("history-kind")).to_have_attribute("data-kind", "fork")
    expect(history_item(page, parent).get_by_test_id("history-kind")).to_have_attribute("data-kind", "generate")


def test_reopening_restores_the_form_the_mode_and_the_colouring(page: Page):
    run_id = generate(page, "Name a fruit.", 3, system="Answer in one word.", seed=5, top_k=0, top_p=1)
    # The greedy step's cut mass names the distribution it is of.
    page.locator(GENERATED).first.click()
    open_tab(page, "probs")
    expect(page.get_by_test_id("cut-mass")).to_contain_text("Greedy (T = 0)")
    expect(page.get_by_test_id("cut-mass")).to_contain_text("raw bars")
    page.goto(f"{page.base_url}/?run={run_id}")
    page.wait_for_selector("body[data-ready='true']")
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-run-id", run_id)
    expect(page.get_by_test_id("prompt")).to_have_value("Name a fruit.")
    expect(page.get_by_test_id("system")).to_have_value("Answer in one word.")
    expect(page.get_by_test_id("temperature")).to_have_value("0")
    expect(page.get_by_test_id("max-new-tokens")).to_have_value("3")
    expect(page.get_by_test_id("seed")).to_have_value("5")
    expect(page.get_by_test_id("top-k")).to_have_value("0")

    # A scored text reopens in Score mode, GLTR-coloured, with its score panel and a real caption.
    page.locator(".mode-btn[data-mode='score']").click()
    page.get_by_test_id("score-text").fill("The cat sat on the mat.")
    page.get_by_test_id("score-submit").click()
    expect(page.get_by_test_id("perplexity")).to_be_visible(timeout=120_000)
    scored = page.get_by_test_id("conversation").get_attribute("data-run-id")
    page.goto(f"{page.base_url}/")
    page.wait_for_selector("body[data-ready='true']")
    history_item(page, scored).get_by_test_id("history-open").click()
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-run-id", scored)
    expect(page.locator("body")).to_have_attribute("data-mode", "score")
    expect(page.get_by_test_id("score-text")).to_have_value("The cat sat on the mat.")
    expect(page.get_by_test_id("metric-select")).to_have_value("gltr")
    expect(page.get_by_test_id("perplexity")).to_be_visible()
    expect(history_item(page, scored).get_by_test_id("history-kind")).to_have_attribute("data-kind", "score")
    before = rendered(page)
    page.get_by_test_id("tab-entropy").click()
    wait_rendered(page, "entropy", before)
    caption = page.locator("#view-caption").inner_text()
    assert "scored tokens" in caption and "— nats" not in caption, caption


def test_history_by_keyboard_delete_on_show_exports_and_form_checks(page: Page):
    first = generate(page, "One.", 2)
    second = generate(page, "Two.", 2)
    items = page.get_by_test_id("history-item")
    expect(items.first).to_be_visible()
    # One tab stop for the whole list; arrows move along it.
    stops = page.evaluate(
        "() => [...document.querySelectorAll('#history-list button')].filter(b => b.tabIndex === 0).length"
    )
    assert stops == 1
    history_item(page, second).get_by_test_id("history-open").focus()
    page.keyboard.press("ArrowDown")
    focused = page.evaluate("() => document.activeElement.closest('[data-testid=history-item]').dataset.runId")
    assert focused == first
    page.keyboard.press("Tab")  # past the list in one step
    assert page.evaluate("() => !document.activeElement.closest('#history-list')")
    # Import… is a keyboard button.
    choosers: list = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    imp = page.get_by_test_id("import-button")
    imp.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => true")  # one round trip for the chooser event
    deadline = 50
    while not choosers and deadline:
        page.wait_for_timeout(100)
        deadline -= 1
    assert choosers, "Enter on Import… opens the file chooser"

    # An empty diff offers no PNG / SVG.
    page.get_by_test_id("tab-diff").click()
    page.get_by_test_id("diff-a").select_option(second)
    page.get_by_test_id("diff-b").select_option(second)
    expect(page.get_by_test_id("save-png")).to_be_disabled()
    expect(page.get_by_test_id("save-svg")).to_be_disabled()
    before = rendered(page)
    page.get_by_test_id("tab-attention").click()
    wait_rendered(page, "attention", before)
    expect(page.get_by_test_id("save-png")).to_be_enabled()

    # Deleting the run on show takes it off the page, with Export.
    delete = history_item(page, second).get_by_test_id("history-delete")
    delete.click()
    delete.click()
    expect(history_item(page, second)).to_have_count(0)
    expect(page.get_by_test_id("token")).to_have_count(0)
    expect(page.get_by_test_id("export-run")).to_be_disabled()
    expect(page.get_by_test_id("save-png")).to_be_disabled()
    assert "run=" not in page.url

    # Bad numbers are caught in the form, in the form's words, before any request.
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/generate" in r.url else None)
    fill_form(page, "Hi.", 4, top_p=1.5)
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("error")).to_have_text("Top-p must be in (0, 1].")
    assert not sent
    expect(page.get_by_test_id("error")).not_to_have_text(re.compile("top_p"))
