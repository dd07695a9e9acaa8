"""The page's layout, exports, loading states and accessibility in real headless Chromium
against the real server and default model (issue 13, the page's second pass).

Set LLMVIS_DOC_SCREENSHOTS=1 to also write the layout screenshots into docs/screenshots/.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from conftest import ROOT
from test_page import rendered, wait_rendered

pytestmark = pytest.mark.browser

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
OPTION_JS = """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]')).getOption()"""
TABS = ["attention", "probs", "entropy", "similarity", "projection", "lens", "heads", "sampler", "diff"]
HIGHLIGHT = "#f7768e"

# Parse an SVG text in the page: XML errors, the <img> it renders to, and its highlighted labels.
SVG_CHECK_JS = """
async (text) => {
  const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
  const err = doc.querySelector('parsererror');
  const url = URL.createObjectURL(new Blob([text], { type: 'image/svg+xml' }));
  const img = new Image();
  const loaded = await new Promise((resolve) => {
    img.onload = () => resolve(true);
    img.onerror = () => resolve(false);
    img.src = url;
  });
  URL.revokeObjectURL(url);
  const lit = [...doc.querySelectorAll('text')]
    .filter((n) => (n.getAttribute('fill') || '').toLowerCase() === '#f7768e'
      || (n.getAttribute('style') || '').toLowerCase().includes('fill:#f7768e'))
    .map((n) => n.textContent);
  return { error: err ? err.textContent.slice(0, 300) : null, loaded, width: img.naturalWidth, lit };
}
"""


def generate_long(page: Page, prompt: str, max_new_tokens: int = 6, system: str = "") -> None:
    """generate(), waiting for the whole run: the chips stream in well before it is done
    (and the machine may be busy)."""
    page.get_by_test_id("prompt").fill(prompt)
    page.get_by_test_id("system").fill(system)
    page.get_by_test_id("temperature").fill("0")
    page.get_by_test_id("max-new-tokens").fill(str(max_new_tokens))
    before = rendered(page)
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("busy")).to_be_hidden(timeout=120_000)
    expect(page.locator("[data-testid='token'][data-source='generated']").first).to_be_visible()
    wait_rendered(page, "attention", before)


def open_tab(page: Page, tab: str) -> None:
    """Click a tab and wait until it has drawn (a chart, or its message)."""
    before = rendered(page)
    page.get_by_test_id(f"tab-{tab}").click()
    page.wait_for_function(
        """([view, before]) => {
            const c = document.querySelector('[data-testid="chart"]');
            const loading = !document.querySelector('[data-testid="view-loading"]').hidden
                || c.closest('.chart-wrap').classList.contains('loading');
            if (loading || c.dataset.view !== view) return false;
            const r = c.dataset.rendered || '';
            return (r.startsWith(view + ':') && r !== before) || !document.getElementById('chart-overlay').hidden;
        }""",
        arg=[tab, before],
    )


def save_svg(page: Page) -> dict:
    with page.expect_download() as dl:
        page.get_by_test_id("save-svg").click()
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    return page.evaluate(SVG_CHECK_JS, text)


def test_every_tab_saves_a_valid_svg(page: Page):
    generate_long(page, "Name one colour.")
    for tab in TABS:
        if tab == "diff":
            continue  # needs two runs; its chart goes through the same export
        open_tab(page, tab)
        if not page.locator("#chart-overlay").is_hidden():
            continue  # a message, not a chart (e.g. nothing to compare)
        check = save_svg(page)
        assert check["error"] is None, f"{tab}: the SVG is not XML: {check['error']}"
        assert check["loaded"] and check["width"] > 0, f"{tab}: the SVG does not render in an <img>"


