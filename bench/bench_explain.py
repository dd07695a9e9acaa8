"""Explain a token on the default model: direct logit attribution, value-norm attribution,
gradient x input, integrated gradients and the information-flow graph, at T tokens.

    python bench/bench_explain.py [--tokens 1024 4096] [--repeats 3] [--ig-steps 16 (0: skip)]

Prints JSON: medians over repeats (each repeat explains another position, so nothing comes from
the cache), the peak RSS of the process, and the targets of issue 14. Value-norm and direct input
attribution come from the same pass over the layers as the logit attribution, so their time is
the logit attribution's.
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

TARGETS_S = {("logit", 1024): 1.0, ("value_norm", 4096): 2.0, ("grad_x_input", 1024): 10.0, ("flow", 1024): 5.0}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    import llmvis
    from bench_browser import text_of_tokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ig-steps", type=int, default=16)
    args = ap.parse_args()
    out = {"threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None, "results": []}
    for tokens in args.tokens:
        run = llmvis.score(text_of_tokens(tokens))
        t = run.run.num_tokens
        positions = [t - 1 - 7 * r for r in range(args.repeats)]
        row = {"tokens": t}
        row["logit_s"] = statistics.median(timed(lambda p=p: run.explain(p)) for p in positions)
        row["value_norm_s"] = row["logit_s"]  # the same pass (see the docstring)
        gap = run.explain(positions[0])["gap"]
        row["logit_gap"] = gap
        if tokens <= 2048:
            row["grad_x_input_s"] = statistics.median(
                timed(lambda p=p: run.explain(p, method="grad_x_input")) for p in positions)
            row["flow_s"] = statistics.median(
                timed(lambda p=p: run.explain(p, method="flow", threshold=0.05)) for p in positions)
            if args.ig_steps > 0:  # --ig-steps 0 skips the slowest measurement
                ig = {}
                row["integrated_gradients_s"] = timed(
                    lambda: ig.update(run.explain(positions[0], method="integrated_gradients", steps=args.ig_steps)))
                row["integrated_gradients_steps"] = args.ig_steps
                row["integrated_gradients_gap"] = ig["completeness"]["gap"]
            row["flow_nodes"] = len(run.explain(positions[0], method="flow")["nodes"])
        row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        row["targets_s"] = {f"{k[0]}": v for k, v in TARGETS_S.items() if k[1] == tokens}
        out["results"].append(row)
        run.engine.store.remove(run.id)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
