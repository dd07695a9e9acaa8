"""Interventions (issue 15) on the default model: an ablation run against one prefill, and the two
activation patching sweeps, in one process with the same threads.

    python bench/bench_intervene.py [--prompt 64] [--forced 64] [--positions 40] [--repeats 3]

- ablation: one query head zeroed, the parent's 64-token prompt re-run with its 64 generated
  tokens teacher-forced (POST /api/intervene/ablate's work, effects not included), against one
  prefill of the same 128 tokens with its statistics (POST /api/score's work) and a bare HF forward;
- residual sweep: every (layer, position) of a 40-token clean / corrupted pair (30 x 40 cells);
- head sweep: every (layer, head), all positions (30 x 9 cells).

Prints JSON: medians over the repeats (the sweeps: one run each unless --sweep-repeats) and the
ratio ablation / prefill.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch
    from bench_browser import text_of_tokens

    from llmvis.core.config import ModelConfig, ServerConfig
    from llmvis.core.tokens import Prompt
    from llmvis.engine.decode import GenerationParams
    from llmvis.engine.engine import Engine
    from llmvis.engine.jobs import Job
    from llmvis.engine.run import new_run_id
    from llmvis.model.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--forced", type=int, default=64)
    ap.add_argument("--positions", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep-repeats", type=int, default=1)
    args = ap.parse_args()
    lm = load_model(ModelConfig())
    eng = Engine(lm, ServerConfig())
    tok = lm.tokenizer
    words = tok(text_of_tokens(args.prompt * 2))["input_ids"]
    prompt_ids = words[: args.prompt]
    # the parent: a 64-token prompt and exactly 64 sampled tokens (EOS does not stop it here)
    stop_ids, eng.stop_ids = eng.stop_ids, set()
    job = eng._admit(Job(new_run_id(), Prompt(prompt_ids, ["user"] * len(prompt_ids), "", False),
                         GenerationParams(0.7, 50, 0.95, args.forced, 1), False))
    parent = eng.execute(job)
    eng.stop_ids = stop_ids
    assert parent.num_tokens == args.prompt + args.forced, parent.num_tokens
    score_text = tok.decode(parent.ids)

    def ablation():
        run = eng.ablate(parent, [{"kind": "head", "layer": 14, "head": 3}], "zero")
        eng.store.remove(run.id)
        parent.children.clear()

    def prefill():
        run = eng.execute(eng.prepare_score(score_text))
        eng.store.remove(run.id)

    def hf():
        with torch.inference_mode():
            lm.model(input_ids=torch.tensor([parent.ids]), output_hidden_states=True)

    times = {"ablation": [], "prefill": [], "hf_forward": []}
    ablation(), prefill(), hf()  # warm-up
    order = list(times)
    for rep in range(args.repeats):
        for name in (order if rep % 2 == 0 else order[::-1]):
            fn = {"ablation": ablation, "prefill": prefill, "hf_forward": hf}[name]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    clean = words[: args.positions]
    corrupted = list(clean)
    for p in (3, 7, 11):  # three tokens changed
        corrupted[p] = (corrupted[p] + 17) % int(lm.config.vocab_size)
    metric = {"type": "logit_diff", "token_a": clean[-1], "token_b": corrupted[3]}
    sweeps = {}
    for sweep in ("residual", "heads"):
        runs = []
        for _ in range(args.sweep_repeats):
            t0 = time.perf_counter()
            out = eng.patch(clean, corrupted, dict(metric), sweep, "all", job_id="bec0ffee")
            runs.append(time.perf_counter() - t0)
        sweeps[sweep] = {"seconds": statistics.median(runs), "cells": int(out["values"].size),
                         "ms_per_cell": 1000 * statistics.median(runs) / out["values"].size,
                         "progress": eng.read_job("bec0ffee")}
    print(json.dumps({
        "model": lm.name, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "ablation_run": {"prompt_tokens": args.prompt, "forced_tokens": args.forced, "median_s": med["ablation"]},
        "prefill_128": {"tokens": parent.num_tokens, "median_s": med["prefill"]},
        "hf_forward_128": {"median_s": med["hf_forward"]},
        "ablation_over_prefill": med["ablation"] / med["prefill"],
        "residual_sweep": sweeps["residual"] | {"layers": lm.num_layers, "positions": args.positions},
        "head_sweep": sweeps["heads"] | {"layers": lm.num_layers, "heads": lm.num_heads, "positions": args.positions},
        "targets": {"ablation_over_prefill": 2.0, "residual_sweep_s": 120, "head_sweep_s": 60},
    }, indent=2))


if __name__ == "__main__":
    main()
