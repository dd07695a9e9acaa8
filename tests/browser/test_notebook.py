"""A Trace inline in a notebook, as Jupyter would show it, drawn by real Chromium: the token chips
of `_repr_html_`, and `run.show(view=...)`'s sandboxed viewer with its charts, with no server at all.

Every number a view embeds is checked against the model's own eager forward pass (transformers,
`output_attentions=True, output_hidden_states=True`, hooks on its modules) computed here."""
from __future__ import annotations

import html
import json
import math
import re

import pytest
import torch

import llmvis
from llmvis.core.errors import BadRequest
from llmvis.web.share import share_html

pytestmark = pytest.mark.browser

LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog."] * 30)  # 300 tokens: pooled, windowed
VIEW_SECTIONS = {"tokens": "tokens", "probs": "candidates", "entropy": "confidence", "attention": "attention",
                 "lens": "lens", "heads": "heads", "explain": "explain"}


@pytest.fixture(scope="module")
def run():
    return llmvis.trace("Name a colour.", temperature=0, max_new_tokens=4)


@pytest.fixture(scope="module")
def long_run():
    return llmvis.score(LONG_TEXT)


def viewer_data(inline: str) -> dict:
    """The run data the viewer inside run.show()'s iframe srcdoc reads."""
    srcdoc = html.unescape(re.search(r'srcdoc="([^"]*)"', inline).group(1))
    block = re.search(r'<script type="application/json" id="llmvis-data">(.*?)</script>', srcdoc, re.S).group(1)
    return json.loads(block)


def eager(trace):
    """The model's own forward pass over the run's ids, eager attention, with the inputs of every
    o_proj, the outputs of every MLP and the input of the final norm captured by hooks."""
    model = trace.engine.lm.model
    layers = model.model.layers
    o_in, mlp_out, final = [], [], []
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: o_in.append(a[0][0].double()))
             for layer in layers]
    hooks += [layer.mlp.register_forward_hook(lambda m, a, out: mlp_out.append(out[0].double())) for layer in layers]
    hooks.append(model.model.norm.register_forward_pre_hook(lambda m, a: final.append(a[0][0].double())))
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(torch.tensor([[t["id"] for t in trace.tokens]]), output_attentions=True,
                        output_hidden_states=True)
    finally:
        model.set_attn_implementation(before)
        for h in hooks:
            h.remove()
    return {"model": model, "logits": out.logits[0].double(), "hidden": [h[0] for h in out.hidden_states],
            "attentions": [a[0].double() for a in out.attentions], "o_in": o_in, "mlp_out": mlp_out, "final": final[0]}


# ---- the data each view embeds -----------------------------------------------------------------------
def test_show_lens_embeds_each_layers_top1_for_the_last_128_positions(long_run):
    ref = eager(long_run)
    model, n = ref["model"], long_run.run.num_tokens
    lens = viewer_data(long_run.show("lens").html)["lens"]
    assert n == 300 and (lens["start"], lens["end"], lens["num_layers"]) == (n - 128, n, 30)
    assert len(lens["top1"]) == len(lens["prob"]) == 31 and all(len(r) == 128 for r in lens["top1"] + lens["prob"])
    assert len(lens["ids"]) == len(lens["texts"]) == len(set(lens["ids"]))
    checked = 0
    for layer in range(31):
        h = ref["hidden"][layer][n - 128:]
        with torch.no_grad():  # hidden_states[L] is already after the final norm (transformers 5)
            probs = torch.softmax(model.lm_head(h if layer == 30 else model.model.norm(h)).double(), -1)
        top2 = probs.topk(2, -1)
        for i in range(128):
            assert lens["prob"][layer][i] == pytest.approx(float(top2.values[i, 0]), abs=2e-3), (layer, i)
            if top2.values[i, 0] - top2.values[i, 1] > 1e-3:  # a clear winner: the same token
                assert lens["ids"][lens["top1"][layer][i]] == int(top2.indices[i, 0]), (layer, i)
                checked += 1
    assert checked > 31 * 128 * 0.9
    tok = long_run.engine.lm.tokenizer
    assert lens["texts"][lens["top1"][30][-2]] == tok.decode([lens["ids"][lens["top1"][30][-2]]])


