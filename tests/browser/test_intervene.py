"""Interventions in the page (issue 15), in real headless Chromium against the real server and
the default model (SmolLM2-135M: 30 layers, 9 query heads in 3 KV groups): heads picked in the
Heads grid and ablated into a linked run with its Effect chart; an activation-patching heatmap
with progress; the token-count guard; steering with a small alpha sweep; SVG export."""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from test_insights import OPTION_JS, click_cell, open_tab
from test_page import generate, rendered, wait_rendered

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "screenshots"
CLEAN = "The Eiffel Tower is in"
CORRUPTED = "The Colosseum is in"


def doc_shot(page: Page, name: str, screenshot_dir: Path) -> None:
    """A 1280x800 screenshot of the page; also into docs/screenshots with LLMVIS_DOC_SCREENSHOTS=1."""
    page.screenshot(path=str(screenshot_dir / name))
    if os.environ.get("LLMVIS_DOC_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS / name))


def svg_export_parses(page: Page, tmp_path: Path, view: str) -> ET.Element:
    with page.expect_download() as dl:
        page.get_by_test_id("save-svg").click()
    assert dl.value.suggested_filename.startswith(f"llmvis-{view}-"), dl.value.suggested_filename
    path = tmp_path / f"{view}.svg"
    dl.value.save_as(path)
    root = ET.fromstring(path.read_text(encoding="utf-8"))  # raises on anything but well-formed XML
    assert root.tag.endswith("svg")
    return root


def test_pick_two_heads_ablate_and_see_the_effect(page: Page, screenshot_dir, tmp_path):
    page.set_viewport_size({"width": 1280, "height": 800})
    generate(page, "Count: one, two, three,", max_new_tokens=6)
    parent = page.get_by_test_id("conversation").get_attribute("data-run-id")
    n_tokens = page.get_by_test_id("token").count()
    open_tab(page, "heads")
    chart = page.get_by_test_id("chart")
    bar = page.get_by_test_id("ablate-bar")
    expect(bar).to_be_visible()
    expect(page.get_by_test_id("ablate")).to_be_disabled()  # nothing picked yet

    # Picking: a click toggles one head, shift-click the whole KV group (heads 6, 7, 8 read kv 2).
    page.get_by_test_id("ablate-pick").click()
    expect(page.get_by_test_id("ablate-pick")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("view-caption")).to_contain_text("picking heads: a click toggles a head")
    before = rendered(page)
    click_cell(page, 0, 3, 2)  # head 3, layer 2
    before = wait_rendered(page, "heads", before)
    click_cell(page, 0, 4, 2)  # head 4, layer 2
    wait_rendered(page, "heads", before)
    expect(page.get_by_test_id("ablate-count")).to_have_attribute("data-count", "2")
    expect(page.get_by_test_id("ablate-count")).to_have_text("2 heads picked")
    expect(page.get_by_test_id("ablate-heads-list")).to_have_text("L2.h3, L2.h4")
    expect(chart).to_have_attribute("data-ablate-selected", "2")
    expect(page.get_by_test_id("tab-heads")).to_have_attribute("aria-selected", "true")  # not sent to Attention
    opt = page.evaluate(OPTION_JS)
    overlay = next(s for s in opt["series"] if s["id"] == "ablate-selected")
    assert sorted(overlay["data"]) == [[3, 2], [4, 2]]

    # shift-click on head 7 of layer 5 picks 6, 7, 8; shift-click again drops them
    before = rendered(page)
    page.keyboard.down("Shift")
    click_cell(page, 0, 7, 5)
    page.keyboard.up("Shift")
    before = wait_rendered(page, "heads", before)
    expect(page.get_by_test_id("ablate-count")).to_have_attribute("data-count", "5")
    page.keyboard.down("Shift")
    click_cell(page, 0, 6, 5)
    page.keyboard.up("Shift")
    wait_rendered(page, "heads", before)
    expect(page.get_by_test_id("ablate-count")).to_have_attribute("data-count", "2")
    page.screenshot(path=str(screenshot_dir / "intervene-ablate-pick.png"))

    # Ablate: a linked run of kind intervention appears in the branch tree, the Effect tab opens.
    before = rendered(page)
    with page.expect_response(lambda r: r.url.endswith("/api/intervene/ablate")) as resp:
        page.get_by_test_id("ablate").click()
    answer = resp.value.json()
    assert resp.value.status == 200, answer
    child = answer["run"]["run_id"]
    assert answer["run"]["kind"] == "intervention" and answer["run"]["parent_id"] == parent
    assert answer["run"]["intervention"]["targets"] == [
        {"kind": "head", "layer": 2, "head": 3}, {"kind": "head", "layer": 2, "head": 4}]
    wait_rendered(page, "effect", before)
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-run-id", child)
    tree = page.get_by_test_id("fork-tree")
    expect(tree).to_be_visible()
    expect(tree.locator(f"[data-testid='branch'][data-run-id='{child}']")).to_contain_text("L2.h3, L2.h4")
    expect(tree.locator(f"[data-testid='branch'][data-run-id='{parent}']")).to_be_visible()
    expect(page.get_by_test_id("tab-effect")).to_have_attribute("aria-selected", "true")

    # The effect chart: one Δ bar and one KL point per position of the answer, checked against it.
    positions = answer["effects"]["positions"]
    expect(chart).to_have_attribute("data-alignment", "position")
    expect(chart).to_have_attribute("data-points", str(len(positions)))
    assert len(positions) == n_tokens - 1
    opt = page.evaluate(OPTION_JS)
    series = {s["id"]: s for s in opt["series"]}
    bars = [d["value"] for d in series["delta"]["data"]]
    for (pos, delta), row in zip(bars, positions):
        assert pos == row["position"]
        # independent: Δ = ln p(intervened) - ln p(parent) of the same token
        assert math.isclose(delta, row["logprob_intervened"] - row["logprob_parent"], abs_tol=1e-5)
    measured = [r["kl"] for r in positions if not r["kl_floored"]]
    mean_kl = sum(measured) / len(measured)
    caption = page.get_by_test_id("view-caption")
    expect(caption).to_contain_text("aligned by position")
    expect(caption).to_contain_text(f"mean KL {mean_kl:.3f} nats over {len(measured)} measured positions")
    assert max(measured) > 0, "ablating two heads changes something"
    # the most affected positions: a click selects that token of the run on show
    top = page.get_by_test_id("effect-pos")
    expect(top.first).to_be_visible()
    first = int(top.first.get_attribute("data-position"))
    assert first == max(positions, key=lambda r: (r["kl_floored"], r["kl"]))["position"]
    top.nth(1).click()
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-selected", top.nth(1).get_attribute("data-position"))
    doc_shot(page, "intervene-ablate.png", screenshot_dir)
    svg_export_parses(page, tmp_path, "effect")

    # The Diff tab compares the same pair: parent (A) and the intervention run (B).
    page.get_by_test_id("tab-diff").click()
    wait_rendered(page, "diff")
    expect(chart).to_have_attribute("data-run-a", parent)
    expect(chart).to_have_attribute("data-run-b", child)
    expect(page.get_by_test_id("view-caption")).to_contain_text("aligned by position")
    # a floored KL (here the greedy sampling distributions where the argmax moved) is a marker, not a point
    diff = page.request.get(f"{page.base_url}/api/diff?run_a={parent}&run_b={child}").json()
    opt = page.evaluate(OPTION_JS)
    series = {s["id"]: s for s in opt["series"]}
    for key, sid in (("kl_sampling", "kl-sampling"), ("kl_raw", "kl-raw")):
        floored = {r["position"] for r in diff["kl"] if r[f"{key}_floored"]}
        marks = {m["coord"][0] for m in (series[sid].get("markPoint") or {}).get("data", [])}
        assert marks == floored, (key, marks, floored)
        drawn = {p for p, v in series[sid]["data"] if v is not None}
        assert not drawn & floored, "no floored value is drawn as a measurement"

    # A fresh page that opens the intervention run from the history (?run=) fetches its effects.
    other = page.context.new_page()
    other.goto(f"{page.base_url}/?run={child}")
    other.wait_for_selector("body[data-ready='true']")
    expect(other.get_by_test_id("conversation")).to_have_attribute("data-run-id", child)
    with other.expect_response(lambda r: "/api/intervene/effects" in r.url) as fetched:
        other.get_by_test_id("tab-effect").click()
    assert fetched.value.status == 200 and len(fetched.value.json()["positions"]) == len(positions)
    expect(other.get_by_test_id("chart")).to_have_attribute("data-points", str(len(positions)))
    expect(other.get_by_test_id("fork-tree")).to_contain_text("L2.h3, L2.h4")
    other.close()


def test_free_running_ablation_is_aligned_by_edit_distance(page: Page):
    generate(page, "Count: one, two, three,", max_new_tokens=8)
    open_tab(page, "heads")
    page.get_by_test_id("ablate-target").select_option("attention")
    page.get_by_test_id("ablate-layer").select_option("0")
    page.get_by_test_id("ablate-free").check()
    before = rendered(page)
    with page.expect_response(lambda r: r.url.endswith("/api/intervene/ablate")) as resp:
        page.get_by_test_id("ablate").click()
    answer = resp.value.json()
    assert answer["run"]["intervention"]["free"] is True
    assert answer["run"]["intervention"]["targets"] == [{"kind": "attention", "layer": 0}]
    wait_rendered(page, "effect", before)
    align = answer["effects"]["align"]
    expect(page.get_by_test_id("chart")).to_have_attribute("data-alignment", align)
    words = {"edit": "token edit distance", "position": "position"}[align]
    expect(page.get_by_test_id("view-caption")).to_contain_text(f"aligned by {words}")
    floored = [p for p in answer["effects"]["positions"] if p["kl_floored"]]
    expect(page.get_by_test_id("chart")).to_have_attribute("data-floored", str(len(floored)))
    if floored:  # each floored KL is a bound in the list, never a number
        expect(page.get_by_test_id("effect-panel")).to_contain_text("≥ 23 nats (floored)")


def test_ablate_a_layers_mlp_from_the_layer_label(page: Page):
    generate(page, "Count: one, two, three,", max_new_tokens=4)
    open_tab(page, "heads")
    # a click on the layer label "7" (left of the grid) picks that layer
    page.get_by_test_id("ablate-target").select_option("mlp")
    left = int(page.get_by_test_id("chart").get_attribute("data-plot").split(",")[0])
    _, py = page.evaluate(
        """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]')).convertToPixel({gridIndex: 0}, [0, 7])"""
    )
    box = page.get_by_test_id("chart").bounding_box()
    page.mouse.click(box["x"] + left - 12, box["y"] + py)
    expect(page.get_by_test_id("ablate-layer")).to_have_value("7")
    before = rendered(page)
    with page.expect_response(lambda r: r.url.endswith("/api/intervene/ablate")) as resp:
        page.get_by_test_id("ablate").click()
    assert resp.value.json()["run"]["intervention"]["targets"] == [{"kind": "mlp", "layer": 7}]
    wait_rendered(page, "effect", before)
    expect(page.get_by_test_id("view-caption")).to_contain_text("L7 MLP")


def test_patching_heatmap_with_progress(page: Page, screenshot_dir, tmp_path):
    page.set_viewport_size({"width": 1280, "height": 800})
    generate(page, CLEAN, max_new_tokens=2)
    page.get_by_test_id("tab-patch").click()
    expect(page.locator("#chart-overlay-text")).to_contain_text("Write a clean and a corrupted prompt")
    # the defaults are the Eiffel Tower / Colosseum pair, " Paris" − " Rome" at the last position
    expect(page.get_by_test_id("patch-clean")).to_have_value(CLEAN)
    expect(page.get_by_test_id("patch-corrupted")).to_have_value(CORRUPTED)
    expect(page.get_by_test_id("patch-clean-count")).to_have_text("6 tokens")
    expect(page.get_by_test_id("patch-corrupted-count")).to_have_text("6 tokens")
    expect(page.get_by_test_id("patch-token-a")).to_have_value(" Paris")
    expect(page.get_by_test_id("patch-token-b")).to_have_value(" Rome")

    progress_seen = []
    page.on("response", lambda r: progress_seen.append(r.json()) if "/api/jobs/" in r.url and r.status == 200 else None)
    before = rendered(page)
    with page.expect_response(lambda r: r.url.endswith("/api/intervene/patch"), timeout=300_000) as resp:
        page.get_by_test_id("patch-start").click()
        expect(page.get_by_test_id("view-loading")).to_be_visible()
        expect(page.get_by_test_id("view-stop")).to_be_visible()
    answer = resp.value.json()
    assert resp.value.status == 200, answer
    wait_rendered(page, "patch", before)
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-sweep", "residual")
    expect(chart).to_have_attribute("data-layers", "30")
    expect(chart).to_have_attribute("data-columns", "6")
    expect(chart).to_have_attribute("data-scale", "viridis")
    assert progress_seen and all(p["kind"] == "patch" for p in progress_seen), "the page followed the job's progress"
    assert progress_seen[-1]["total"] == 30 * 6
    # The drawn cells are (value - corrupted) / (clean - corrupted) of the raw metric, recomputed here.
    clean, corrupted = answer["clean_metric"], answer["corrupted_metric"]
    assert clean > corrupted, "the clean prompt prefers Paris over Rome more than the corrupted one"
    cells = page.evaluate(OPTION_JS)["series"][0]["data"]
    assert len(cells) == 180
    for col, layer, norm, raw in cells:
        assert raw == answer["values"][layer][col]
        assert math.isclose(norm, (raw - corrupted) / (clean - corrupted), rel_tol=1e-6, abs_tol=1e-6)
    # exact cells: at layer 0 (the embeddings) the positions whose token is the same in both
    # prompts ("The", " is", " in") patch in an identical state, so the metric stays corrupted
    same = [i for i, (a, b) in enumerate(zip(answer["tokens_clean"], answer["tokens_corrupted"])) if a == b]
    assert same == [0, 4, 5]
    for col in same:
        assert answer["values"][0][col] == pytest.approx(corrupted, abs=1e-4)
        assert cells[col][2] == pytest.approx(0.0, abs=1e-4)
    caption = page.get_by_test_id("view-caption")
    expect(caption).to_contain_text("viridis")
    expect(caption).to_contain_text('logit " Paris" − logit " Rome"')
    doc_shot(page, "intervene-patch.png", screenshot_dir)
    svg_export_parses(page, tmp_path, "patch")


def test_mismatched_token_counts_refuse_to_start(page: Page):
    generate(page, CLEAN, max_new_tokens=2)
    page.get_by_test_id("tab-patch").click()
    page.get_by_test_id("patch-corrupted").fill("The Colosseum in Rome is in")
    expect(page.get_by_test_id("patch-corrupted-count")).to_have_text("8 tokens")
    expect(page.get_by_test_id("patch-corrupted-count")).to_have_class("patch-count bad")
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "/api/intervene/patch" in r.url else None)
    page.get_by_test_id("patch-start").click()
    msg = page.get_by_test_id("patch-message")
    expect(msg).to_have_text(
        "The prompts must have the same number of tokens: clean has 6, corrupted has 8. "
        "Edit one of them until both counts match.")
    page.wait_for_timeout(300)
    assert requests == [], "nothing was sent"
    # the server refuses the same mismatch with its own clear 400
    res = page.request.post(page.base_url + "/api/intervene/patch", data={
        "clean": {"text": CLEAN}, "corrupted": {"text": "The Colosseum in Rome is in"},
        "metric": {"type": "logit_diff", "token_a": " Paris", "token_b": " Rome"}, "sweep": "residual"},
        headers={"Origin": page.base_url})
    assert res.status == 400 and res.json()["status"] == 400 and "corrupted" in res.json()["error"]


