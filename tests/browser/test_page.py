"""The web page in real headless Chromium against the real server and default model.

Generations are short and greedy so the suite stays quick on a small CPU. Every wait is on
page state: chips in the DOM, or the chart's data-rendered="<view>:<counter>" hook.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

TABS = ["attention", "probs", "entropy", "similarity", "projection"]

# The conversation as a reader sees it: a partial-UTF-8 group reads as its decoded
# character(s), every other chip as its label; whitespace markers are turned back into text.
READABLE_JS = """
() => {
  const parts = [];
  for (const node of document.querySelectorAll('#conversation .ugroup-text, #conversation .chip-label')) {
    parts.push(node.textContent);
  }
  return parts.join('').replaceAll('·', ' ').replaceAll('↵', '\\n').replaceAll('⇥', '\\t');
}
"""


def rendered(page: Page) -> str:
    return page.get_by_test_id("chart").get_attribute("data-rendered") or ""


def wait_rendered(page: Page, view: str, previous: str | None = None) -> str:
    """Wait until the chart has finished a render of `view` that differs from `previous`."""
    page.wait_for_function(
        """([view, previous]) => {
            const c = document.querySelector('[data-testid="chart"]');
            const r = c.dataset.rendered || '';
            return r.startsWith(view + ':') && r !== previous;
        }""",
        arg=[view, previous or ""],
    )
    return rendered(page)


def generate(page: Page, prompt: str, max_new_tokens: int = 8, system: str | None = None) -> None:
    """Fill the form for a short greedy run, press Generate, wait for chips and the first chart."""
    page.get_by_test_id("prompt").fill(prompt)
    if system is not None:
        page.get_by_test_id("system").fill(system)
    page.get_by_test_id("temperature").fill("0")
    page.get_by_test_id("max-new-tokens").fill(str(max_new_tokens))
    before = rendered(page)
    page.get_by_test_id("generate").click()
    expect(page.locator("[data-testid='token'][data-source='generated']").first).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("busy")).to_be_hidden()
    wait_rendered(page, "attention", before)


def selected_position(page: Page) -> int:
    return int(page.locator("[data-testid='token'][aria-selected='true']").get_attribute("data-position"))


def test_generating_makes_tokens_appear(page: Page):
    generate(page, "Name one colour.")
    chips = page.get_by_test_id("token")
    n = chips.count()
    assert n > 8
    positions = [int(p) for p in chips.evaluate_all("els => els.map(e => e.dataset.position)")]
    assert positions == list(range(n)), "one chip per position, in order"
    generated = page.locator("[data-testid='token'][data-source='generated']")
    assert 1 <= generated.count() <= 8
    # Chat-template markup is dimmed, special tokens are pills.
    assert page.locator(".chip.template").count() > 0
    assert page.locator(".chip.special").first.inner_text() == "<|im_start|>"
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.get_by_test_id("run-summary")).to_contain_text("tok/s")

    # Colouring follows the chosen metric, with a legend.
    chip = generated.first
    colour_by_prob = chip.evaluate("e => getComputedStyle(e).backgroundColor")
    page.get_by_test_id("metric-select").select_option("rank")
    expect(page.get_by_test_id("legend")).to_contain_text("rank 1")
    page.get_by_test_id("metric-select").select_option("entropy")
    expect(page.get_by_test_id("legend")).to_contain_text("nats")
    assert chip.evaluate("e => getComputedStyle(e).backgroundColor") != colour_by_prob

    # The page's code keeps to module scope: the only new global is the ECharts library.
    added = page.evaluate(
        """() => {
            const frame = document.createElement('iframe');
            document.body.append(frame);
            const blank = new Set(Object.getOwnPropertyNames(frame.contentWindow));
            frame.remove();
            return Object.getOwnPropertyNames(window).filter(k => !blank.has(k));
        }"""
    )
    assert added == ["echarts"], added


def test_clicking_a_generated_token_shows_its_probabilities(page: Page):
    generate(page, "The capital of France is")
    gen = page.locator("[data-testid='token'][data-source='generated']")
    target = gen.nth(min(1, gen.count() - 1))
    pos = int(target.get_attribute("data-position"))
    target.click()
    before = rendered(page)
    page.get_by_test_id("tab-probs").click()
    wait_rendered(page, "probs", before)
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-position", str(pos))
    # Greedy decoding: the chosen token is the top bar.
    assert chart.get_attribute("data-top-id") == chart.get_attribute("data-chosen-id")
    assert chart.get_attribute("data-chosen-rank") == "1"
    # ... and the page agrees with the API.
    run_id = page.locator("#conversation").get_attribute("data-run-id")
    api = page.request.get(f"{page.base_url}/api/token_probs?run_id={run_id}&position={pos}&top_n=5").json()
    assert api["candidates"][0]["id"] == api["token"]["id"] == int(chart.get_attribute("data-chosen-id"))
    expect(page.get_by_test_id("cut-mass")).to_contain_text("%")
    # Two series (model probability and sampling probability) with data.
    sizes = page.evaluate(
        """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
               .getOption().series.map(s => s.data.length)"""
    )
    assert len(sizes) == 2 and all(s >= 5 for s in sizes)


def test_every_tab_renders_a_chart(page: Page, screenshot_dir):
    generate(page, "Explain attention in one short sentence.", max_new_tokens=16)
    for tab in TABS:
        before = rendered(page)
        page.get_by_test_id(f"tab-{tab}").click()
        if tab != "attention":  # attention is the first tab and is already drawn
            wait_rendered(page, tab, before)
        expect(page.get_by_test_id(f"tab-{tab}")).to_have_attribute("aria-selected", "true")
        charts = page.locator("[data-testid='chart']:visible")
        assert charts.count() == 1, "exactly one visible chart container"
        box = page.locator("[data-testid='chart'] canvas").first.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 200, box
        points = page.evaluate(
            """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
                   .getOption().series.reduce((n, s) => n + (s.data ? s.data.length : 0), 0)"""
        )
        assert points > 0, f"{tab}: chart has no data"
        expect(page.get_by_test_id("view-caption")).not_to_be_empty()
        page.screenshot(path=str(screenshot_dir / f"{tab}.png"))
        # Every chart can be saved as PNG.
        with page.expect_download() as dl:
            page.get_by_test_id("save-png").click()
        assert dl.value.suggested_filename.startswith(f"llmvis-{tab}") and dl.value.suggested_filename.endswith(".png")
        png = Path(dl.value.path()).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:16]  # a real PNG file, as an image viewer opens it
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        assert width > 200 and height > 200, (width, height)


def test_changing_layer_or_head_redraws_the_heatmap(page: Page):
    generate(page, "Hi there!")
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-layer", "0")
    before = rendered(page)
    with page.expect_request(re.compile(r"/api/attention\?.*layer=7")):
        page.get_by_test_id("layer-select").select_option("7")
    after_layer = wait_rendered(page, "attention", before)
    expect(chart).to_have_attribute("data-layer", "7")

    head = page.get_by_test_id("head-select")
    assert head.locator("option[value='4']").inner_text() == "Head 4 (KV 1)"
    with page.expect_request(re.compile(r"/api/attention\?.*head=4")):
        head.select_option("4")
    wait_rendered(page, "attention", after_layer)
    expect(chart).to_have_attribute("data-head", "4")


def test_empty_prompt_and_server_errors_show_in_the_error_element(page: Page):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/generate" in r.url else None)
    page.get_by_test_id("prompt").fill("   ")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("error")).to_be_visible()
    expect(page.get_by_test_id("error")).to_contain_text("prompt")
    assert requests == [], "an empty prompt is caught before any request"

    # A value only the server rejects (the form checks ranges itself, but leaves the seed's
    # 2^63 bound to the server): its message (naming the field) is shown verbatim.
    page.get_by_test_id("prompt").fill("Hello")
    page.get_by_test_id("seed").fill("9223372036854775808")
    with page.expect_response(lambda r: "/api/generate" in r.url) as resp:
        page.get_by_test_id("generate").click()
    assert resp.value.status == 400
    message = resp.value.json()["error"]
    expect(page.get_by_test_id("error")).to_have_text(message)
    assert "seed" in message
    expect(page.get_by_test_id("generate")).to_be_enabled()


def test_markup_in_the_prompt_is_shown_as_text_and_never_runs(page: Page):
    evil = '<img src=x onerror="window.__pwned=1"> and </script><b>bold</b>'
    generate(page, evil, max_new_tokens=4)
    assert evil in page.evaluate(READABLE_JS)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#conversation img, #conversation b, #conversation script").count() == 0
    assert page.locator("img").count() == 0
    # The tooltips show it as text as well.
    page.locator(".chip", has_text="img").first.hover()
    expect(page.locator("#token-tooltip")).to_be_visible()
    assert page.locator("#token-tooltip img").count() == 0
    for tab in ("entropy", "similarity"):
        before = rendered(page)
        page.get_by_test_id(f"tab-{tab}").click()
        wait_rendered(page, tab, before)
    page.get_by_test_id("chart").hover()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0


def test_language_toggle_and_chinese_text(page: Page):
    toggle = page.get_by_test_id("lang-toggle")
    expect(page.get_by_test_id("generate")).to_contain_text("Generate")
    toggle.click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_test_id("generate")).to_contain_text("生成")
    expect(page.get_by_test_id("tab-attention")).to_have_text("注意力")
    expect(page.get_by_test_id("head-select").locator("option").first).to_have_text("所有头的平均")

    generate(page, "你好，世界")
    text = page.evaluate(READABLE_JS)
    assert "你好，世界" in text, text
    assert "\ufffd" not in text
    # The byte pieces of a split character are shown as hex on their chips.
    assert page.locator(".ugroup .chip-bytes").count() > 0
    assert re.fullmatch(r"[0-9a-f]{2}( [0-9a-f]{2})*", page.locator(".ugroup .chip-bytes").first.inner_text())

    # Partial-byte tokens are labelled by their character on chart axes, never as U+FFFD.
    labels = page.evaluate(
        """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
               .getOption().yAxis[0].data.map((d) => (typeof d === 'string' ? d : d.value))"""
    )  # the selected category is an item {value, textStyle}: its label is highlighted
    assert "\ufffd" not in "".join(labels)
    assert any(label.startswith("你") for label in labels), labels

    # The language choice survives a reload and switches back.
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    expect(page.get_by_test_id("generate")).to_contain_text("生成")
    page.get_by_test_id("lang-toggle").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_test_id("generate")).to_contain_text("Generate")
    expect(page.get_by_test_id("tab-attention")).to_have_text("Attention")


def test_arrow_keys_move_the_selection(page: Page):
    generate(page, "Count: one, two,")
    first_generated = int(
        page.locator("[data-testid='token'][data-source='generated']").first.get_attribute("data-position")
    )
    assert selected_position(page) == first_generated, "the first generated token is selected"
    page.locator(".panel-head").click()  # focus out of any input
    before = rendered(page)
    page.keyboard.press("ArrowRight")
    assert selected_position(page) == first_generated + 1
    wait_rendered(page, "attention", before)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert selected_position(page) == first_generated - 1
    expect(page.get_by_test_id("selection-bar")).to_contain_text(str(first_generated - 1))

    # Arrow keys inside a text field edit text and leave the selection alone.
    page.get_by_test_id("prompt").focus()
    page.keyboard.press("ArrowLeft")
    assert selected_position(page) == first_generated - 1


def test_default_language_follows_the_browser(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    try:
        pg = context.new_page()
        pg.goto(server + "/")
        pg.wait_for_selector("body[data-ready='true']")
        expect(pg.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(pg.get_by_test_id("generate")).to_contain_text("生成")
        expect(pg.get_by_test_id("model-info")).to_contain_text("层数")
    finally:
        context.close()


def test_clicking_the_entropy_chart_selects_a_position(page: Page):
    generate(page, "Tell me a fact.")
    before = rendered(page)
    page.get_by_test_id("tab-entropy").click()
    wait_rendered(page, "entropy", before)
    target = selected_position(page) - 3
    x, y = page.evaluate(
        """(pos) => {
            const el = document.querySelector('[data-testid="chart"]');
            const chart = echarts.getInstanceByDom(el);
            const [px] = chart.convertToPixel({ gridIndex: 0 }, [pos, 0]);
            const r = el.getBoundingClientRect();
            return [r.left + px, r.top + r.height / 2];
        }""",
        target,
    )
    page.mouse.click(x, y)
    expect(page.locator("[data-testid='token'][aria-selected='true']")).to_have_attribute("data-position", str(target))
