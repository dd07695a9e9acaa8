"""Benchmark: the Layers (logit lens) and Heads tabs on long runs.

The lens turns every layer's state at every position into a full-vocabulary distribution:
(L+1)·T rows of V logits. The page asks only for the columns it shows (by default the positions
that predict generated tokens), and the server computes only those. Prints one JSON object with,
per length, the server time of that default request, of a second request (cached), and of the
whole sequence (only up to --whole-max tokens: it grows linearly with T, ~35 s at 1,024 here).
The Heads grid's statistics (every layer's attention) use a weighted sample of query rows past
256 rows per segment group; its first request is timed too.

    python bench/bench_insights.py [--lengths 1024 4096] [--new-tokens 16] [--whole-max 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--whole-max", type=int, default=1024, help="time the whole-sequence lens only up to this length")
    args = ap.parse_args()

    from bench_long import prompt_of_length

    from llmvis.web.app import create_app
    from llmvis.core.config import ModelConfig, ServerConfig
    from llmvis.model.loading import load_model
    from llmvis.engine.engine import Engine

    lm = load_model(ModelConfig())
    client = create_app(Engine(lm, ServerConfig(max_new_tokens=args.new_tokens))).test_client()
    out = {"benchmark": "insights", "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
           "model": lm.name, "lengths": {}}

    def lens(rid, **window):
        t0 = time.perf_counter()
        resp = client.get("/api/logit_lens", query_string={"run_id": rid, "top_k": 5, **window})
        assert resp.status_code == 200, resp.get_json()
        return round(time.perf_counter() - t0, 3), len(resp.data)

    for n in args.lengths:
        body = {"prompt": prompt_of_length(lm.tokenizer, n - args.new_tokens), "temperature": 0,
                "max_new_tokens": args.new_tokens}
        run = client.post("/api/generate", json=body).get_json()
        rid, t, start = run["run_id"], run["num_tokens"], run["num_prompt_tokens"] - 1
        res = {"num_tokens": t, "window_columns": t - start}
        res["generated_window_first_s"], res["generated_window_bytes"] = lens(rid, start=start, end=t)
        res["generated_window_cached_s"], _ = lens(rid, start=start, end=t)
        t0 = time.perf_counter()
        resp = client.get("/api/attention_insights", query_string={"run_id": rid})
        res["heads_grid_first_s"] = round(time.perf_counter() - t0, 3)
        res["heads_grid_query_rows_used"] = resp.get_json()["query_rows_used"]
        if t <= args.whole_max:
            res["whole_first_s"], res["whole_bytes"] = lens(rid)
            res["speedup_window_vs_whole"] = round(res["whole_first_s"] / res["generated_window_first_s"], 1)
        out["lengths"][str(n)] = res
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
