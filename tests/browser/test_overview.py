"""The Overview tab (every head at once, as bertviz's model view) in real headless Chromium
against the real server and default model (SmolLM2-135M: 30 layers × 9 heads).

The thumbnails are checked against the model's own eager attention, max-pooled here by a plain
loop, by reading the colours back through the colour map; only the rows in view are fetched;
a click opens that layer and head in the Attention tab.
"""
from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from playwright.sync_api import Page, expect

from test_long_runs import eager_attention, post
from test_page import rendered, wait_rendered

pytestmark = pytest.mark.browser

INFERNO = ['#000004', '#1b0c41', '#4a0c6b', '#781c6d', '#a52c60', '#cf4446',
           '#ed6925', '#fb9b06', '#f7d13d', '#fcffa4']  # the page's attention colour map (matplotlib's inferno)
POOL = 32
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly brew coffee".split()


def colour_table() -> list[tuple[int, int, int]]:
    """256 colours of the map, linearly interpolated between its stops."""
    rgb = [tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in INFERNO]
    out = []
    for i in range(256):
        x = i / 255 * (len(rgb) - 1)
        k = min(len(rgb) - 2, int(x))
        f = x - k
        out.append(tuple(math.floor(a + (b - a) * f + 0.5) for a, b in zip(rgb[k], rgb[k + 1])))
    return out


def wait_complete(page: Page) -> None:
    page.wait_for_function("() => document.querySelector('[data-testid=\"overview\"]')?.dataset.complete === 'true'")


def open_overview(page: Page, run: dict) -> list[str]:
    """Open the run and its Overview tab; return the head=all URLs the page asked for."""
    page.goto(f"{page.base_url}/?run={run['run_id']}")
    page.wait_for_selector("body[data-ready='true']")
    wait_rendered(page, "attention")
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url) if "/api/attention" in r.url and "head=all" in r.url else None)
    before = rendered(page)
    page.get_by_test_id("tab-overview").click()
    wait_rendered(page, "overview", before)
    wait_complete(page)
    return urls


@pytest.fixture(scope="module")
def run200(server) -> dict:
    run = post(server, "/api/score", {"text": " ".join(WORDS[i % len(WORDS)] for i in range(190))})
    assert 160 < run["num_tokens"] < 260
    return run


