"""Interactive generation in real headless Chromium: streaming and Stop, the sampler view, forks
and their branch tree, the run diff, and Score text. Real server, real default model; short,
greedy generations wherever the outcome has to be deterministic.
"""
from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import Page, expect

from test_page import rendered, wait_rendered

pytestmark = pytest.mark.browser

GENERATED = "[data-testid='token'][data-source='generated']"

# Records (streaming flag, number of generated chips) at every change of the conversation, so a
# test can prove that chips appeared while the stream was still open.
RECORD_JS = """
() => {
  const conv = document.getElementById('conversation');
  const snaps = [];
  const take = () => snaps.push({
    streaming: conv.dataset.streaming || '',
    n: conv.querySelectorAll('[data-testid="token"][data-source="generated"]').length,
  });
  new MutationObserver(take).observe(conv, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-streaming'] });
  conv.__snaps = snaps;  // an expando on the element, not a global
}
"""

SERIES_SIZES_JS = """
() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
        .getOption().series.map(s => s.data.length)
"""


def fill_form(page: Page, prompt: str, max_new_tokens: int, temperature: float = 0, **extra) -> None:
    page.get_by_test_id("prompt").fill(prompt)
    page.get_by_test_id("temperature").fill(str(temperature))
    page.get_by_test_id("max-new-tokens").fill(str(max_new_tokens))
    for key, value in extra.items():
        page.get_by_test_id(key.replace("_", "-")).fill(str(value))


def run_to_end(page: Page, before: str | None = None) -> str:
    """Wait for the stream to finish and the first view to be drawn; return the run id."""
    expect(page.get_by_test_id("busy")).to_be_hidden(timeout=180_000)
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-streaming", "false")
    wait_rendered(page, "attention", before)
    return page.get_by_test_id("conversation").get_attribute("data-run-id")


def generate(page: Page, prompt: str, max_new_tokens: int = 6, temperature: float = 0, **extra) -> str:
    fill_form(page, prompt, max_new_tokens, temperature, **extra)
    before = rendered(page)
    page.get_by_test_id("generate").click()
    return run_to_end(page, before)


def api_run(page: Page, run_id: str) -> dict:
    return page.request.get(f"{page.base_url}/api/run?run_id={run_id}").json()


def open_tab(page: Page, view: str) -> str:
    before = rendered(page)
    page.get_by_test_id(f"tab-{view}").click()
    return wait_rendered(page, view, before)


def bar_point(page: Page, series_index: int, row: int) -> tuple[float, float]:
    """Page coordinates of the middle of bar `row` of a horizontal bar series."""
    return tuple(page.evaluate(
        """([si, row]) => {
            const el = document.querySelector('[data-testid="chart"]');
            const chart = echarts.getInstanceByDom(el);
            const box = chart.getModel().getSeriesByIndex(si).getData().getItemLayout(row);
            const r = el.getBoundingClientRect();
            return [r.left + box.x + Math.max(2, box.width / 2), r.top + box.y + box.height / 2];
        }""",
        [series_index, row],
    ))


def test_streaming_shows_tokens_before_done_and_views_after(page: Page, screenshot_dir):
    page.evaluate(RECORD_JS)
    fill_form(page, "Count from one to ten.", 14)
    before = rendered(page)
    with page.expect_request(lambda r: r.url.endswith("/api/generate/stream") and r.method == "POST"):
        page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("stop")).to_be_visible()
    page.wait_for_function(
        """() => document.querySelectorAll('[data-testid="token"][data-source="generated"]').length >= 2
                 && document.getElementById('conversation').dataset.streaming === 'true'"""
    )
    page.screenshot(path=str(screenshot_dir / "streaming.png"))
    run_id = run_to_end(page, before)
    final = page.locator(GENERATED).count()
    snaps = page.evaluate("() => document.getElementById('conversation').__snaps")
    live = [s["n"] for s in snaps if s["streaming"] == "true"]
    assert live and 1 <= min(x for x in live if x > 0) < final, (live, final)
    assert len({x for x in live if x > 0}) >= 2, f"chips arrived in several steps: {live}"
    expect(page.get_by_test_id("stop")).to_be_hidden()
    # The finished run is the one the server stored, and the chips match it one for one.
    run = api_run(page, run_id)
    assert run["status"] == "done"
    assert final == len(run["tokens"]) - run["num_prompt_tokens"]
    assert page.get_by_test_id("token").count() == len(run["tokens"])


