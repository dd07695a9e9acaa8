"""The Layers (logit lens) and Heads tabs, and segment labels, in real headless Chromium
against the real server and default model (SmolLM2-135M: 30 layers, 9 query heads, 3 KV heads)."""
from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from test_page import generate, rendered, wait_rendered

pytestmark = pytest.mark.browser

OPTION_JS = """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]')).getOption()"""


def click_cell(page: Page, grid: int, x, y) -> None:
    """Click the centre of a category cell (x, y) of grid `grid` in the chart."""
    px, py = page.evaluate(
        """([grid, x, y]) => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
               .convertToPixel({gridIndex: grid}, [x, y])""",
        [grid, x, y],
    )
    box = page.get_by_test_id("chart").bounding_box()
    page.mouse.click(box["x"] + px, box["y"] + py)


def open_tab(page: Page, tab: str) -> str:
    before = rendered(page)
    page.get_by_test_id(f"tab-{tab}").click()
    return wait_rendered(page, tab, before)


def test_layers_tab_shows_the_logit_lens(page: Page, screenshot_dir):
    generate(page, "The capital of France is", max_new_tokens=6)
    n = page.get_by_test_id("token").count()
    # By default only the positions that predict generated tokens, and only those are fetched
    # (and computed): few columns, so cells carry top-1 text.
    with page.expect_response(lambda r: "/api/logit_lens" in r.url) as first:
        open_tab(page, "lens")
    gen = page.locator("[data-testid='token'][data-source='generated']").count()
    assert f"start={n - gen - 1}" in first.value.url and f"end={n}" in first.value.url
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-layers", "31")  # embeddings + 30 layers
    expect(chart).to_have_attribute("data-columns", str(gen))
    expect(chart).to_have_attribute("data-labels", "1")
    expect(chart).to_have_attribute("data-metric", "prob")
    assert int(chart.get_attribute("data-first-top1")) > 0, "markers for the first top-1 layer"
    opt = page.evaluate(OPTION_JS)
    assert opt["yAxis"][0]["data"][0] == "emb" and opt["yAxis"][0]["data"][-1] == "30 out"
    assert len(opt["series"][2]["data"]) == 31, "mean entropy of every layer"
    expect(page.get_by_test_id("view-caption")).to_contain_text("Logit lens")
    page.screenshot(path=str(screenshot_dir / "lens-generated.png"))

    # The whole sequence: every position but the last.
    before = rendered(page)
    page.get_by_test_id("lens-range").select_option("all")
    wait_rendered(page, "lens", before)
    expect(chart).to_have_attribute("data-columns", str(n - 1))
    page.screenshot(path=str(screenshot_dir / "lens.png"))
    before = rendered(page)
    page.get_by_test_id("lens-range").select_option("generated")
    wait_rendered(page, "lens", before)
    expect(chart).to_have_attribute("data-columns", str(gen))

    before = rendered(page)
    page.get_by_test_id("lens-metric").select_option("rank")
    wait_rendered(page, "lens", before)
    expect(chart).to_have_attribute("data-metric", "rank")

    # Clicking a cell selects that position.
    start = int(chart.get_attribute("data-start"))
    click_cell(page, 0, 1, 15)
    expect(page.locator("[data-testid='token'][aria-selected='true']")).to_have_attribute("data-position", str(start + 1))

    with page.expect_download() as dl:
        page.get_by_test_id("save-png").click()
    assert dl.value.suggested_filename == "llmvis-lens-rank-generated.png"


def test_layers_tab_on_a_long_scored_text_shows_its_last_positions(page: Page):
    """A scored text has no generated tokens: the Layers tab opens on its last 64 positions (the
    whole lens of a long text costs minutes on a CPU) and says so; "whole sequence" shows all."""
    page.get_by_test_id("mode-score").click()
    page.get_by_test_id("score-text").fill(" ".join(["The river flows to the sea."] * 20))
    before = rendered(page)
    with page.expect_response(lambda r: r.url.endswith("/api/score")) as resp:
        page.get_by_test_id("score-submit").click()
    n = resp.value.json()["num_tokens"]
    wait_rendered(page, "attention", before)
    assert n > 100
    with page.expect_response(lambda r: "/api/logit_lens" in r.url) as lens:
        open_tab(page, "lens")
    assert f"start={n - 1 - 64}" in lens.value.url
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-columns", "64")
    expect(page.get_by_test_id("view-caption")).to_contain_text("no generated tokens: the last 64 positions")
    before = rendered(page)
    page.get_by_test_id("lens-range").select_option("all")
    wait_rendered(page, "lens", before)
    expect(chart).to_have_attribute("data-columns", str(n - 1))


def test_heads_grid_of_a_long_run_says_it_is_estimated(page: Page):
    generate(page, " ".join(["apples and pears"] * 200), max_new_tokens=2)
    open_tab(page, "heads")
    chart = page.get_by_test_id("chart")
    n = page.get_by_test_id("token").count()
    assert int(chart.get_attribute("data-query-rows")) < n
    expect(page.get_by_test_id("view-caption")).to_contain_text(f"of {n} query positions")