def test_overview_draws_the_rows_in_view_and_they_are_the_models_attention(page: Page, run200, default_lm):
    urls = open_overview(page, run200)
    n = run200["num_tokens"]
    box = page.get_by_test_id("overview")
    expect(box).to_be_visible()
    assert page.locator("[data-testid='overview'] .ov-row[data-layer]").count() == 30
    assert page.get_by_test_id("overview-cell").count() == 30 * 9
    drawn = page.locator(".ov-row[data-state='drawn']").count()
    assert 0 < drawn < 30, "only the rows in view are drawn"
    layers = sorted({int(u.split("layer=")[1].split("&")[0]) for u in urls})
    assert len(urls) == len(layers) == drawn, "one request per visible layer"
    assert layers == list(range(drawn)), "from the top"
    for u in urls:
        assert "pool=32" in u and "format=f16" in u
    expect(page.get_by_test_id("view-caption")).to_contain_text("30 layers × 9 heads")
    expect(page.get_by_test_id("view-caption")).to_contain_text("colour: log")

    # Read layer 2's thumbnails back through the colour map and compare them with the model's
    # eager attention, max-pooled in blocks here.
    layer = 2
    cells = page.evaluate("""(layer) => [...document.querySelectorAll(`.ov-row[data-layer="${layer}"] canvas`)].map((c) => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return { w: c.width, h: c.height, px: Array.from(d) }; })""", layer)
    block = -(-n // POOL)
    side = -(-n // block)
    ref = eager_attention(default_lm, [t["id"] for t in run200["tokens"]])[layer]  # (Hq, T, T)
    lut = colour_table()
    assert len(cells) == 9
    worst = 0.0
    for h, cell in enumerate(cells):
        assert (cell["w"], cell["h"]) == (side, side)
        pooled = torch.zeros(side, side)
        for i in range(side):
            for j in range(i + 1):
                pooled[i, j] = ref[h, i * block:(i + 1) * block, j * block:(j + 1) * block].max()
        top = float(pooled.max())
        lo, hi = math.log10(max(1e-4, top * 1e-3)), math.log10(top)
        for i in range(side):
            for j in range(i + 1):
                at = (i * side + j) * 4
                rgb = tuple(cell["px"][at:at + 3])
                k = min(range(256), key=lambda q: sum((a - b) ** 2 for a, b in zip(lut[q], rgb)))
                want = float(pooled[i, j])
                if want < top * 2e-3:  # at the floor of the scale: only "dark" is checked
                    assert k <= 30, (h, i, j, k)
                    continue
                got = 10 ** (lo + k / 255 * (hi - lo))
                worst = max(worst, abs(math.log10(got / want)))
        # above the diagonal: the panel colour
        assert tuple(cell["px"][(0 * side + 1) * 4:(0 * side + 1) * 4 + 3]) == (0x16, 0x1B, 0x22)
    assert worst < 0.02, f"thumbnail weights within 5 % of the eager pooled attention (worst {worst:.4f} decades)"

    # Scroll to the bottom: the last layers are fetched and drawn, the ones fetched are not asked again.
    before = len(urls)
    box.evaluate("(b) => { b.scrollTop = b.scrollHeight; }")
    expect(page.locator(".ov-row[data-layer='29']")).to_have_attribute("data-state", "drawn")
    wait_complete(page)
    new = urls[before:]
    assert new and all(int(u.split("layer=")[1].split("&")[0]) >= drawn for u in new)
    assert len(urls) == len(set(urls)), "no layer fetched twice"

    # A click on a thumbnail opens that layer and head in the Attention tab.
    before = rendered(page)
    page.locator("[data-testid='overview-cell'][data-layer='29'][data-head='4']").click()
    wait_rendered(page, "attention", before)
    expect(box).to_be_hidden()
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-layer", "29")
    expect(chart).to_have_attribute("data-head", "4")
    assert page.get_by_test_id("layer-select").input_value() == "29"
    assert page.get_by_test_id("head-select").input_value() == "4"


def test_overview_by_keyboard_in_chinese_and_saved_as_svg_and_png(page: Page, run200):
    open_overview(page, run200)
    # Arrow keys move between thumbnails; Enter opens one.
    first = page.locator("[data-testid='overview-cell'][data-layer='0'][data-head='0']")
    first.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    target = page.locator("[data-testid='overview-cell'][data-layer='1'][data-head='1']")
    expect(target).to_be_focused()
    expect(target).to_have_attribute("aria-label", "Layer 1, Head 1 (KV 0)")
    # Saved charts: the drawn grid as one picture, with its title and caption.
    with page.expect_download() as dl:
        page.get_by_test_id("save-svg").click()
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    check = page.evaluate("""(text) => {
        const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
        return { error: doc.querySelector('parsererror')?.textContent ?? null,
                 images: doc.querySelectorAll('image').length,
                 title: doc.documentElement.querySelector(':scope > text')?.textContent };
    }""", text)
    assert check["error"] is None and check["images"] == 1, check
    assert check["title"] == "llmvis · Overview"
    with page.expect_download() as dl:
        page.get_by_test_id("save-png").click()
    assert dl.value.suggested_filename == "llmvis-overview-all-heads.png"
    assert Path(dl.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = rendered(page)
    target.focus()  # the save buttons took the focus
    page.keyboard.press("Enter")
    wait_rendered(page, "attention", before)
    expect(page.get_by_test_id("chart")).to_have_attribute("data-layer", "1")
    expect(page.get_by_test_id("chart")).to_have_attribute("data-head", "1")

    # In Chinese: the tab, the caption and the cells' names.
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("tab-overview")).to_have_text("总览")
    before = rendered(page)
    page.get_by_test_id("tab-overview").click()
    wait_rendered(page, "overview", before)
    wait_complete(page)
    expect(page.get_by_test_id("view-caption")).to_contain_text("30 层 × 9 个头")
    expect(page.locator("[data-testid='overview-cell'][data-layer='0'][data-head='2']")).to_have_attribute("aria-label", "第 0 层，头 2（KV 0）")


def test_overview_has_no_serious_accessibility_violations(page: Page, run200):
    from test_page_layout import AXE
    if not AXE.is_file():
        pytest.skip("axe-core is not installed (npm ci)")
    open_overview(page, run200)
    page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document.querySelector('[data-testid="overview"]'), { resultTypes: ['violations'] });
            return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
              .map((v) => ({ id: v.id, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
        }"""
    )
    assert result == [], json.dumps(result, indent=1)


def test_the_all_heads_request_refuses_bad_input_clearly(server, run200):
    def get(query: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{server}/api/attention?run_id={run200['run_id']}&{query}") as resp:
                return resp.status, {}
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
    for query, field in (("layer=0&head=all&pool=8&format=f16", "pool"),
                         ("layer=30&head=all&pool=32&format=f16", "layer"),
                         ("layer=0&head=all&pool=32&format=png", "format"),
                         ("layer=0&head=everything&pool=32&format=f16", "head")):
        status, body = get(query)
        assert status == 400, query
        assert body["status"] == 400 and body["error"].startswith(f"{field}:"), body
    assert get("layer=0&head=all&pool=32&format=f16")[0] == 200