def test_steering_sweep_side_by_side(page: Page, screenshot_dir, tmp_path):
    page.set_viewport_size({"width": 1280, "height": 800})
    generate(page, "Write about your day.", max_new_tokens=8)
    parent = page.get_by_test_id("conversation").get_attribute("data-run-id")
    page.get_by_test_id("tab-steer").click()
    expect(page.get_by_test_id("steer-panel")).to_be_visible()
    page.get_by_test_id("steer-layer").select_option("10")
    page.get_by_test_id("steer-alphas").fill("-8, 0, 8")
    before = rendered(page)
    with page.expect_response(lambda r: r.url.endswith("/api/intervene/steer"), timeout=300_000) as resp:
        page.get_by_test_id("steer-start").click()
    answer = resp.value.json()
    assert resp.value.status == 200, answer
    wait_rendered(page, "steer", before)
    cols = page.get_by_test_id("steer-run")
    expect(cols).to_have_count(3)
    assert [c.get_attribute("data-alpha") for c in cols.all()] == ["-8", "0", "8"]
    texts = {r["alpha"]: "".join(t["text"] for t in r["run"]["tokens"] if t["source"] == "generated") for r in answer["results"]}
    # alpha 0 reproduces the parent: no KL anywhere, the same tokens
    zero = next(r for r in answer["results"] if r["alpha"] == 0)
    assert all(p["kl"] == 0 and not p["kl_floored"] for p in zero["effects"]["positions"])
    expect(cols.nth(1)).to_contain_text("same tokens")
    for i, a in enumerate((-8, 0, 8)):
        shown = cols.nth(i).locator(".steer-text").inner_text()
        assert shown.replace("·", " ").replace("↵", "\n").strip() == texts[a].strip() or len(texts[a]) > 400
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-runs", "3")
    expect(chart).to_have_attribute("data-alphas", "-8,0,8")
    # every steered run joined the branch tree under the parent
    tree = page.get_by_test_id("fork-tree")
    for r in answer["results"]:
        assert r["run"]["parent_id"] == parent
        expect(tree.locator(f"[data-testid='branch'][data-run-id='{r['run']['run_id']}']")).to_be_visible()
    doc_shot(page, "intervene-steer.png", screenshot_dir)
    svg_export_parses(page, tmp_path, "steer")

    # The Diff tab can align the free-running α = 8 run by token edit distance, and says so.
    eight = next(r for r in answer["results"] if r["alpha"] == 8)["run"]["run_id"]
    page.get_by_test_id("tab-diff").click()
    before = rendered(page)
    page.get_by_test_id("diff-a").select_option(parent)
    page.get_by_test_id("diff-b").select_option(eight)
    wait_rendered(page, "diff", before)
    expect(page.get_by_test_id("view-caption")).to_contain_text("aligned by position")
    before = rendered(page)
    with page.expect_response(lambda r: "/api/diff" in r.url and "align=edit" in r.url) as resp:
        page.get_by_test_id("diff-align").select_option("edit")
    diff = resp.value.json()
    assert diff["align"] == "edit"
    wait_rendered(page, "diff", before)
    expect(page.get_by_test_id("view-caption")).to_contain_text("aligned by token edit distance")
    expect(page.get_by_test_id("chart")).to_have_attribute("data-alignment", "edit")
    if diff["divergence_position"] is not None:
        expect(page.get_by_test_id("divergence")).to_have_count(1)
    # its means leave the floored rows out: recomputed here from the answer
    rows = [r for r in diff["kl"] if not r["in_common_prefix"] and not r["kl_raw_floored"]]
    if rows:
        mean = sum(max(0.0, r["kl_raw"]) for r in rows) / len(rows)
        expect(page.get_by_test_id("view-caption")).to_contain_text(f"{mean:.3f}")
    # a bad alpha list is refused in the page, with the reason
    page.get_by_test_id("tab-steer").click()
    page.get_by_test_id("steer-alphas").fill("1, two")
    page.get_by_test_id("steer-start").click()
    expect(page.get_by_test_id("error")).to_have_text("α must be numbers (e.g. -8, 0, 8).")


