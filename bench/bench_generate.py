"""Benchmark: /api/generate (with the analysis the first view needs) vs plain model.generate.

Prints one JSON object. Each figure is the median of --repeats runs, and the overhead
ratio is measured within this one process, alternating the two, so machine noise
affects both sides alike.

    python bench/bench_generate.py [--new-tokens 128] [--repeats 5] [--attention-layer 15]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--attention-layer", type=int, default=15)
    args = ap.parse_args()

    import torch

    from llmvis.web.app import create_app
    from llmvis.core.config import ModelConfig, ServerConfig
    from llmvis.model.loading import load_model
    from llmvis.engine.engine import Engine

    t0 = time.perf_counter()
    lm = load_model(ModelConfig(model=args.model))
    load_s = time.perf_counter() - t0
    eng = Engine(lm, ServerConfig(max_new_tokens=max(args.new_tokens, 1024)))
    client = create_app(eng).test_client()
    prompt = "Write a long, detailed story about a dragon who learns to paint."
    body = {"prompt": prompt, "temperature": 0, "max_new_tokens": args.new_tokens}
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)["input_ids"]
    inp = torch.tensor([ids], device=lm.device)

    def api_generate():
        t = time.perf_counter()
        resp = client.post("/api/generate", json=body)
        assert resp.status_code == 200, resp.get_json()
        return time.perf_counter() - t, resp.get_json()

    def plain_generate(n):
        t = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(inp, do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=lm.tokenizer.eos_token_id)
        return time.perf_counter() - t, out.shape[1] - inp.shape[1]

    api_generate()  # warm-up both paths
    _, first = api_generate()
    n_gen = len(first["tokens"]) - first["num_prompt_tokens"]
    plain_generate(n_gen)
    api_s, plain_s, ratios, attn_s = [], [], [], []
    for _ in range(args.repeats):
        a, r = api_generate()
        p, _ = plain_generate(n_gen)
        api_s.append(a)
        plain_s.append(p)
        ratios.append(a / p)
        run = eng.store.get(r["run_id"])
        t = time.perf_counter()
        resp = client.get(f"/api/attention?run_id={run.id}&layer={args.attention_layer}&head=mean")
        attn_s.append(time.perf_counter() - t)
        assert resp.status_code == 200
    out = {
        "benchmark": "generate_overhead",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "device": str(lm.device), "dtype": str(lm.dtype)},
        "model": lm.name,
        "model_load_s": round(load_s, 3),
        "prompt_tokens": len(ids),
        "new_tokens": n_gen,
        "repeats": args.repeats,
        "api_generate_s_median": round(statistics.median(api_s), 4),
        "model_generate_s_median": round(statistics.median(plain_s), 4),
        "overhead_ratio_median": round(statistics.median(ratios), 4),
        "api_tokens_per_s_median": round(n_gen / statistics.median(api_s), 2),
        "model_tokens_per_s_median": round(n_gen / statistics.median(plain_s), 2),
        "attention_layer_first_request_s_median": round(statistics.median(attn_s), 4),
        "attention_num_tokens": len(first["tokens"]),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
