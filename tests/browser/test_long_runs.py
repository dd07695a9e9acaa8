"""Long runs made readable, and the exports that say what they show (issue 13, second pass), in
real headless Chromium against the real server and default model.

- Attention: a rectangle dragged on the pooled heatmap zooms into that window at full
  resolution (checked against the model's own eager attention), a mini-map shows where the
  window is, "Reset zoom" and Escape go back, and the colour scale is named.
- Layers: a long range is shown a window at a time with a slider; "whole sequence" on a long run
  first shows a time estimate measured on this machine, then progress, the time left and Stop.
- Attention by segment explains itself on a scored text instead of an empty 0 % chart; the
  entropy caption has a number.
- PNG and SVG carry a title, the caption, the model, the run and the position; both are off on
  an empty Diff. The projection's outlier label is drawn inside the chart.
"""
from __future__ import annotations

import json
import re
import struct
import urllib.request
from pathlib import Path

import pytest
import torch
from playwright.sync_api import Page, expect

from test_page import rendered, wait_rendered

pytestmark = pytest.mark.browser

OPTION_JS = """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]')).getOption()"""
PIXEL_JS = """([x, y]) => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
    .convertToPixel({gridIndex: 0}, [x, y])"""
SENTENCE = "The river flows past the old mill, and the children watch the boats go by."


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def long_run(server) -> dict:
    """A scored text of about 290 tokens (no chat template): long enough to pool and to ask
    before the whole lens."""
    run = post(server, "/api/score", {"text": " ".join([SENTENCE] * 17)})
    assert 260 < run["num_tokens"] < 400
    return run


def open_run(page: Page, run: dict) -> None:
    page.goto(f"{page.base_url}/?run={run['run_id']}")
    page.wait_for_selector("body[data-ready='true']")
    wait_rendered(page, "attention")


def chart_attr(page: Page, name: str) -> str | None:
    return page.get_by_test_id("chart").get_attribute(f"data-{name}")


def drag_cells(page: Page, a: tuple[int, int], b: tuple[int, int]) -> None:
    """Drag with the mouse from cell a to cell b ([column, row]) of the heatmap."""
    box = page.get_by_test_id("chart").bounding_box()
    pa = page.evaluate(PIXEL_JS, list(a))
    pb = page.evaluate(PIXEL_JS, list(b))
    page.mouse.move(box["x"] + pa[0], box["y"] + pa[1])
    page.mouse.down()
    page.mouse.move(box["x"] + (pa[0] + pb[0]) / 2, box["y"] + (pa[1] + pb[1]) / 2, steps=3)
    expect(page.get_by_test_id("attn-brush")).to_be_visible()
    page.mouse.move(box["x"] + pb[0], box["y"] + pb[1], steps=3)
    page.mouse.up()


def eager_attention(default_lm, ids: list[int]):
    """Every layer's attention weights from the model's own eager forward pass: (L, Hq, T, T)."""
    model = default_lm.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_attentions=True).attentions
    finally:
        model.set_attn_implementation(previous)
    return torch.stack([a[0] for a in out]).float()