def test_show_heads_embeds_every_heads_entropy_sink_and_previous_token_share(run):
    ref = eager(run)
    n = run.run.num_tokens
    heads = viewer_data(run.show("heads").html)["heads"]
    assert (heads["num_layers"], heads["num_heads"], heads["num_tokens"], heads["query_rows_used"]) == (30, 9, n, n)
    assert heads["kv_group"] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rows = torch.arange(1, n)
    for layer in range(30):
        a = ref["attentions"][layer][:, 1:]  # (H, T-1, T): query rows 1.. (row 0 sees only itself)
        ent = -torch.where(a > 0, a * a.log(), torch.zeros_like(a)).sum(-1).mean(1)
        sink = a[:, :, 0].mean(1)
        prev = a[:, torch.arange(n - 1), rows - 1].mean(1)
        for name, want in (("entropy", ent), ("sink", sink), ("prev", prev)):
            assert heads[name][layer] == pytest.approx(want.tolist(), abs=2e-3), (name, layer)


@pytest.mark.parametrize("offset", [0, 2])
def test_show_explain_embeds_the_logit_attribution_of_one_position(run, offset):
    ref = eager(run)
    model = ref["model"]
    position = run.num_prompt_tokens + offset
    data = viewer_data((run.show("explain") if offset == 0 else run.show("explain", position=position)).html)["explain"]
    q, target = position - 1, run.tokens[position]["id"]
    assert (data["position"], data["query_position"], data["target"]["id"]) == (position, q, target)
    assert data["target"]["text"] == run.tokens[position]["text"]
    assert (data["num_layers"], data["num_heads"]) == (30, 9)
    # Each part read through the final norm at row q's fixed scale: u . (g * c) / rms(resid)
    norm = model.model.norm
    resid = ref["final"][q]
    rms = torch.sqrt(resid.pow(2).mean() + norm.variance_epsilon)
    w = model.lm_head.weight[target].detach().double() * norm.weight.detach().double() / rms
    d = model.config.hidden_size // 9
    tol = dict(abs=3e-3, rel=1e-3)
    for layer, attn in enumerate(model.model.layers):
        o_w = attn.self_attn.o_proj.weight.detach().double()
        for head in range(9):
            part = o_w[:, head * d:(head + 1) * d] @ ref["o_in"][layer][q, head * d:(head + 1) * d]
            assert data["heads"][layer][head] == pytest.approx(float(w @ part), **tol), (layer, head)
        assert data["mlp"][layer] == pytest.approx(float(w @ ref["mlp_out"][layer][q]), **tol), layer
        assert data["o_bias"][layer] == 0  # Llama's o_proj has no bias
    assert data["embedding"] == pytest.approx(float(w @ ref["hidden"][0][q].double()), **tol)
    # complete: the parts add up to the model's own logit of the token
    logit = float(ref["logits"][q, target])
    assert data["logit"] == pytest.approx(logit, abs=2e-3)
    parts = data["embedding"] + sum(map(sum, data["heads"])) + sum(data["mlp"]) + sum(data["o_bias"])
    assert parts == pytest.approx(logit, abs=2e-2) and data["total"] == pytest.approx(parts, abs=1e-4)


def test_show_refuses_unknown_views_and_bad_positions(run):
    n = run.run.num_tokens
    cases = [(dict(view="nope"), "view"), (dict(view=["lens"]), "view"), (dict(view="lens", position=3), "position"),
             (dict(view="explain", position=0), "position"), (dict(view="explain", position=n), "position"),
             (dict(view="explain", position=True), "position"), (dict(view="explain", position="2"), "position"),
             (dict(view="heads", height=10), "height")]
    for kwargs, field in cases:
        with pytest.raises(BadRequest) as err:
            run.show(**kwargs)
        assert str(err.value).startswith(field), (kwargs, str(err.value))
    with pytest.raises(BadRequest, match="views"):
        share_html(run.engine, run.run, views=["bogus"])
    # the views the viewer shows for every run leave the extra data out (it costs a pass over the layers)
    plain = viewer_data(run.show("attention").html)
    assert not {"lens", "heads", "explain"} & set(plain)


# ---- drawn in Chromium -------------------------------------------------------------------------------
def _open(browser, inline: str, width: int = 1280):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_content(f"<html><body style='margin: 0'>{inline}</body></html>")
    page.frame_locator("iframe.llmvis-view").locator("body[data-ready='true']").wait_for(timeout=60_000)
    return page, page.main_frame.child_frames[0], errors


def test_inline_views_draw_without_a_server(browser, run):
    page = browser.new_page()
    try:
        page.set_content(f"<html><body>{run._repr_html_()}{run.show('attention', layers=[0, 29]).html}</body></html>")
        assert page.locator(".llmvis-tok").count() == len(run.tokens)
        frame = page.frame_locator("iframe.llmvis-view")
        frame.locator("body[data-ready='true']").wait_for(timeout=60_000)
        assert frame.locator("#attention canvas, #attention svg").count() >= 1  # ECharts drew inside the sandbox
        assert frame.locator(".chip, [class*='tok']").count() >= len(run.tokens)
    finally:
        page.close()


