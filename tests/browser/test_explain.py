"""The Explain tab (issue 14) in real headless Chromium against the real server and default model
(SmolLM2-135M: 30 layers, 9 query heads in 3 KV groups): logit attribution with a contrast,
a head opening its attention row, integrated gradients with progress and Stop, the
information-flow graph, "why this and not that?" from Probabilities, exports and a bad state.

Set LLMVIS_SCREENSHOTS=1 to also write docs/screenshots/explain-{logit,inputs,flow}.png (1280x800).
"""
from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest
from playwright.sync_api import Page, expect

from conftest import ROOT
from test_page import generate, rendered
from test_page_layout import save_svg

pytestmark = pytest.mark.browser

OPTION_JS = """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]')).getOption()"""
L, HQ = 30, 9
DOCS = os.environ.get("LLMVIS_SCREENSHOTS") == "1"


def api_get(page: Page, path: str, **params) -> dict:
    """A GET of the server's API from the test, not through the page."""
    url = f"{page.base_url}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=300) as resp:
        return json.load(resp)


def wait_explain(page: Page, before: str, extra: str = "true") -> None:
    """Wait for a finished Explain render newer than `before` whose chart has data-<key>
    (extra "key") or data-<key>="value" (extra "key=value"); "true": no condition."""
    page.wait_for_function(
        """([before, key, value]) => {
            const c = document.querySelector('[data-testid="chart"]');
            const r = c.dataset.rendered || '';
            if (!(r.startsWith('explain:') && r !== before)) return false;
            if (!document.querySelector('[data-testid="view-loading"]').hidden) return false;
            return key === '' || (value === '' ? c.hasAttribute('data-' + key) : c.getAttribute('data-' + key) === value);
        }""",
        arg=[before, *extra_args(extra)],
        timeout=180_000,
    )


def extra_args(extra: str) -> list[str]:
    """'key' or 'key=value' → [key, value]; 'true' → no condition."""
    if extra == "true":
        return ["", ""]
    key, _, value = extra.partition("=")
    return [key, value]


def click_chart_at(page: Page, x: float, y: float) -> None:
    box = page.get_by_test_id("chart").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)


def pick_generated(page: Page, k: int = 2) -> int:
    """Click the k-th generated token (or the last one); return its position."""
    gen = page.locator("[data-testid='token'][data-source='generated']")
    chip = gen.nth(min(k, gen.count() - 1))
    pos = int(chip.get_attribute("data-position"))
    chip.click()
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-selected", str(pos))
    return pos


def open_explain(page: Page, extra: str = "true") -> None:
    before = rendered(page)
    page.get_by_test_id("tab-explain").click()
    wait_explain(page, before, extra)


def switch_mode(page: Page, mode: str, extra: str) -> None:
    before = rendered(page)
    page.get_by_test_id(f"explain-mode-{mode}").click()
    wait_explain(page, before, extra)


def shoot(page: Page, name: str) -> None:
    if DOCS:
        out = ROOT / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / name))


@pytest.fixture()
def small_page(page: Page) -> Page:
    page.set_viewport_size({"width": 1280, "height": 800})
    return page


