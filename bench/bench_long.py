"""Benchmark: long contexts. Attention transfer at T=1024 and T=4096, memory, run-store growth.

Prints one JSON object; times are medians of --repeats. "server time" is the wall time of the
request through the Flask test client (compute + encoding), payload the body size.

    python bench/bench_long.py [--lengths 1024 4096] [--repeats 3] [--runs 20]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prompt_of_length(tok, n_tokens: int) -> str:
    words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly brew coffee " * 800).split()
    lo, hi = 1, len(words)
    while lo < hi:  # binary search the word count whose chat-formatted prompt has n_tokens
        mid = (lo + hi + 1) // 2
        ids = tok.apply_chat_template([{"role": "user", "content": " ".join(words[:mid])}], add_generation_prompt=True)["input_ids"]
        if len(ids) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def timed(fn, repeats):
    times, last = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        last = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20, help="runs in a row for the RSS-growth check")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--phase", choices=["all", "runs", "lengths"], default="all",
                    help="all = each phase in its own process, so one's peak RSS can't leak into the other")
    args = ap.parse_args()
    if args.phase == "all":
        import subprocess
        import sys

        merged: dict = {}
        for phase in ("runs", "lengths"):
            cmd = [sys.executable, __file__, "--phase", phase, "--repeats", str(args.repeats), "--runs", str(args.runs),
                   "--new-tokens", str(args.new_tokens), "--lengths", *map(str, args.lengths)]
            part = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            for key, value in part.items():
                if key == "peak_rss_mb":
                    merged[f"peak_rss_mb_{phase}_process"] = value
                elif key not in ("lengths", "repeated_runs") or value:
                    merged[key] = value
        print(json.dumps(merged, indent=2))
        return

    from llmvis.web.app import create_app
    from llmvis.core.config import ModelConfig, ServerConfig
    from llmvis.model.loading import load_model
    from llmvis.engine.engine import Engine

    lm = load_model(ModelConfig())
    budget = 1 << 30
    eng = Engine(lm, ServerConfig(store_budget_bytes=budget, max_new_tokens=256))
    client = create_app(eng).test_client()
    rss_model = rss_mb()
    out = {"benchmark": "long_context", "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
           "model": lm.name, "rss_after_model_load_mb": round(rss_model, 1), "lengths": {}}
    if args.phase == "runs":
        # RSS over many runs in a row (first, so no earlier long run inflates it): must stay under
        # model + store budget
        short = {"prompt": prompt_of_length(lm.tokenizer, 900), "temperature": 0, "max_new_tokens": 16}
        rss = []
        for i in range(args.runs):
            r = client.post("/api/generate", json=short).get_json()
            client.get(f"/api/attention?run_id={r['run_id']}&layer={i % lm.num_layers}&format=f16")
            rss.append(rss_mb())
        out["repeated_runs"] = {
            "runs": args.runs, "store_budget_mb": budget >> 20, "rss_model_mb": round(rss_model, 1),
            "rss_first_mb": round(rss[0], 1), "rss_last_mb": round(rss[-1], 1), "rss_max_mb": round(max(rss), 1),
            "store_bytes_mb": round(eng.store.total_bytes / 2**20, 1), "runs_kept": len(eng.store),
            # the first run sets the working set (activations, allocator); after it, RSS may grow by at
            # most the store budget, however many runs follow
            "growth_after_first_run_mb": round(max(rss) - rss[0], 1),
            "within_budget": max(rss) - rss[0] <= (budget >> 20),
        }
    else:
        for n in args.lengths:
            text = prompt_of_length(lm.tokenizer, n - args.new_tokens)
            body = {"prompt": text, "temperature": 0, "max_new_tokens": args.new_tokens}
            t = time.perf_counter()
            r = client.post("/api/generate", json=body)
            gen_s = time.perf_counter() - t
            assert r.status_code == 200, r.get_json()
            run = r.get_json()
            T = len(run["tokens"])
            rid = run["run_id"]
            res = {"num_tokens": T, "generate_s": round(gen_s, 3), "generate_payload_bytes": len(r.data)}
            layers = iter(range(lm.num_layers))

            def first_layer_f16():  # a layer never viewed before: compute + encode
                resp = client.get(f"/api/attention?run_id={rid}&layer={next(layers)}&head=mean&format=f16")
                assert resp.status_code == 200
                return len(resp.data)

            s, size = timed(first_layer_f16, args.repeats)
            res["attention_layer_f16_first_s"] = round(s, 4)
            res["attention_layer_f16_bytes"] = size
            s, size = timed(lambda: len(client.get(f"/api/attention?run_id={rid}&layer=0&head=mean&format=f16").data), args.repeats)
            res["attention_layer_f16_cached_s"] = round(s, 4)

            def first_layer_pooled():
                resp = client.get(f"/api/attention?run_id={rid}&layer={next(layers)}&head=mean&format=f16&pool=512")
                assert resp.status_code == 200
                return len(resp.data), resp.headers["X-Llmvis-Rows"]

            s, (size, rows) = timed(first_layer_pooled, args.repeats)
            res["attention_pooled512_first_s"] = round(s, 4)
            res["attention_pooled512_bytes"] = size
            res["attention_pooled512_rows"] = int(rows)
            if T <= 1024:
                s, size = timed(lambda: len(client.get(f"/api/attention?run_id={rid}&layer=0&head=mean").data), 1)
                res["attention_layer_json_cached_s"] = round(s, 4)
                res["attention_layer_json_bytes"] = size
            s, size = timed(lambda: len(client.get(f"/api/attention?run_id={rid}&layer=1&head=3&format=f16&q_start={T-256}&q_end={T}&k_start={T-256}&k_end={T}").data), args.repeats)
            res["attention_window256_s"] = round(s, 4)
            res["run_bytes"] = eng.store.get(rid).nbytes
            res["peak_rss_mb_so_far"] = round(peak_rss_mb(), 1)
            out["lengths"][str(n)] = res
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