CELLS_JS = """(id) => {
  const box = document.querySelector(`#${id} .chart`);
  const chart = box && echarts.getInstanceByDom(box);
  const sec = document.getElementById(id).getBoundingClientRect();
  if (!chart) return { cells: null, top: sec.top };
  const series = chart.getOption().series;
  return { cells: series.reduce((n, s) => n + s.data.length, 0), canvas: box.querySelectorAll('canvas').length,
           type: series[0].type, top: sec.top, scrolled: window.scrollY };
}"""


@pytest.mark.parametrize("view", list(VIEW_SECTIONS))
def test_each_view_opens_drawn_and_scrolled_to(browser, run, view):
    n = run.run.num_tokens
    expected = {"tokens": None, "probs": 10, "entropy": 2 * n, "attention": n * (n + 1) // 2,
                "lens": 31 * n, "heads": 30 * 9, "explain": 30 * 10}[view]
    page, frame, errors = _open(browser, run.show(view).html)
    try:
        section = VIEW_SECTIONS[view]
        got = frame.evaluate(CELLS_JS, section)
        if view == "tokens":
            assert frame.locator("#tokens .chip").count() == n and got["top"] < 40
        else:
            assert got["canvas"] >= 1 and got["cells"] == expected, got  # every cell of the data is drawn
            assert -5 < got["top"] < 40, got  # opened scrolled to the view
        if view in ("lens", "heads", "explain"):
            assert got["type"] == "heatmap" and got["scrolled"] > 0
        assert not errors
    finally:
        page.close()


def test_the_heads_view_switches_its_metric(browser, run):
    heads = viewer_data(run.show("heads").html)["heads"]
    page, frame, errors = _open(browser, run.show("heads").html)
    try:
        read = "() => echarts.getInstanceByDom(document.querySelector('#heads .chart')).getOption().series[0].data[0][2]"
        assert frame.evaluate(read) == heads["entropy"][0][0]
        frame.select_option("#heads select", "sink")
        assert frame.evaluate(read) == heads["sink"][0][0]
        assert not errors
    finally:
        page.close()


GRID_JS = """() => {
  const chart = echarts.getInstanceByDom(document.querySelector('#attention .chart'));
  const r = chart.getModel().getComponent('grid').coordinateSystem.getRect();
  const names = {};
  const left = [];
  const below = [];
  chart.getZr().storage.getDisplayList().forEach((el) => {
    const text = el.style && el.style.text;
    if (typeof text !== 'string' || !text) return;
    const b = el.getBoundingRect().clone();
    b.applyTransform(el.getComputedTransform());
    const box = { x: b.x, y: b.y, w: b.width, h: b.height };
    if (text === 'query' || text === 'key') names[text] = box;
    else if (box.x + box.w <= r.x + 1) left.push(box);
    else if (box.y >= r.y + r.height - 1) below.push(box);
  });
  return { grid: { x: r.x, y: r.y, w: r.width, h: r.height }, names, left, below };
}"""


@pytest.mark.parametrize("width", [1280, 760])
@pytest.mark.parametrize("which", ["short", "long"])
def test_the_attention_heatmap_is_square_with_its_axis_names_beside_the_axes(browser, run, long_run, which, width):
    trace = run if which == "short" else long_run
    page, frame, errors = _open(browser, trace.show("attention").html, width)
    try:
        m = frame.evaluate(GRID_JS)
        g, q, k = m["grid"], m["names"]["query"], m["names"]["key"]
        assert g["w"] > 300 and abs(g["w"] / g["h"] - 1) < 0.01, m["grid"]  # square, whatever the run's length
        assert m["left"] and m["below"]  # the axis labels, to measure against
        # "query": left of the y-axis labels, centred on the grid's height
        assert q["x"] >= 0 and q["x"] + q["w"] <= min(b["x"] for b in m["left"]), (q, m["left"][:3])
        assert abs(q["y"] + q["h"] / 2 - (g["y"] + g["h"] / 2)) < 0.05 * g["h"], (q, g)
        # "key": below the rotated x-axis labels, centred on the grid's width
        assert k["y"] >= max(b["y"] + b["h"] for b in m["below"]) - 1, (k, m["below"][:3])
        assert abs(k["x"] + k["w"] / 2 - (g["x"] + g["w"] / 2)) < 0.05 * g["w"], (k, g)
        box = frame.evaluate("() => document.querySelector('#attention .chart').getBoundingClientRect().height")
        assert box >= g["y"] + g["h"]  # the box holds the whole grid
        assert not errors
    finally:
        page.close()
