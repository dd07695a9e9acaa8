"""Scoring at forward speed: llmvis's teacher-forced statistics of a T-token text (POST /api/score's
work: every layer's states, prob, rank, entropy and the top-100 at every position) against an HF
forward computing the same statistics, alternating in one process, same threads.

    python bench/bench_score.py [--tokens 2048] [--repeats 5]

Prints JSON: medians and the ratio llmvis / HF.
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
    from llmvis.engine.engine import Engine
    from llmvis.model.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    lm = load_model(ModelConfig())
    eng = Engine(lm, ServerConfig())
    text = text_of_tokens(args.tokens)
    ids = eng.prepare_score(text).prompt.ids
    eng.jobs = type(eng.jobs)(eng.config.max_queue)  # the probe job above was never run

    def hf():
        with torch.inference_mode():
            out = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
            logp = torch.log_softmax(out.logits[0, :-1].float(), -1)  # (T-1, V)
            nxt = torch.tensor(ids[1:])
            chosen = logp.gather(1, nxt[:, None])
            (logp > chosen).sum(-1)  # rank
            (-(logp.exp() * logp).nan_to_num(0.0).sum(-1))  # entropy
            torch.topk(logp, 100, dim=-1)
            torch.stack(out.hidden_states)

    def ours():
        run = eng.execute(eng.prepare_score(text))
        eng.store.remove(run.id)

    times = {"hf": [], "llmvis": []}
    hf(), ours()  # warm-up
    for rep in range(args.repeats):
        for name, fn in ((("hf", hf), ("llmvis", ours)) if rep % 2 == 0 else (("llmvis", ours), ("hf", hf))):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"tokens": len(ids), "repeats": args.repeats, "threads": torch.get_num_threads(),
                      "hf_forward_with_stats_s": round(med["hf"], 3), "llmvis_score_s": round(med["llmvis"], 3),
                      "ratio": round(med["llmvis"] / med["hf"], 3)}, indent=2))


if __name__ == "__main__":
    main()