def test_stop_cancels_the_run(page: Page):
    fill_form(page, "Write a very long story about a dragon who learns to cook.", 300)
    page.get_by_test_id("generate").click()
    page.wait_for_function(
        """() => document.querySelectorAll('[data-testid="token"][data-source="generated"]').length >= 3"""
    )
    page.get_by_test_id("stop").click()
    run_id = run_to_end(page)
    run = api_run(page, run_id)
    assert run["status"] == "cancelled" and run["finish_reason"] == "cancelled"
    generated = len(run["tokens"]) - run["num_prompt_tokens"]
    assert 3 <= generated < 300
    assert page.locator(GENERATED).count() == generated
    expect(page.get_by_test_id("run-summary")).to_contain_text("stopped")
    expect(page.get_by_test_id("generate")).to_be_enabled()


def test_closing_the_page_cancels_the_run_on_the_server(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    pg = context.new_page()
    pg.goto(server + "/")
    pg.wait_for_selector("body[data-ready='true']")
    fill_form(pg, "Write a very long story about a lighthouse keeper.", 400)
    pg.get_by_test_id("generate").click()
    pg.wait_for_function(
        """() => document.querySelectorAll('[data-testid="token"][data-source="generated"]').length >= 2"""
    )
    run_id = pg.get_by_test_id("conversation").get_attribute("data-stream-run-id")
    request = context.request
    pg.close()
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        resp = request.get(f"{server}/api/run?run_id={run_id}")
        if resp.status == 200:
            status = resp.json()["status"]
            break
        time.sleep(0.25)
    body = request.get(f"{server}/api/run?run_id={run_id}").json()
    context.close()
    assert status == "cancelled", body
    assert len(body["tokens"]) - body["num_prompt_tokens"] < 400


def test_sampler_shows_raw_and_sampling_distributions(page: Page, screenshot_dir):
    generate(page, "Suggest a name for a cat.", 5, temperature=0.9, top_k=8, top_p=0.9, seed=3)
    open_tab(page, "sampler")
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-distributions", "2")
    sizes = page.evaluate(SERIES_SIZES_JS)
    assert len(sizes) == 2 and sizes[0] == sizes[1] >= 10
    # top-k 8 keeps at most 8 tokens; what it cut is shown as a share of the mass.
    kept = int(chart.get_attribute("data-kept"))
    assert 1 <= kept <= 8
    cut = float(chart.get_attribute("data-cut-mass"))
    assert 0 < cut < 1
    expect(page.get_by_test_id("sampler-cut")).to_contain_text("%")
    option = page.evaluate(
        """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]')).getOption()"""
    )
    sampling = [d["value"] for d in option["series"][1]["data"]]
    assert sum(1 for v in sampling if v > 0) == kept
    assert sum(sampling) == pytest.approx(1, abs=1e-3)  # every kept token is among the rows
    assert "chosen" in option["title"][1]["subtext"] and "rank" in option["title"][0]["subtext"]
    page.screenshot(path=str(screenshot_dir / "sampler.png"))

    # A prompt token was not sampled: raw only, and the note says so.
    prompt_chip = page.locator("[data-testid='token'][data-source='prompt']").nth(5)
    before = rendered(page)
    prompt_chip.click()
    wait_rendered(page, "sampler", before)
    expect(chart).to_have_attribute("data-distributions", "1")
    expect(page.get_by_test_id("sampler-cut")).to_contain_text("Teacher-forced")


def test_clicking_an_alternative_forks_and_the_tree_switches_branches(page: Page, screenshot_dir):
    parent_id = generate(page, "Name a fruit.", 6)
    gen = page.locator(GENERATED)
    pos = int(gen.nth(1).get_attribute("data-position"))
    gen.nth(1).click()
    open_tab(page, "probs")
    expect(page.get_by_test_id("fork-tree")).to_be_hidden()
    alt_id = page.evaluate(
        """() => echarts.getInstanceByDom(document.querySelector('[data-testid="chart"]'))
               .getOption().series[0].data[2].tokenId"""
    )
    x, y = bar_point(page, 0, 2)
    with page.expect_response(lambda r: r.url.endswith("/api/fork/stream")) as resp:
        page.mouse.click(x, y)
    assert resp.value.status == 200
    conv = page.get_by_test_id("conversation")
    expect(conv).not_to_have_attribute("data-run-id", parent_id)
    fork_id = conv.get_attribute("data-run-id")
    fork = api_run(page, fork_id)
    assert fork["kind"] == "fork" and fork["parent_id"] == parent_id and fork["fork_position"] == pos
    assert fork["tokens"][pos]["id"] == alt_id
    assert fork_id in api_run(page, parent_id)["children"]
    # The forced token is selected, and the tree shows both branches with the fork current.
    expect(page.locator("[data-testid='token'][aria-selected='true']")).to_have_attribute("data-position", str(pos))
    tree = page.get_by_test_id("fork-tree")
    expect(tree).to_be_visible()
    branches = tree.get_by_test_id("branch")
    expect(branches).to_have_count(2)
    assert branches.evaluate_all("els => els.map(e => e.dataset.runId)") == [parent_id, fork_id]
    expect(tree.locator(f"[data-run-id='{fork_id}']")).to_have_attribute("aria-current", "true")
    expect(tree.locator(f"[data-run-id='{fork_id}']")).to_contain_text(f"@{pos}")
    page.screenshot(path=str(screenshot_dir / "fork-tree.png"))

    # Switching loads the other run (through GET /api/run) and redraws the views.
    before = rendered(page)
    with page.expect_response(lambda r: "/api/run?" in r.url and parent_id in r.url):
        tree.locator(f"[data-run-id='{parent_id}']").click()
    expect(conv).to_have_attribute("data-run-id", parent_id)
    wait_rendered(page, "probs", before)
    expect(tree.locator(f"[data-run-id='{parent_id}']")).to_have_attribute("aria-current", "true")
    tree.locator(f"[data-run-id='{fork_id}']").click()
    expect(conv).to_have_attribute("data-run-id", fork_id)

    # "diff" on the fork compares it with its parent: the divergence is the fork position.
    before = rendered(page)
    tree.get_by_test_id("compare-parent").click()
    wait_rendered(page, "diff", before)
    expect(page.get_by_test_id("tab-diff")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("divergence")).to_be_visible()
    expect(page.get_by_test_id("divergence")).to_contain_text(str(pos))
    expect(page.get_by_test_id("chart")).to_have_attribute("data-divergence", str(pos))
    assert page.get_by_test_id("diff-a").input_value() == parent_id
    assert page.get_by_test_id("diff-b").input_value() == fork_id


def test_a_failed_fork_shows_the_server_message(page: Page):
    generate(page, "Say hi.", 3)
    page.locator(GENERATED).first.click()
    open_tab(page, "probs")
    message = "token_id: must be in [0, 49151], got 99999999"
    page.route("**/api/fork/stream", lambda route: route.fulfill(
        status=400, content_type="application/json", body=json.dumps({"error": message, "status": 400})))
    x, y = bar_point(page, 0, 1)
    page.mouse.click(x, y)
    expect(page.get_by_test_id("error")).to_have_text(message)
    expect(page.get_by_test_id("fork-tree")).to_be_hidden()
    expect(page.get_by_test_id("generate")).to_be_enabled()


def test_diff_of_two_temperatures(page: Page, screenshot_dir):
    common = {"top_k": 0, "top_p": 1, "seed": 7}
    cold = generate(page, "Describe the sea in one sentence.", 10, temperature=0.2, **common)
    page.get_by_test_id("tab-diff").click()
    expect(page.locator("#chart-overlay-text")).to_contain_text("Compare two runs")
    open_tab(page, "attention")
    hot = generate(page, "Describe the sea in one sentence.", 10, temperature=1.5, **common)
    # The default pair is the previous run (A) and the one shown (B).
    open_tab(page, "diff")
    assert page.get_by_test_id("diff-a").input_value() == cold
    assert page.get_by_test_id("diff-b").input_value() == hot
    chart = page.get_by_test_id("chart")
    diff = page.request.get(f"{page.base_url}/api/diff?run_a={cold}&run_b={hot}").json()
    expect(chart).to_have_attribute("data-common-prefix", str(diff["common_prefix"]))
    sizes = page.evaluate(SERIES_SIZES_JS)
    assert sizes == [len(diff["kl"]), len(diff["kl"])]
    # Two rows of aligned chips; the same prompt, so only the generated part can differ.
    rows = page.get_by_test_id("diff-rows")
    expect(rows).to_be_visible()
    if diff["divergence_position"] is not None:
        expect(page.get_by_test_id("divergence")).to_contain_text(str(diff["divergence_position"]))
    first_gen = diff["tokens_a"].index(next(t for t in diff["tokens_a"] if t["source"] == "generated"))
    kl = {r["position"]: r for r in diff["kl"]}
    assert kl[first_gen]["kl_sampling"] > 0.01  # same context, different temperature
    page.screenshot(path=str(screenshot_dir / "diff.png"))

    # The same run on both sides is refused with a message, and swapping works.
    before = rendered(page)
    page.get_by_test_id("diff-b").select_option(cold)
    expect(page.locator("#chart-overlay-text")).to_contain_text("two different runs")
    page.get_by_test_id("diff-b").select_option(hot)
    wait_rendered(page, "diff", before)
    page.get_by_test_id("diff-swap").click()
    expect(chart).to_have_attribute("data-run-a", hot)


def test_score_text_shows_perplexity_and_gltr_colours(page: Page, screenshot_dir):
    page.get_by_test_id("mode-score").click()
    expect(page.get_by_test_id("prompt")).to_be_hidden()
    expect(page.get_by_test_id("score-text")).to_be_visible()
    # Empty text is caught before any request; text too short for the server shows its message.
    page.get_by_test_id("score-submit").click()
    expect(page.get_by_test_id("error")).to_contain_text("text")
    with page.expect_response(lambda r: r.url.endswith("/api/score")) as resp:
        page.get_by_test_id("score-text").fill("a")
        page.get_by_test_id("score-submit").click()
    assert resp.value.status == 400
    expect(page.get_by_test_id("error")).to_have_text(resp.value.json()["error"])

    text = "The quick brown fox jumps over the lazy dog. Colourless green ideas sleep furiously."
    page.get_by_test_id("score-text").fill(text)
    before = rendered(page)
    with page.expect_response(lambda r: r.url.endswith("/api/score")) as resp:
        page.get_by_test_id("score-submit").click()
    run = resp.value.json()
    wait_rendered(page, "attention", before)
    expect(page.get_by_test_id("error")).to_be_hidden()
    ppl = page.get_by_test_id("perplexity")
    expect(ppl).to_be_visible()
    assert float(ppl.get_attribute("data-value")) == pytest.approx(run["score"]["perplexity"])
    assert ppl.inner_text().strip()
    expect(page.get_by_test_id("gltr-legend")).to_contain_text("top 10")
    expect(page.get_by_test_id("run-summary")).to_contain_text("perplexity")
    # Chips are coloured by GLTR bucket of their rank, in full colour.
    assert page.get_by_test_id("metric-select").input_value() == "gltr"
    expect(page.get_by_test_id("legend")).to_contain_text("top 10")
    colours = {1: "rgb(173, 255, 128)", 2: "rgb(255, 234, 128)", 3: "rgb(255, 146, 128)", 4: "rgb(229, 176, 255)"}
    chips = page.get_by_test_id("token")
    expect(chips).to_have_count(len(run["tokens"]))
    seen = page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=\"token\"]')].map(e => getComputedStyle(e).backgroundColor)"
    )
    for tok, colour in zip(run["tokens"][1:], seen[1:]):
        bucket = 1 if tok["rank"] <= 10 else 2 if tok["rank"] <= 100 else 3 if tok["rank"] <= 1000 else 4
        assert colour == colours[bucket], (tok, colour)
    page.screenshot(path=str(screenshot_dir / "score.png"))
    # Every view takes the scored run: the sampler shows its raw distribution.
    page.locator("[data-testid='token']").nth(4).click()
    open_tab(page, "sampler")
    expect(page.get_by_test_id("chart")).to_have_attribute("data-distributions", "1")
    # Back to Generate: the prompt returns; the labels speak Chinese too.
    page.get_by_test_id("mode-generate").click()
    expect(page.get_by_test_id("prompt")).to_be_visible()
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("mode-score")).to_have_text("文本打分")
    expect(page.get_by_test_id("tab-sampler")).to_have_text("采样器")
    expect(page.get_by_test_id("score-summary")).to_contain_text("困惑度")
    page.get_by_test_id("lang-toggle").click()


