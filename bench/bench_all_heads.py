"""Every head of every layer through the Python API: 30 `attention(layer, "all")` calls against
270 single-head calls (what a notebook had to do before), on the default model, at T tokens.

    python bench/bench_all_heads.py [--tokens 1024 2048] [--repeats 3]

Prints JSON: medians over repeats (both sides alternate within one process, same threads), the
ratio, and the peak RSS growth of the all-heads loop. Each repeat scores a fresh text, so nothing
is cached between the sides.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    import llmvis
    from bench_browser import text_of_tokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = {"threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None, "results": []}
    for tokens in args.tokens:
        all_s, single_s, peak = [], [], []
        for rep in range(args.repeats):
            for side in (("all", "single") if rep % 2 == 0 else ("single", "all")):
                run = llmvis.score(text_of_tokens(tokens) + f" {rep}{side}")
                layers, heads = run.engine.lm.num_layers, run.engine.lm.num_heads
                before = rss_mb()
                t0 = time.perf_counter()
                if side == "all":
                    for _, block in run.attention_all():
                        assert block.shape[0] == heads
                    all_s.append(time.perf_counter() - t0)
                    peak.append(rss_mb() - before)
                else:
                    for layer in range(layers):
                        for head in range(heads):
                            run.attention(layer, head)
                    single_s.append(time.perf_counter() - t0)
                run.engine.store.remove(run.id)
        a, s = statistics.median(all_s), statistics.median(single_s)
        out["results"].append({"tokens": tokens, "all_heads_s": round(a, 3), "single_head_calls_s": round(s, 3),
                               "ratio_all_over_single": round(a / s, 3), "rss_growth_mb_all": round(max(peak), 1),
                               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