def test_the_selected_token_label_is_the_one_shown_and_highlighted(page: Page):
    # A run long enough for thinned labels: not every position has its label drawn.
    generate_long(page, "Write two sentences about the sea and the moon.", max_new_tokens=24)
    n = page.get_by_test_id("token").count()
    assert n > 45, "labels are thinned beyond about 35 rows"
    for pos in (21, n - 9):
        before = rendered(page)
        page.locator(f"[data-testid='token'][data-position='{pos}']").click()
        wait_rendered(page, "attention", before)
        opt = page.evaluate(OPTION_JS)
        for axis in (opt["xAxis"][0], opt["yAxis"][0]):
            lit = [(i, d) for i, d in enumerate(axis["data"]) if isinstance(d, dict)]
            assert len(lit) == 1, "exactly one highlighted category per axis"
            idx, item = lit[0]
            assert idx == pos, "the highlighted category is the selected position (no pooling here)"
        # What is drawn: the highlighted labels on both axes are the selected token's.
        check = save_svg(page)
        assert check["error"] is None
        label = lit[0][1]["value"]
        assert len(check["lit"]) == 2, f"one highlighted label per axis, got {check['lit']}"
        for text in check["lit"]:
            head = text.rstrip("…").rstrip(".")
            assert label.startswith(head[: max(1, len(head) - 1)]), f"highlighted {text!r}, selected {label!r}"


def _label_on_select_line(page: Page) -> list[str]:
    """Visible toolbar labels that are not on the line of their select."""
    return page.evaluate(
        """() => {
            const bad = [];
            for (const ctl of document.querySelectorAll('.view-toolbar .ctl')) {
              if (!ctl.offsetParent) continue;
              const l = ctl.querySelector('label').getBoundingClientRect();
              const s = ctl.querySelector('select').getBoundingClientRect();
              const mid = s.top + s.height / 2;
              if (!(l.top < mid && l.bottom > mid)) bad.push(ctl.querySelector('label').textContent);
            }
            return bad;
        }"""
    )


def _outside(page: Page) -> list[str]:
    """Tab and export buttons not fully inside both the viewport and the right panel."""
    return page.evaluate(
        """() => {
            const vw = document.documentElement.clientWidth, vh = document.documentElement.clientHeight;
            const panel = document.querySelector('.panel-right').getBoundingClientRect();
            const bad = [];
            const ids = [...document.querySelectorAll('[role=tab].tab')].map((b) => b.dataset.testid)
              .concat(['save-png', 'save-svg']);
            for (const id of ids) {
              const r = document.querySelector(`[data-testid="${id}"]`).getBoundingClientRect();
              const inView = r.left >= 0 && r.top >= 0 && r.right <= vw + 0.5 && r.bottom <= vh + 0.5;
              const inPanel = r.left >= panel.left - 0.5 && r.right <= panel.right + 0.5
                && r.top >= panel.top - 0.5 && r.bottom <= panel.bottom + 0.5;
              if (!(r.width > 0 && inView && inPanel)) bad.push(id);
            }
            const tabs = document.getElementById('tabs');
            if (tabs.scrollWidth > tabs.clientWidth + 1) bad.push('tabs scroll sideways');
            return bad;
        }"""
    )


def test_tabs_and_export_buttons_fit_at_common_sizes(page: Page, screenshot_dir):
    generate_long(page, "Name one colour.")
    docs = os.environ.get("LLMVIS_DOC_SCREENSHOTS") == "1"
    for lang in ("en", "zh"):
        if page.get_by_test_id("lang-toggle").get_attribute("data-lang") != lang:
            page.get_by_test_id("lang-toggle").click()
            expect(page.get_by_test_id("lang-toggle")).to_have_attribute("data-lang", lang)
        for width, height in ((1280, 800), (1600, 1000)):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(150)
            assert _outside(page) == [], f"{lang} {width}x{height}: cut off"
            for tab in ("attention", "lens", "heads"):
                page.get_by_test_id(f"tab-{tab}").click()
                assert _label_on_select_line(page) == [], f"{lang} {width}x{height} {tab}: label off its select"
            page.get_by_test_id("tab-attention").click()
            wait_rendered(page, "attention")
            name = f"page-{width}-{lang}.png"
            page.screenshot(path=str(screenshot_dir / name))
            if docs:
                (ROOT / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ROOT / "docs" / "screenshots" / name))


