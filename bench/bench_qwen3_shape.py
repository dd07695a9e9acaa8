"""Benchmark: a model of Qwen3-4B-Instruct-2507's exact shape, through the real Engine and API.

No checkpoint can be downloaded here, so the weights are random (built from the published config
numbers: 36 layers, hidden 2,560, 32 query heads over 8 KV heads, head_dim 128, MLP 9,728,
vocabulary 151,936, tied embeddings). Speed and memory depend on the shape, not on the values,
so this is what `llmvis serve --model /path/Qwen3-4B-Instruct-2507` costs on this machine. The
default model's tokenizer stands in (its ids are a subset of the vocabulary); the texts are
meaningless, the costs are real.

Prints one JSON object: build time, RSS, prefill and decode speed, and the first-request time of
each heavy view (one attention layer, the heads grid over all 36 layers, the logit lens, the
similarity), with the peak RSS.

    python bench/bench_qwen3_shape.py [--dtype bfloat16|float32] [--prompt-tokens 256] [--new-tokens 16]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
from pathlib import Path
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN3_4B = dict(  # config.json of Qwen3-4B-Instruct-2507
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
    rope_theta=5_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
    bos_token_id=151643, eos_token_id=151645,
)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--layer", type=int, default=18)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from llmvis.web.app import create_app
    from llmvis.core.config import ModelConfig, ServerConfig
    from llmvis.model.loading import LoadedModel, ModelSource, load_model
    from llmvis.engine.engine import Engine

    dtype = getattr(torch, args.dtype)
    tokenizer = load_model(ModelConfig()).tokenizer  # the default model's; its model is dropped here
    gc.collect()
    rss_start = rss_mb()

    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("meta"):  # no time spent on an init that is overwritten anyway
        model = AutoModelForCausalLM.from_config(Qwen3Config(**QWEN3_4B), attn_implementation="sdpa", dtype=dtype)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    # the rotary inverse frequencies are computed buffers, not weights: build that module for real
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)
    model.tie_weights()
    model.eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    lm = LoadedModel(model=model, tokenizer=tokenizer, name="Qwen3-4B-shape (random weights)",
                     source=ModelSource("folder", Path("."), "Qwen3-4B-shape"),
                     load_s=build_s, from_cache=False)
    rss_model = rss_mb()

    engine = Engine(lm, ServerConfig(max_new_tokens=args.new_tokens, store_budget_bytes=8 << 30))
    client = create_app(engine).test_client()
    words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly brew coffee " * 200).split()
    lo, hi = 1, len(words)
    while lo < hi:  # the word count whose chat-formatted prompt has about --prompt-tokens tokens
        mid = (lo + hi + 1) // 2
        ids = tokenizer.apply_chat_template([{"role": "user", "content": " ".join(words[:mid])}],
                                            add_generation_prompt=True)["input_ids"]
        lo, hi = (mid, hi) if len(ids) <= args.prompt_tokens else (lo, mid - 1)
    body = {"prompt": " ".join(words[:lo]), "temperature": 0, "max_new_tokens": args.new_tokens}

    t = time.perf_counter()
    resp = client.post("/api/generate", json=body)
    generate_s = time.perf_counter() - t
    run = resp.get_json()
    assert resp.status_code == 200, run
    run_obj = engine.get_run(run["run_id"])
    steps = run_obj.result.step_s
    decode_tps = len(steps) / sum(steps) if steps else float("nan")
    prefill_s = run_obj.result.generate_s - sum(steps)

    def view(path, **query):
        t0 = time.perf_counter()
        r = client.get(path, query_string={"run_id": run["run_id"], **query})
        assert r.status_code == 200, (path, r.get_json())
        return round(time.perf_counter() - t0, 3), len(r.data)

    views = {
        "attention_layer_json": view("/api/attention", layer=args.layer, head="mean"),
        "attention_layer_f16_other_layer": view("/api/attention", layer=args.layer + 1, head=5, format="f16"),
        "hidden_similarity": view("/api/hidden_similarity"),
        "embedding_projection": view("/api/embedding_projection", layer=args.layer),
        "heads_grid_all_layers": view("/api/attention_insights"),
        # the Layers tab's default request: the positions that predict generated tokens
        "logit_lens_generated_window": view("/api/logit_lens", start=run["num_prompt_tokens"] - 1),
        "logit_lens_whole": view("/api/logit_lens"),
    }
    print(json.dumps({
        "benchmark": "qwen3_4b_shape",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "dtype": args.dtype,
        "parameters": params,
        "build_s": round(build_s, 1),
        "rss_mb": {"before_model": rss_start, "with_model": rss_model, "peak": peak_rss_mb()},
        "num_tokens": run["num_tokens"],
        "prompt_tokens": run["num_prompt_tokens"],
        "new_tokens": len(steps),
        "generate_request_s": round(generate_s, 2),
        "prefill_s": round(prefill_s, 2),
        "prefill_tokens_per_s": round(run["num_prompt_tokens"] / prefill_s, 1),
        "decode_tokens_per_s": round(decode_tps, 2),
        "run_bytes": run_obj.nbytes,
        "views_first_request_s_and_bytes": views,
    }, indent=2))


if __name__ == "__main__":
    main()