def test_heads_grid_opens_a_head_in_the_attention_tab(page: Page, screenshot_dir):
    generate(page, "Count: one, two, three,", max_new_tokens=6)
    open_tab(page, "heads")
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-mode", "grid")
    expect(chart).to_have_attribute("data-heads", "9")
    expect(chart).to_have_attribute("data-kv-heads", "3")
    expect(chart).to_have_attribute("data-cells", str(30 * 9))
    opt = page.evaluate(OPTION_JS)
    assert len(opt["series"][1]["data"]) == 2, "two boundaries between the three KV groups"
    expect(page.get_by_test_id("heads-metric")).to_be_visible()
    expect(page.get_by_test_id("row-head")).to_be_hidden()
    page.screenshot(path=str(screenshot_dir / "heads-grid.png"))

    before = rendered(page)
    page.get_by_test_id("heads-metric").select_option("sink")
    wait_rendered(page, "heads", before)
    expect(chart).to_have_attribute("data-metric", "sink")
    expect(page.get_by_test_id("view-caption")).to_contain_text("sink")

    before = rendered(page)
    click_cell(page, 0, 4, 2)  # head 4, layer 2
    wait_rendered(page, "attention", before)
    expect(page.get_by_test_id("tab-attention")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("layer-select")).to_have_value("2")
    expect(page.get_by_test_id("head-select")).to_have_value("4")
    expect(chart).to_have_attribute("data-layer", "2")
    expect(chart).to_have_attribute("data-head", "4")


def test_selected_token_row_and_segments(page: Page, screenshot_dir):
    generate(page, "What is 2+2?", max_new_tokens=6, system="Be brief.")
    # Segment labels in the conversation, in order, before their first token.
    labels = page.get_by_test_id("segment-label")
    expect(labels.first).to_be_visible()
    segs = labels.evaluate_all("els => els.map(e => e.dataset.segment)")
    assert segs == ["system", "user", "assistant"], segs
    first_gen = page.locator("[data-testid='token'][data-source='generated']").first.get_attribute("data-position")
    assert labels.nth(2).get_attribute("data-start") == first_gen
    page.locator("#conversation").screenshot(path=str(screenshot_dir / "segments-conversation.png"))

    open_tab(page, "heads")
    before = rendered(page)
    page.get_by_test_id("heads-mode").select_option("row")
    wait_rendered(page, "heads", before)
    chart = page.get_by_test_id("chart")
    sel = page.locator("[data-testid='token'][aria-selected='true']").get_attribute("data-position")
    expect(chart).to_have_attribute("data-mode", "row")
    expect(chart).to_have_attribute("data-position", sel)
    expect(chart).to_have_attribute("data-keys", str(int(sel) + 1))
    expect(page.get_by_test_id("row-head")).to_be_visible()
    page.screenshot(path=str(screenshot_dir / "heads-row.png"))

    # Another token: the row follows the selection; one head instead of the mean.
    last = page.get_by_test_id("token").last
    before = rendered(page)
    last.click()
    wait_rendered(page, "heads", before)
    expect(chart).to_have_attribute("data-position", last.get_attribute("data-position"))
    before = rendered(page)
    page.get_by_test_id("row-head").select_option("5")
    wait_rendered(page, "heads", before)
    expect(chart).to_have_attribute("data-head", "5")
    # Clicking a key selects it.
    before = rendered(page)
    click_cell(page, 0, 3, 10)
    wait_rendered(page, "heads", before)
    expect(chart).to_have_attribute("data-position", "3")

    before = rendered(page)
    page.get_by_test_id("heads-mode").select_option("segments")
    wait_rendered(page, "heads", before)
    expect(chart).to_have_attribute("data-mode", "segments")
    names = chart.get_attribute("data-segments").split(",")
    assert {"system", "user", "assistant", "template"} <= set(names)
    opt = page.evaluate(OPTION_JS)
    share = [s for s in opt["series"] if s["id"].startswith("share-")]
    assert len(share) == len(names) and all(len(s["data"]) == 30 for s in share)
    for layer in (0, 15, 29):
        assert abs(sum(s["data"][layer] for s in share) - 1) < 1e-2
    page.screenshot(path=str(screenshot_dir / "heads-segments.png"))


def test_insights_speak_chinese(page: Page):
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("tab-lens")).to_have_text("逐层")
    expect(page.get_by_test_id("tab-heads")).to_have_text("注意力头")
    generate(page, "你好", max_new_tokens=3, system="简短回答。")
    expect(page.get_by_test_id("segment-label").first).to_have_text("系统")
    open_tab(page, "lens")
    expect(page.get_by_test_id("view-caption")).to_contain_text("Logit lens：")
    expect(page.get_by_test_id("lens-metric").locator("option").first).to_have_text("下一个 token 的概率")
    open_tab(page, "heads")
    expect(page.get_by_test_id("heads-mode").locator("option").first).to_have_text("所有注意力头")
    expect(page.get_by_test_id("heads-metric").locator("option").nth(2)).to_have_text("汇聚比例（关注第 0 个 token）")
    expect(page.get_by_test_id("view-caption")).to_contain_text("KV 头")
    # Back to English: the same controls switch language.
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("tab-heads")).to_have_text("Heads")
    expect(page.get_by_test_id("segment-label").first).to_have_text("system")


def test_markup_in_tokens_stays_text_in_the_new_views(page: Page):
    generate(page, '<img src=x onerror="window.__pwned=1"> hi', max_new_tokens=3)
    for tab in ("lens", "heads"):
        open_tab(page, tab)
        box = page.get_by_test_id("chart").bounding_box()
        for fx in (0.2, 0.35, 0.5):
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * 0.4)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