def test_intervene_views_in_chinese(page: Page):
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("tab-effect")).to_have_text("效果")
    expect(page.get_by_test_id("tab-patch")).to_have_text("激活修补")
    expect(page.get_by_test_id("tab-steer")).to_have_text("引导")
    generate(page, CLEAN, max_new_tokens=2)
    page.get_by_test_id("tab-heads").click()
    expect(page.get_by_test_id("ablate-pick")).to_have_text("选择注意力头")
    expect(page.get_by_test_id("ablate-count")).to_have_text("已选 0 个头")
    page.get_by_test_id("tab-effect").click()
    expect(page.locator("#chart-overlay-text")).to_contain_text("先对运行做消融或引导")


def test_a_head_sweep_shows_progress_and_stops(page: Page):
    generate(page, CLEAN, max_new_tokens=2)
    page.get_by_test_id("tab-patch").click()
    expect(page.get_by_test_id("patch-clean-count")).to_have_text("6 tokens")
    page.get_by_test_id("patch-sweep").select_option("heads")
    expect(page.get_by_test_id("patch-head-position")).to_be_visible()
    page.get_by_test_id("patch-head-position").fill("all")
    with page.expect_request(lambda r: r.url.endswith("/api/intervene/patch")) as req:
        page.get_by_test_id("patch-start").click()
    body = req.value.post_data_json
    assert body["sweep"] == "heads" and body["head_position"] == "all"
    job_id = body["job_id"]
    # progress "done / total" shows while it runs, total = 30 layers x 9 heads
    expect(page.get_by_test_id("view-progress")).to_contain_text("/ 270", timeout=60_000)
    with page.expect_response(lambda r: r.url.endswith("/api/intervene/patch")) as resp:
        page.get_by_test_id("view-stop").click()
    assert resp.value.status == 409 and "cancel" in resp.value.json()["error"]
    expect(page.locator("#chart-overlay-text")).to_have_text("Patch: stopped. Press Start to run the sweep again.")
    # a redraw (a click on a token) does not start the sweep again; only Start does
    requests = []
    page.on("request", lambda r: requests.append(r.url) if r.url.endswith("/api/intervene/patch") else None)
    page.get_by_test_id("token").nth(2).click()
    page.wait_for_timeout(500)
    assert requests == []
    job = page.request.get(f"{page.base_url}/api/jobs/{job_id}")
    if job.status == 200:  # the job may already be forgotten; when it is known it was cancelled
        assert job.json()["status"] in ("cancelled", "canceled"), job.json()
        assert job.json()["done"] < 270
    expect(page.get_by_test_id("patch-start")).to_be_enabled()
