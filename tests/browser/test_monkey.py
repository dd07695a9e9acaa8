"""A seeded random walk over the page's controls: no action sequence may throw in the page.

Each step picks one user action (switch tab, change a select, click a chip, arrow keys, fork
from a candidate bar, switch language, generate while other views load) at random, with a fixed
seed so a failure replays. The page fixture fails the test on any uncaught error or console error,
and at the end the page must still answer: a fresh generation renders its chips and a chart.
"""
import os
import random

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = [pytest.mark.browser, pytest.mark.model]

ACTION_TIMEOUT_MS = 3000  # a control that went away (a new run replaced the chips) is skipped
STEPS = int(os.environ.get("LLMVIS_MONKEY_STEPS", "70"))
TABS = ["attention", "probs", "entropy", "similarity", "projection", "lens", "heads", "sampler", "diff"]


def visible_options(page, testid):
    """Values of a visible, enabled <select>, or []."""
    return page.evaluate(
        """(id) => {
          const el = document.querySelector(`[data-testid="${id}"]`);
          if (!el || el.disabled || el.offsetParent === null) return [];
          return [...el.options].filter((o) => !o.disabled).map((o) => o.value);
        }""",
        testid,
    )


def generate(page, prompt, tokens):
    page.get_by_test_id("prompt").fill(prompt)
    page.get_by_test_id("max-new-tokens").fill(str(tokens))
    page.get_by_test_id("generate").click()


def act(page, rng, action, selects):
    """Do one user action on the page."""
    if action == "tab":
        page.get_by_test_id(f"tab-{rng.choice(TABS)}").click(timeout=ACTION_TIMEOUT_MS)
    elif action == "select":
        testid = rng.choice(selects)
        options = visible_options(page, testid)
        if options:
            page.get_by_test_id(testid).select_option(rng.choice(options), timeout=ACTION_TIMEOUT_MS)
    elif action == "chip":
        chips = page.get_by_test_id("token")
        count = chips.count()
        if count:
            chips.nth(rng.randrange(count)).click(timeout=ACTION_TIMEOUT_MS)
    elif action == "keys":
        for _ in range(rng.randint(1, 6)):
            page.keyboard.press(rng.choice(["ArrowLeft", "ArrowRight"]))
    elif action == "bar":
        # clicking a candidate bar forks the run from there (probabilities tab)
        if page.get_by_test_id("tab-probs").get_attribute("aria-selected") == "true":
            chart = page.get_by_test_id("chart")
            box = chart.bounding_box()
            if box:
                page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * rng.uniform(0.2, 0.8))
    elif action == "lang":
        page.get_by_test_id("lang-toggle").click(timeout=ACTION_TIMEOUT_MS)
    elif action == "generate" and page.get_by_test_id("generate").is_enabled():
        generate(page, rng.choice(["Why is the sky blue?", "写一句诗。", "</script><b>x</b>"]), rng.randint(2, 8))


@pytest.mark.parametrize("seed", [int(s) for s in os.environ.get("LLMVIS_MONKEY_SEEDS", "11,29").split(",")])
def test_random_walk_never_breaks_the_page(page, seed):
    rng = random.Random(seed)
    generate(page, "List three fruits, then one 中文 word.", 10)
    page.wait_for_selector("[data-testid='token'][data-source='generated']")
    selects = ["layer-select", "head-select", "scale-select", "range-select", "topn-select", "metric-select",
               "lens-metric", "heads-metric", "heads-mode", "projection-layer-select", "sampler-topn", "row-head"]
    for _ in range(STEPS):
        action = rng.choice(["tab", "tab", "select", "select", "chip", "keys", "bar", "lang", "generate"])
        try:
            act(page, rng, action, selects)
        except PlaywrightTimeout:
            pass  # the page changed under the action (not an error of the page); errors are caught by the fixture
        page.wait_for_timeout(rng.choice([0, 30, 120]))
    # still alive: wait for any work in flight, then one more generation renders everything
    page.wait_for_function("() => document.body.dataset.busy !== 'true'")
    generate(page, "Say hello.", 3)
    page.wait_for_function(  # the new prompt's chips (no earlier prompt says hello), then its generated ones
        "() => [...document.querySelectorAll('[data-testid=\"token\"][data-source=\"prompt\"]')]"
        ".some((c) => c.textContent.includes('hello'))"
    )
    page.wait_for_function("() => document.body.dataset.busy !== 'true'")
    assert page.locator("[data-testid='token'][data-source='generated']").count() >= 1
    page.get_by_test_id("tab-attention").click()
    page.wait_for_function("() => (document.querySelector('[data-testid=\"chart\"]').dataset.rendered || '')"
                           ".startsWith('attention:')")
    assert page.get_by_test_id("error").inner_text().strip() == ""