def test_a_slow_tab_shows_its_own_loading_state_and_can_stop(page: Page):
    generate_long(page, "Name one colour.")  # with the default system prompt: about 40 tokens
    n = page.get_by_test_id("token").count()
    assert n >= 32, "a range long enough to run as a named job"
    expect(page.get_by_test_id("view-caption")).not_to_be_empty()
    page.get_by_test_id("tab-lens").click()
    wait_rendered(page, "lens")
    page.get_by_test_id("lens-range").select_option("all")
    wait_rendered(page, "lens")
    page.get_by_test_id("tab-attention").click()
    wait_rendered(page, "attention")

    # Hold the lens answer back: the Layers tab is slow now.
    held = []
    page.route("**/api/logit_lens*", lambda route: held.append(route))
    page.route("**/api/jobs/*", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"job_id": "x", "done": 64, "total": 200, "status": "running"})))
    page.get_by_test_id("tab-lens").click()
    loading = page.get_by_test_id("view-loading")
    expect(loading).to_be_visible()
    expect(loading).to_contain_text("Layers")
    expect(loading).to_contain_text(f"logit lens for {n} positions")
    # Nothing of the attention view stays on show under the Layers tab.
    expect(page.get_by_test_id("view-caption")).to_be_empty()
    assert page.get_by_test_id("chart").get_attribute("data-view") == "lens"
    assert page.evaluate("() => (" + OPTION_JS + ")().series?.length ?? 0") == 0
    expect(page.get_by_test_id("chart")).to_have_attribute("aria-label", re.compile("Layers"))
    # Progress of the named job, and Stop.
    expect(page.get_by_test_id("view-progress")).to_have_text("64 / 200 positions")
    expect(loading).to_contain_text(re.compile(r"\d+ s"))
    assert held, "the lens request was sent"
    job_id = re.search(r"job_id=([0-9a-f]+)", held[0].request.url).group(1)
    assert 8 <= len(job_id) <= 32
    with page.expect_request("**/api/cancel") as cancel:
        page.get_by_test_id("view-stop").click()
    assert json.loads(cancel.value.post_data)["run_id"] == job_id
    expect(loading).to_be_hidden()
    expect(page.locator("#chart-overlay-text")).to_contain_text("stopped")
    expect(page.get_by_test_id("error")).to_be_hidden()
    # Leaving the tab while its job runs stops the job too.
    page.get_by_test_id("tab-lens").click()
    expect(loading).to_be_visible()
    expect(page.get_by_test_id("view-stop")).to_be_visible()
    second = re.search(r"job_id=([0-9a-f]+)", held[-1].request.url).group(1)
    assert second != job_id, "a fresh job id for every job"
    with page.expect_request("**/api/cancel") as cancel:
        page.get_by_test_id("tab-entropy").click()
    assert json.loads(cancel.value.post_data)["run_id"] == second
    wait_rendered(page, "entropy")
    for route in held:
        route.abort()
    page.unroute("**/api/logit_lens*")
    page.unroute("**/api/jobs/*")

    # Clicking the tab again computes it, as a real named job, and draws it.
    with page.expect_request(lambda r: "/api/logit_lens" in r.url and "job_id=" in r.url):
        page.get_by_test_id("tab-lens").click()
    wait_rendered(page, "lens")
    expect(page.get_by_test_id("view-loading")).to_be_hidden()
    expect(page.get_by_test_id("view-caption")).to_contain_text("Logit lens")


def test_keyboard_and_screen_reader_basics(page: Page):
    # The first Tab reaches the skip link, which leads to the conversation.
    page.keyboard.press("Tab")
    skip = page.get_by_test_id("skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("conversation")).to_be_focused()
    # The token list takes focus, and the arrow keys move the selection from there.
    generate_long(page, "Name one colour.")
    page.get_by_test_id("conversation").focus()
    expect(page.get_by_test_id("conversation")).to_be_focused()
    sel = int(page.get_by_test_id("conversation").get_attribute("data-selected"))
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-selected", str(sel - 1))
    # Every chart says what it shows.
    label = page.get_by_test_id("chart").get_attribute("aria-label")
    assert label.startswith("Attention") and "Layer" in label


def test_no_serious_accessibility_violations_after_a_generation(page: Page):
    if not AXE.is_file():
        pytest.skip("axe-core is not installed (npm ci)")
    generate_long(page, "Name one colour.")
    # The page's CSP (script-src 'self') refuses add_script_tag's inline script; evaluating
    # the file through the DevTools protocol is not subject to it.
    page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, { resultTypes: ['violations'] });
            return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
              .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 4).map((n) => n.target.join(' ')
                + ' :: ' + (n.failureSummary || '').slice(0, 200)) }));
        }"""
    )
    assert result == [], json.dumps(result, indent=1, ensure_ascii=False)