def test_logit_attribution_with_the_runner_up_and_a_head_click(small_page: Page):
    page = small_page
    generate(page, "Name one colour.", max_new_tokens=6)
    pos = pick_generated(page)
    run_id = page.get_by_test_id("conversation").get_attribute("data-run-id")
    open_explain(page, "target-id")
    chart = page.get_by_test_id("chart")
    probs = api_get(page, "/api/token_probs", run_id=run_id, position=pos, top_n=20)
    token = probs["token"]
    assert chart.get_attribute("data-position") == str(pos)
    assert chart.get_attribute("data-target-id") == str(token["id"]), "the explained token is the selected one"
    assert chart.get_attribute("data-contrast-id") == ""
    caption = page.get_by_test_id("view-caption").inner_text()
    shown = token["text"].replace(" ", "·").replace("\n", "↵")
    assert f"“{shown}" in caption, f"the caption names the target: {caption}"
    assert "held fixed" in caption and "sum of the parts" in caption
    assert "soft-cap" not in caption, "SmolLM2 has no final soft-cap"
    logit = float(chart.get_attribute("data-logit"))
    assert abs(float(chart.get_attribute("data-total")) - logit) < 1e-3, "the parts sum to the logit"

    # What is drawn: a 30 x (9 heads + MLP) heatmap on a scale centred on 0, and 12 signed bars.
    opt = page.evaluate(OPTION_JS)
    heat, bars = opt["series"][0], opt["series"][1]
    assert heat["type"] == "heatmap" and len(heat["data"]) == L * (HQ + 1)
    assert opt["xAxis"][0]["data"] == [f"h{h}" for h in range(HQ)] + ["MLP"], "heads in KV-group order, then the MLP"
    vm = opt["visualMap"][0]
    assert vm["min"] == -vm["max"] > -math.inf
    answer = api_get(page, "/api/explain/logit", run_id=run_id, position=pos)
    parts = [answer["embedding"], answer.get("lm_bias", 0.0), *[v for row in answer["heads"] for v in row],
             *answer["o_bias"], *answer["mlp"]]
    assert abs(sum(parts) - answer["logit"]) < 1e-3, "the answer the page drew sums to its logit (independent sum)"
    top12 = sorted((p for p in parts if p != 0), key=abs, reverse=True)[:12]
    drawn = [d["value"] for d in bars["data"]]
    assert [round(v, 5) for v in drawn] == [round(v, 5) for v in top12], "the 12 largest |parts|, signs kept"

    # The runner-up, one click away: a logit difference, and its numbers change.
    ru = page.get_by_test_id("explain-runner-up")
    ru_id = int(ru.get_attribute("data-token-id"))
    expected_ru = next(c for c in probs["candidates"] if c["id"] != token["id"])
    assert ru_id == expected_ru["id"]
    before = rendered(page)
    ru.click()
    wait_explain(page, before, f"contrast-id={ru_id}")
    expect(page.get_by_test_id("explain-contrast")).to_have_value(str(ru_id))
    diff = float(chart.get_attribute("data-logit"))
    assert diff != logit
    other = api_get(page, "/api/explain/logit", run_id=run_id, position=pos, target=ru_id)
    assert abs(diff - (logit - other["logit"])) < 1e-3, "logit(target) − logit(runner-up)"
    assert "− logit of" in page.get_by_test_id("view-caption").inner_text()
    shoot(page, "explain-logit.png")

    # PNG and SVG of this sub-view.
    with page.expect_download() as dl:
        page.get_by_test_id("save-png").click()
    assert dl.value.suggested_filename == f"llmvis-explain-logit-pos{pos}-vs{ru_id}.png"
    check = save_svg(page)
    assert check["error"] is None, f"the SVG is not XML: {check['error']}"
    assert check["loaded"] and check["width"] > 0

    # A click on a head cell opens that head's attention row for the query row (pos - 1).
    opt = page.evaluate(OPTION_JS)
    cell = next(c for c in opt["series"][0]["data"] if c[3] == 4 and c[1] == 12)
    px, py = page.evaluate(
        """(cell) => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
               .convertToPixel({gridIndex: 0}, [cell[0], cell[1]])""",
        cell,
    )
    click_chart_at(page, px, py)
    page.wait_for_function(
        """() => (document.querySelector('[data-testid="chart"]').dataset.rendered || '').startsWith('heads:')"""
    )
    expect(page.get_by_test_id("heads-mode")).to_have_value("row")
    expect(page.get_by_test_id("row-head")).to_have_value("4")
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-selected", str(pos - 1))