def test_brush_zooms_into_the_full_resolution_window_with_a_minimap_and_reset(page: Page, long_run, default_lm):
    open_run(page, long_run)
    n = long_run["num_tokens"]
    chart = page.get_by_test_id("chart")
    pool = int(chart_attr(page, "pool"))
    assert pool >= 2, "the whole run is pooled"
    # The colour scale that shows structure on a long run is on by default, and named.
    assert chart_attr(page, "scale") == "log"
    expect(page.get_by_test_id("view-caption")).to_contain_text("colour scale: log")
    expect(page.get_by_test_id("attn-reset-zoom")).to_be_hidden()
    selected = page.get_by_test_id("conversation").get_attribute("data-selected")

    # Drag a rectangle over pooled cells: columns 20..40, rows 60..90.
    with page.expect_request(lambda r: "/api/attention" in r.url and "q_start=" in r.url) as req:
        drag_cells(page, (20, 60), (40, 90))
    url = req.value.url
    q0, q1, k0, k1 = (int(re.search(rf"{k}=(\d+)", url).group(1)) for k in ("q_start", "q_end", "k_start", "k_end"))
    assert (q0, q1, k0, k1) == (60 * pool, min(n, 91 * pool), 20 * pool, 41 * pool)
    wait_rendered(page, "attention")
    expect(chart).to_have_attribute("data-zoom", "1")
    expect(chart).to_have_attribute("data-minimap", "1")
    expect(chart).to_have_attribute("data-window", f"{q0}-{q1}x{k0}-{k1}")
    expect(chart).to_have_attribute("data-pool", "1")  # at full resolution
    expect(page.get_by_test_id("view-caption")).to_contain_text(f"zoom: queries {q0}–{q1 - 1}, keys {k0}–{k1 - 1}")
    expect(page.get_by_test_id("attn-reset-zoom")).to_be_visible()
    # the end of the drag selected nothing
    assert page.get_by_test_id("conversation").get_attribute("data-selected") == selected

    # What is drawn is the model's own attention (mean of heads, layer 0) in that window.
    ref = eager_attention(default_lm, [t["id"] for t in long_run["tokens"]])[0].mean(0)  # (T, T)
    opt = page.evaluate(OPTION_JS)
    heat = next(s for s in opt["series"] if s["id"] == "attention")
    cells = {(int(c[0]), int(c[1])): c[3] for c in heat["data"]}
    assert len(cells) == sum(1 for q in range(q0, q1) for k in range(k0, k1) if k <= q)
    for (x, y), w in list(cells.items())[:: max(1, len(cells) // 400)]:
        assert abs(w - float(ref[q0 + y, k0 + x])) < 2e-5, (q0 + y, k0 + x)
    # The y labels name their positions; the mini-map outlines the window on the whole run.
    first = opt["yAxis"][0]["data"][0]
    assert str(first.get("value") if isinstance(first, dict) else first).startswith(f"{q0}: ")
    assert [s["id"] for s in opt["series"]].count("minimap") == 1
    grid = opt["grid"][1]
    assert grid["width"] == grid["height"] == 84
    ov_block = -(-n // 48)  # the mini-map is the whole run pooled to at most 48 per side
    covered = -(-n // ov_block) * ov_block  # positions its side spans
    elements = opt["graphic"][0]["elements"] if "elements" in opt["graphic"][0] else opt["graphic"]
    mini = next(g for g in elements if g.get("id") == "minimap-window")
    assert abs(mini["shape"]["x"] - (grid["left"] + k0 / covered * 84)) < 0.5
    assert abs(mini["shape"]["y"] - (grid["top"] + q0 / covered * 84)) < 0.5
    assert abs(mini["shape"]["height"] - (q1 - q0) / covered * 84) < 0.5
    assert abs(mini["shape"]["width"] - (k1 - k0) / covered * 84) < 0.5

    # A click (no drag) still selects a query row inside the zoom.
    before = rendered(page)
    box = chart.bounding_box()
    px = page.evaluate(PIXEL_JS, [2, 5])
    page.mouse.click(box["x"] + px[0], box["y"] + px[1])
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-selected", str(q0 + 5))
    wait_rendered(page, "attention", before)
    expect(chart).to_have_attribute("data-zoom", "1")  # the zoom stays

    # Another head keeps the window; Reset zoom goes back to the pooled whole.
    before = rendered(page)
    page.get_by_test_id("head-select").select_option("3")
    wait_rendered(page, "attention", before)
    expect(chart).to_have_attribute("data-window", f"{q0}-{q1}x{k0}-{k1}")
    before = rendered(page)
    page.get_by_test_id("attn-reset-zoom").click()
    wait_rendered(page, "attention", before)
    assert chart_attr(page, "zoom") is None and chart_attr(page, "minimap") is None
    assert int(chart_attr(page, "pool")) == pool
    expect(page.get_by_test_id("attn-reset-zoom")).to_be_hidden()

    # Zoom again, and Escape resets it too.
    drag_cells(page, (5, 10), (30, 40))
    wait_rendered(page, "attention")
    expect(chart).to_have_attribute("data-zoom", "1")
    before = rendered(page)
    page.get_by_test_id("head-select").focus()
    page.keyboard.press("Escape")
    wait_rendered(page, "attention", before)
    assert chart_attr(page, "zoom") is None


def test_a_drag_above_the_diagonal_does_not_zoom(page: Page, long_run):
    open_run(page, long_run)
    before = rendered(page)
    # every key of cells (columns 60..80) x (rows 5..20) comes after every query: nothing to zoom into
    drag_cells(page, (60, 5), (80, 20))
    page.wait_for_timeout(600)
    assert rendered(page) == before
    assert chart_attr(page, "zoom") is None


def test_the_lens_of_a_long_range_scrolls_and_asks_before_the_whole_sequence(page: Page, long_run):
    open_run(page, long_run)
    n = long_run["num_tokens"]
    with page.expect_response(lambda r: "/api/logit_lens" in r.url) as tail:
        page.get_by_test_id("tab-lens").click()
    wait_rendered(page, "lens")
    chart = page.get_by_test_id("chart")
    # The last 64 positions, shown a readable window at a time, with a slider.
    assert chart_attr(page, "columns") == "64"
    visible = int(chart_attr(page, "visible"))
    plot_w = int(chart_attr(page, "plot").split(",")[2])
    assert 16 <= visible < 64 and plot_w / visible >= 12, "every column at least 12 px wide"
    opt = page.evaluate(OPTION_JS)
    slider = next(z for z in opt["dataZoom"] if z["type"] == "slider")
    assert slider["endValue"] - slider["startValue"] + 1 == visible
    expect(page.get_by_test_id("view-caption")).to_contain_text(f"{visible} per screen")
    # Scroll the window; a click on a cell there selects that cell's position, and the window stays.
    page.evaluate("""(s) => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
        .dispatchAction({type: 'dataZoom', dataZoomIndex: 0, startValue: s, endValue: s + %d})""" % (visible - 1), 20)
    start = int(chart_attr(page, "start"))
    box = chart.bounding_box()
    px = page.evaluate("""([x, y]) => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
        .convertToPixel({xAxisIndex: 0, yAxisIndex: 0}, [x, y])""", [25, 10])
    before = rendered(page)
    page.mouse.click(box["x"] + px[0], box["y"] + px[1])
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-selected", str(start + 25))
    wait_rendered(page, "lens", before)
    dz = page.evaluate(OPTION_JS)["dataZoom"][0]
    assert dz["startValue"] == 20, "the window on show is kept while the selection is inside it"

    # The whole sequence: first an estimate from the time measured for the tail (no work started).
    answer = tail.value.json()
    rate = answer["compute_s"] / (answer["end"] - answer["start"])
    assert rate > 0
    started = []
    page.on("request", lambda r: started.append(r.url) if "job_id=" in r.url else None)
    page.get_by_test_id("lens-range").select_option("all")
    overlay = page.locator("#chart-overlay-text")
    expect(overlay).to_contain_text(f"The whole sequence is {n} positions")
    seconds = round(rate * n)
    expected = f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60} s"
    expect(overlay).to_contain_text(f"about {expected}")
    expect(overlay).to_contain_text(f"{rate * 1000:.0f} ms per position")
    button = page.get_by_test_id("lens-compute")
    expect(button).to_be_visible()
    expect(button).to_have_text(f"Compute (~{expected})")
    assert not started, "nothing runs before the user asks"
    expect(page.get_by_test_id("save-png")).to_be_disabled()

    # Compute: a named job with progress, the time left, and Stop.
    with page.expect_request(lambda r: "/api/logit_lens" in r.url and "job_id=" in r.url) as job:
        button.click()
    job_id = re.search(r"job_id=([0-9a-f]+)", job.value.url).group(1)
    loading = page.get_by_test_id("view-loading")
    expect(loading).to_be_visible()
    expect(loading).to_contain_text("left")
    expect(page.get_by_test_id("view-progress")).to_have_text(re.compile(rf"\d+ / {n} positions"))
    with page.expect_request("**/api/cancel") as cancel:
        page.get_by_test_id("view-stop").click()
    assert json.loads(cancel.value.post_data)["run_id"] == job_id
    expect(overlay).to_contain_text("stopped")
    expect(button).to_be_hidden()


def test_segments_of_a_scored_text_explain_themselves_and_entropy_has_a_number(page: Page, long_run):
    open_run(page, long_run)
    page.get_by_test_id("tab-heads").click()
    wait_rendered(page, "heads")
    page.get_by_test_id("heads-mode").select_option("segments")
    overlay = page.locator("#chart-overlay-text")
    expect(overlay).to_contain_text("no generated tokens (a scored text) and 1 segment(s): user")
    expect(page.locator("#chart-overlay")).to_be_visible()
    assert page.evaluate("() => (" + OPTION_JS + ")().series?.length ?? 0") == 0, "no empty chart"
    expect(page.get_by_test_id("save-svg")).to_be_disabled()
    # Entropy: the scored tokens' mean, as a number (the run's own statistics).
    before = rendered(page)
    page.get_by_test_id("tab-entropy").click()
    wait_rendered(page, "entropy", before)
    ents = [t["entropy"] for t in long_run["tokens"] if t["entropy"] is not None]
    expect(page.get_by_test_id("view-caption")).to_contain_text(f"{sum(ents) / len(ents):.3f} nats")
    assert "— nats" not in page.get_by_test_id("view-caption").inner_text()


SVG_TEXTS_JS = """(text) => {
  const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
  const err = doc.querySelector('parsererror');
  const root = doc.documentElement;
  const own = [...root.children].filter((n) => n.tagName === 'text').map((n) => n.textContent);
  const inner = root.querySelector('svg');
  return { error: err ? err.textContent : null, width: +root.getAttribute('width'), height: +root.getAttribute('height'),
           own, innerY: inner ? +inner.getAttribute('y') : null, innerH: inner ? +inner.getAttribute('height') : null };
}"""


def png_size_and_rows(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_saved_charts_carry_title_caption_model_run_and_position(page: Page, long_run, tmp_path):
    open_run(page, long_run)
    caption = page.get_by_test_id("view-caption").inner_text()
    pos = page.get_by_test_id("conversation").get_attribute("data-selected")
    with page.expect_download() as dl:
        page.get_by_test_id("save-svg").click()
    svg = page.evaluate(SVG_TEXTS_JS, Path(dl.value.path()).read_text(encoding="utf-8"))
    assert svg["error"] is None
    assert svg["own"][0] == "llmvis · Attention"
    joined = " ".join(svg["own"][1:])
    assert caption in joined, "the caption, wrapped into lines"
    assert f"SmolLM2-135M-Instruct · run {long_run['run_id']} · position {pos}" in joined
    chart_h = page.get_by_test_id("chart").bounding_box()["height"]
    assert svg["innerY"] > 20 and abs(svg["innerH"] - chart_h) < 2
    assert svg["height"] > svg["innerY"] + svg["innerH"] + 30, "room for the caption below the chart"

    with page.expect_download() as dl:
        page.get_by_test_id("save-png").click()
    data = Path(dl.value.path()).read_bytes()
    width, height = png_size_and_rows(data)
    box = page.get_by_test_id("chart").bounding_box()
    assert abs(width - 2 * box["width"]) <= 2
    assert height >= 2 * (box["height"] + 34 + 30), "a title band above and the caption below"
    # The bands hold drawn text: the PNG decoded in the page has non-background pixels in the title band.
    inked = page.evaluate("""async (b64) => {
        const img = new Image(); img.src = 'data:image/png;base64,' + b64; await img.decode();
        const c = document.createElement('canvas'); c.width = img.width; c.height = 60;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, 60).data; let ink = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 120) ink += 1;
        return ink; }""", __import__("base64").b64encode(data).decode())
    assert inked > 50

    # An empty Diff (one run: nothing to compare) offers no PNG or SVG.
    page.get_by_test_id("tab-diff").click()
    expect(page.locator("#chart-overlay")).to_be_visible()
    expect(page.get_by_test_id("save-png")).to_be_disabled()
    expect(page.get_by_test_id("save-svg")).to_be_disabled()


LABEL_BOXES_JS = """(text) => {
  const holder = document.createElement('div');
  holder.style.cssText = 'position:fixed;left:0;top:0;';
  holder.innerHTML = text;  // our own export, parsed as SVG in this test page
  document.body.append(holder);
  const outer = holder.querySelector('svg');
  const inner = outer.querySelector('svg');
  // the chart's own box (a nested svg's client rect would grow with what overflows it)
  const o = outer.getBoundingClientRect();
  const y = +inner.getAttribute('y');
  const frame = { left: o.left, top: o.top + y, right: o.left + +inner.getAttribute('width'),
                  bottom: o.top + y + +inner.getAttribute('height') };
  const out = [...inner.querySelectorAll('text')].filter((n) => /[←→↑↓↖↗↙↘⟶]/.test(n.textContent))
    .map((n) => { const r = n.getBoundingClientRect();
      return { text: n.textContent, inside: r.left >= frame.left - 0.5 && r.right <= frame.right + 0.5
        && r.top >= frame.top - 0.5 && r.bottom <= frame.bottom + 0.5 }; });
  holder.remove();
  return out;
}"""


def test_projection_outlier_labels_are_drawn_inside_the_chart(page: Page):
    page.get_by_test_id("prompt").fill("Name one colour.")
    page.get_by_test_id("temperature").fill("0")
    page.get_by_test_id("max-new-tokens").fill("8")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("busy")).to_be_hidden(timeout=120_000)
    wait_rendered(page, "attention")
    page.get_by_test_id("tab-projection").click()
    wait_rendered(page, "projection")
    seen = []
    for layer in ("12", "13", "20", "24", "29"):
        before = rendered(page)
        page.get_by_test_id("projection-layer-select").select_option(layer)
        wait_rendered(page, "projection", before)
        if int(page.get_by_test_id("chart").get_attribute("data-off-scale") or 0) == 0:
            continue
        with page.expect_download() as dl:
            page.get_by_test_id("save-svg").click()
        labels = page.evaluate(LABEL_BOXES_JS, Path(dl.value.path()).read_text(encoding="utf-8"))
        assert labels, f"layer {layer}: an outlier label with its arrow"
        for lab in labels:
            assert lab["inside"], f"layer {layer}: {lab['text']!r} is cut by the chart's edge"
            assert "<|im_start|>" in lab["text"]
        seen.append(layer)
    assert len(seen) >= 2, "the first token is far out on several layers of this model"
