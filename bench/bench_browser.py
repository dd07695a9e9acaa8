"""Benchmark: how fast the page draws long runs, in headless Chromium, from performance marks.

Starts the real server, makes runs of about 1,024 and 4,096 tokens with POST /api/score (the
same prefill as a generation, without the decode loop), opens each in the page (?run=<id>) and
times, per layer switch, from the change event to the `llmvis:<view>-rendered` mark the page sets
after ECharts finishes. Layers the server has not computed yet include the server's work. Other
tabs are timed at 4,096 tokens as well. Prints one JSON object of medians.

    python bench/bench_browser.py [--lengths 1024 4096] [--layers 4] [--no-tabs]

The Overview tab (30 x 9 pooled heads) is timed at lengths up to 2,048: the first rows in view,
then the last layers after a scroll.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


def text_of_tokens(n: int) -> str:
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly brew coffee".split()
    return " ".join(words[i % len(words)] for i in range(n))  # about one token per word here


TIME_LAYER_JS = """async ([layer, view]) => {
  const sel = document.querySelector('[data-testid="layer-select"]');
  const chart = document.querySelector('[data-testid="chart"]');
  const before = chart.dataset.rendered || '';
  performance.clearMarks(`llmvis:${view}-rendered`);
  const t0 = performance.now();
  sel.value = String(layer);
  sel.dispatchEvent(new Event('change', { bubbles: true }));
  while ((chart.dataset.rendered || '') === before) await new Promise((r) => setTimeout(r, 5));
  const mark = performance.getEntriesByName(`llmvis:${view}-rendered`).pop();
  return (mark ? mark.startTime : performance.now()) - t0;
}"""

TIME_TAB_JS = """async (view) => {
  const chart = document.querySelector('[data-testid="chart"]');
  const before = chart.dataset.rendered || '';
  performance.clearMarks(`llmvis:${view}-rendered`);
  const t0 = performance.now();
  document.querySelector(`[data-testid="tab-${view}"]`).click();
  while (!(chart.dataset.rendered || '').startsWith(view + ':') || chart.dataset.rendered === before) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const mark = performance.getEntriesByName(`llmvis:${view}-rendered`).pop();
  return (mark ? mark.startTime : performance.now()) - t0;
}"""


# The Overview tab (every head of every layer): from the tab click to the moment every row in
# view is drawn (the page's llmvis:overview-drawn mark), then the same after scrolling to the last layer.
TIME_OVERVIEW_JS = """async () => {
  const box = () => document.querySelector('[data-testid="overview"]');
  const done = async () => { while (!(box() && box().dataset.complete === 'true')) await new Promise((r) => setTimeout(r, 5)); };
  performance.clearMarks('llmvis:overview-drawn');
  const t0 = performance.now();
  document.querySelector('[data-testid="tab-overview"]').click();
  while (!(box() && Number(box().dataset.drawn) >= 1)) await new Promise((r) => setTimeout(r, 5));
  const firstRow = performance.now() - t0;
  await done();
  const first = performance.getEntriesByName('llmvis:overview-drawn').pop();
  const drawn = Number(box().dataset.drawn);
  performance.clearMarks('llmvis:overview-drawn');
  const t1 = performance.now();
  box().scrollTop = box().scrollHeight;
  await new Promise((r) => setTimeout(r, 50));  // the observer reports the new rows; they start loading
  await done();
  const last = performance.getEntriesByName('llmvis:overview-drawn').pop();
  return { first_row_ms: firstRow, first_ms: (first ? first.startTime : performance.now()) - t0, rows_in_view: drawn,
           scrolled_ms: (last ? last.startTime : performance.now()) - t1, rows_drawn: Number(box().dataset.drawn) };
}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--layers", type=int, default=4, help="layer switches timed per length")
    ap.add_argument("--no-tabs", action="store_true", help="skip the other tabs (only attention and the overview)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tempfile.mkdtemp(prefix="llmvis-bench-data-")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "LLMVIS_DATA_DIR": data_dir}
    server = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--port", str(port), "--no-history"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    out = {"benchmark": "browser", "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
           "chromium": shutil.which("chromium") or "/usr/bin/chromium", "lengths": {}}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(base + "/api/model", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(server.stderr.read().decode()[-2000:])
                time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=out["chromium"], args=CHROMIUM_ARGS)
            probe = post(base, "/api/estimate", {"prompt": text_of_tokens(1000), "use_chat_template": False,
                                                 "max_new_tokens": 1})
            per_word = probe["num_prompt_tokens"] / 1000  # tokens per word of this text
            for n in args.lengths:
                t = time.perf_counter()
                run = post(base, "/api/score", {"text": text_of_tokens(int(n / per_word))})
                score_s = time.perf_counter() - t
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(300_000)
                page.goto(f"{base}/?run={run['run_id']}")
                page.wait_for_selector("body[data-ready='true']")
                page.wait_for_function("() => (document.querySelector('[data-testid=\"chart\"]').dataset.rendered || '').startsWith('attention:')")
                first_layer = [page.evaluate(TIME_LAYER_JS, [layer, "attention"]) for layer in range(1, args.layers + 1)]
                cached_layer = [page.evaluate(TIME_LAYER_JS, [layer, "attention"]) for layer in range(1, args.layers + 1)]
                res = {
                    "num_tokens": len(run["tokens"]),
                    "score_request_s": round(score_s, 2),
                    "attention_layer_new_ms_median": round(statistics.median(first_layer), 1),
                    "attention_layer_cached_ms_median": round(statistics.median(cached_layer), 1),
                }
                if n <= 2048:  # every head of every layer: the Overview grid (target: <= 3 s at 1,024 tokens)
                    ov = page.evaluate(TIME_OVERVIEW_JS)
                    res.update({f"overview_{k}": round(v, 1) for k, v in ov.items()})
                    page.get_by_test_id("tab-attention").click()
                if not args.no_tabs and (n >= 4096 or n == max(args.lengths)):
                    for view in ("probs", "entropy", "similarity", "projection", "lens", "heads"):
                        res[f"tab_{view}_ms"] = round(page.evaluate(TIME_TAB_JS, view), 1)
                out["lengths"][str(n)] = res
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)
    out["targets_ms"] = {"attention_1024": 1500, "attention_overview_4096": 2000, "overview_grid_1024": 3000}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