@pytest.fixture(scope="module")
def run_id(server) -> str:
    """A short greedy run made through the API (the page opens it with ?run=)."""
    body = json.dumps({"prompt": "Name one colour.", "max_new_tokens": 6, "temperature": 0}).encode()
    req = urllib.request.Request(f"{server}/api/generate", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.load(resp)["run_id"]


def open_run(page: Page, run_id: str) -> None:
    page.goto(f"{page.base_url}/?run={run_id}")
    page.wait_for_selector("body[data-ready='true']")
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-run-id", run_id)


def test_integrated_gradients_progress_stop_and_shaded_chips(small_page: Page, run_id: str):
    page = small_page
    open_run(page, run_id)
    pos = pick_generated(page)
    open_explain(page, "target-id")
    switch_mode(page, "inputs", "method=grad_x_input")
    conv = page.get_by_test_id("conversation")
    expect(conv).to_have_attribute("data-explain-shaded", "grad_x_input")
    scored = page.locator("#conversation [data-testid='token'][data-xp]")
    assert scored.count() == pos, "the chips of the context 0..pos-1 are shaded, and only those"
    expect(page.get_by_test_id("explain-legend")).to_contain_text("raises")
    answer = api_get(page, "/api/explain/inputs", run_id=run_id, position=pos, method="grad_x_input")
    xp = [float(v) for v in scored.evaluate_all("els => els.map((e) => e.dataset.xp)")]
    assert all(abs(a - b) < 1e-4 for a, b in zip(xp, answer["scores"])), "each chip carries its token's score"
    top = max(range(pos), key=lambda j: abs(answer["scores"][j]))
    assert page.get_by_test_id("chart").get_attribute("data-top-position") == str(top)

    # Integrated gradients, 8 steps: the job's progress shows, then the completeness gap.
    page.get_by_test_id("explain-method").select_option("integrated_gradients")
    steps = page.get_by_test_id("explain-steps")
    expect(steps).to_be_visible()
    before = rendered(page)
    steps.fill("8")
    steps.press("Enter")
    expect(page.get_by_test_id("view-loading")).to_contain_text("gradient passes", timeout=120_000)
    wait_explain(page, before, "method=integrated_gradients")
    caption = page.get_by_test_id("view-caption").inner_text()
    assert "completeness" in caption and "(8 steps)" in caption
    ig = api_get(page, "/api/explain/inputs", run_id=run_id, position=pos, method="integrated_gradients", steps=8)
    assert abs(sum(ig["scores"]) - ig["completeness"]["sum"]) < 1e-3, "Σ scores is the completeness sum"
    gap = ig["completeness"]["gap"]
    shown_gap = f"{gap:.4f}" if gap >= 1e-4 else f"{gap:.1e}".replace("e-0", "e-")  # JS toFixed / toExponential
    assert f"gap {shown_gap}" in caption, f"the caption reports the gap: {caption}"
    expect(conv).to_have_attribute("data-explain-shaded", "integrated_gradients")
    shoot(page, "explain-inputs.png")
    with page.expect_download() as dl:
        page.get_by_test_id("save-png").click()
    assert dl.value.suggested_filename == f"llmvis-explain-inputs-integrated_gradients-pos{pos}.png"
    check = save_svg(page)
    assert check["error"] is None and check["loaded"], f"the inputs SVG: {check['error']}"

    # A slow job (128 steps) is stopped with Stop; the server is free again afterwards.
    steps.fill("128")
    steps.press("Enter")
    stop = page.get_by_test_id("view-stop")
    expect(stop).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("view-loading")).to_contain_text("/ 128", timeout=120_000)
    stop.click()
    expect(page.locator("#chart-overlay")).to_be_visible()
    expect(page.locator("#chart-overlay-text")).to_contain_text("stopped")
    expect(conv).not_to_have_attribute("data-explain-shaded", "integrated_gradients")
    fast = api_get(page, "/api/explain/inputs", run_id=run_id, position=pos, method="value_norm")
    assert len(fast["scores"]) == pos
    # Leaving the sub-view clears the shading.
    page.get_by_test_id("explain-method").select_option("value_norm")
    wait_explain(page, "", "method=value_norm")
    expect(conv).to_have_attribute("data-explain-shaded", "value_norm")
    page.get_by_test_id("tab-attention").click()
    expect(conv).not_to_have_attribute("data-explain-shaded", "value_norm")
    assert page.locator("#conversation [data-xp]").count() == 0