def test_the_event_stream_parser_handles_split_frames_crlf_and_keep_alives(page: Page):
    frames = page.evaluate(
        """async () => {
            const { createSseParser } = await import('/static/js/stream.js');
            const p = createSseParser();
            const out = [];
            const text = ': keep-alive\\r\\n\\r\\nevent: token\\r\\ndata: {"a":1}\\r\\n\\r\\n'
              + 'event: done\\ndata: {"b":\\ndata: 2}\\n\\n: tail';
            for (const ch of text) out.push(...p.feed(ch));  // one character at a time
            return { out, pending: p.pending };
        }"""
    )
    assert frames["out"] == [{"event": "token", "data": '{"a":1}'}, {"event": "done", "data": '{"b":\n2}'}]
    assert frames["pending"] == ": tail"


def test_ctrl_enter_while_streaming_does_not_start_a_second_run(page: Page):
    starts: list[str] = []
    page.on("request", lambda r: starts.append(r.url) if r.url.endswith("/api/generate/stream") else None)
    fill_form(page, "Write a long poem about rain.", 200)
    page.get_by_test_id("generate").click()
    page.wait_for_function(
        """() => document.querySelectorAll('[data-testid="token"][data-source="generated"]').length >= 1"""
    )
    page.get_by_test_id("prompt").press("Control+Enter")
    page.get_by_test_id("stop").click()
    run_to_end(page)
    assert len(starts) == 1, starts