def test_information_flow_graph_threshold_and_edge_click(small_page: Page, run_id: str):
    page = small_page
    open_run(page, run_id)
    pos = pick_generated(page)
    open_explain(page, "target-id")
    switch_mode(page, "flow", "nodes")
    opt = page.evaluate(OPTION_JS)
    graph = opt["series"][0]
    assert graph["type"] == "graph" and graph["coordinateSystem"] == "cartesian2d"
    nodes, links = graph["data"], graph["links"]
    assert nodes and links
    top = [n for n in nodes if n["layer"] == L]
    assert [n["position"] for n in top] == [pos - 1], "the graph ends at the query row"
    assert all(lk["weight"] >= 0.1 - 1e-9 for lk in links)
    colours = {lk["kind"]: lk["lineStyle"]["color"] for lk in links}
    assert len(set(colours.values())) == len(colours), "one colour per kind"
    answer = api_get(page, "/api/explain/flow", run_id=run_id, position=pos, threshold=0.1)
    assert len(nodes) == len(answer["nodes"]) and len(links) == len(answer["edges"])
    n_edges = len(links)
    shoot(page, "explain-flow.png")

    # A click on an attention edge names its head and weight.
    edge = max((lk for lk in links if lk["kind"] == "attention" and lk["from"][1] != lk["to"][1]),
               key=lambda lk: lk["weight"])
    a = nodes[edge["source"]]["value"]
    b = nodes[edge["target"]]["value"]
    px, py = page.evaluate(
        """([a, b]) => {
            const ch = echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'));
            const p = ch.convertToPixel({gridIndex: 0}, a), q = ch.convertToPixel({gridIndex: 0}, b);
            return [p[0] + (q[0] - p[0]) * 0.4, p[1] + (q[1] - p[1]) * 0.4];
        }""",
        [a, b],
    )
    click_chart_at(page, px, py)
    info = page.get_by_test_id("explain-info")
    expect(info).to_contain_text("weight")
    if info.get_attribute("data-kind") == "attention":
        assert info.get_attribute("data-head") != ""
        expect(info).to_contain_text("head")

    # The threshold slider refetches: a higher threshold keeps fewer edges.
    before = rendered(page)
    page.get_by_test_id("explain-threshold").evaluate(
        "(el) => { el.value = '0.3'; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }"
    )
    wait_explain(page, before, "threshold=0.3")
    expect(page.get_by_test_id("explain-threshold-value")).to_have_text("0.30")
    fewer = int(page.get_by_test_id("chart").get_attribute("data-edges"))
    assert fewer < n_edges
    check = save_svg(page)
    assert check["error"] is None and check["loaded"]


def test_why_not_from_probabilities_and_position_zero(small_page: Page, run_id: str):
    page = small_page
    open_run(page, run_id)
    pos = pick_generated(page)
    before = rendered(page)
    page.get_by_test_id("tab-probs").click()
    page.wait_for_function(
        """(before) => { const r = document.querySelector('[data-testid="chart"]').dataset.rendered || '';
                         return r.startsWith('probs:') && r !== before; }""",
        arg=before,
    )
    why = page.get_by_test_id("why-not-select")
    expect(why).to_be_enabled()
    options = why.locator("option")
    assert options.count() >= 2
    pick = options.nth(1).get_attribute("value")
    why.select_option(pick)
    before = rendered(page)
    page.get_by_test_id("why-not").click()
    wait_explain(page, before, f"contrast-id={pick}")
    expect(page.get_by_test_id("tab-explain")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("explain-contrast")).to_have_value(pick)
    assert page.get_by_test_id("chart").get_attribute("data-position") == str(pos)

    # Chinese: the tab, the controls and the caption.
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("tab-explain")).to_have_text("解释")
    expect(page.get_by_test_id("explain-mode-flow")).to_have_text("信息流")
    expect(page.get_by_test_id("view-caption")).to_contain_text("保持固定")
    page.get_by_test_id("lang-toggle").click()

    # Position 0 has nothing before it: a clear message, not a broken chart.
    page.locator("[data-testid='token'][data-position='0']").click()
    expect(page.locator("#chart-overlay")).to_be_visible()
    expect(page.locator("#chart-overlay-text")).to_contain_text("Position 0 has nothing before it")
    expect(page.get_by_test_id("error")).to_be_empty()
    # ...and the API answers that position with the usual 400.
    req = urllib.request.Request(f"{page.base_url}/api/explain/logit?run_id={run_id}&position=0")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 400
    body = json.loads(err.value.read())
    assert body["status"] == 400 and "position" in body["error"]


def test_token_text_stays_text_in_explain(small_page: Page, server):
    """A prompt full of markup: chips, selects and the caption show it as text; nothing runs."""
    page = small_page
    generate(page, 'Say <img src=x onerror="window.__pwned=1"> <b>bold</b>', max_new_tokens=3)
    pick_generated(page, 0)
    open_explain(page, "target-id")
    switch_mode(page, "inputs", "method=grad_x_input")
    page.get_by_test_id("explain-target").locator("option").first.wait_for(state="attached")
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("#conversation img, .view-toolbar img, [data-testid='view-caption'] img").count() == 0
    chips = page.locator("#conversation [data-testid='token'][data-xp]")
    texts = "".join(chips.evaluate_all("els => els.map((e) => e.textContent)"))
    assert "onerror=" in texts and "<" in texts, "the markup is in the shaded chips, as text"
    # the caption and the selects are text too
    assert page.get_by_test_id("view-caption").evaluate("(el) => el.children.length") == 0


def test_steer_along_the_explained_direction(small_page: Page, run_id: str):
    """"Steer along this" hands the logit answer's readout direction to the Steer tab, whose run
    adds exactly those numbers (the steering answer echoes the vector it added)."""
    page = small_page
    open_run(page, run_id)
    pos = pick_generated(page, 1)
    open_explain(page, "target-id")
    button = page.get_by_test_id("explain-steer")
    expect(button).to_be_enabled()
    want = api_get(page, "/api/explain/logit", run_id=run_id, position=pos)["direction"]
    button.click()
    expect(page.get_by_test_id("tab-steer")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("steer-source")).to_have_value("direction")
    shown = [float(v) for v in page.get_by_test_id("steer-direction").input_value().split()]
    assert shown == want and len(shown) == 576
    page.get_by_test_id("steer-alphas").fill("2")
    with page.expect_response(lambda r: r.url.endswith("/api/intervene/steer"), timeout=300_000) as resp:
        page.get_by_test_id("steer-start").click()
    answer = resp.value.json()
    assert resp.value.status == 200, answer
    body = json.loads(resp.value.request.post_data)
    assert body["vector"]["source"] == "raw" and body["vector"]["values"] == want


def test_shift_click_on_a_head_picks_it_for_ablation(small_page: Page, run_id: str):
    """Heads are chosen for ablation in the Heads grid or, with Shift, in the Explain view."""
    page = small_page
    open_run(page, run_id)
    pick_generated(page, 1)
    open_explain(page, "target-id")
    opt = page.evaluate(OPTION_JS)
    cell = next(c for c in opt["series"][0]["data"] if c[3] == 4 and c[1] == 12)  # layer 12, head 4
    px, py = page.evaluate(
        """(cell) => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
               .convertToPixel({gridIndex: 0}, [cell[0], cell[1]])""",
        cell,
    )
    box = page.get_by_test_id("chart").bounding_box()
    page.keyboard.down("Shift")
    page.mouse.click(box["x"] + px, box["y"] + py)
    page.keyboard.up("Shift")
    expect(page.get_by_test_id("explain-info")).to_have_attribute("data-picked", "1")
    expect(page.get_by_test_id("explain-info")).to_contain_text("L12")
    expect(page.get_by_test_id("tab-explain")).to_have_attribute("aria-selected", "true")  # it stays here
    page.get_by_test_id("tab-heads").click()
    expect(page.get_by_test_id("ablate-heads-list")).to_contain_text("L12")
    expect(page.get_by_test_id("ablate-count")).to_contain_text("1")
