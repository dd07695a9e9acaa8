"""Benchmark: where the decode time goes per token, and tokens/s against model.generate.

Runs llmvis's decode loop and a plain `model.generate` of the same number of tokens, alternating,
in one process; then times the pieces of one step on their own (the forward pass with hidden
states, the LM head, the sampler and its recording). Prints one JSON object of medians.

    python bench/bench_decode.py [--new-tokens 128] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def median_time(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch

    from llmvis.core.config import ModelConfig
    from llmvis.engine.decode import GenerationParams, _Recorder, decode
    from llmvis.model.introspect import logits_from_hidden
    from llmvis.model.loading import load_model

    lm = load_model(ModelConfig())
    model, tok = lm.model, lm.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
                                  add_generation_prompt=True)["input_ids"]
    n = args.new_tokens
    inp = torch.tensor([ids])

    def ours(temperature):
        return decode(model, ids, GenerationParams(temperature, 50, 0.95, n, seed=1), stop_ids=set())

    def plain(sample):
        with torch.inference_mode():
            kw = dict(do_sample=True, temperature=0.7, top_k=50, top_p=0.95) if sample else dict(do_sample=False)
            return model.generate(inp, max_new_tokens=n, min_new_tokens=n, pad_token_id=tok.eos_token_id, **kw)

    ours(0.0), plain(False)  # warm-up
    rows = {"greedy": ([], []), "sampling": ([], [])}
    for _ in range(args.repeats):
        for mode, temp in (("greedy", 0.0), ("sampling", 0.7)):
            t = time.perf_counter()
            res = ours(temp)
            rows[mode][0].append(time.perf_counter() - t)
            assert len(res.ids) - len(ids) == n
            t = time.perf_counter()
            plain(mode == "sampling")
            rows[mode][1].append(time.perf_counter() - t)

    # the pieces of one step, timed on their own at a context of len(ids) + n/2
    base = model.get_decoder()
    with torch.inference_mode():
        out = base(input_ids=torch.tensor([ids + res.ids[len(ids):len(ids) + n // 2]]), use_cache=True)
        cache = out.past_key_values
        one = torch.tensor([[res.ids[-1]]])

        def forward_with_states():
            base(input_ids=one, past_key_values=cache, use_cache=True, output_hidden_states=True)
            cache.crop(-1)  # drop the token just added, so every call sees the same context

        final = out.last_hidden_state[0, -1]
        logits = logits_from_hidden(model, final)
        rec = _Recorder(4, 100)
        gen = torch.Generator().manual_seed(0)
        params = GenerationParams(0.7, 50, 0.95, 1, seed=0)
        greedy = GenerationParams(0.0, 50, 0.95, 1, seed=0)
        pieces = {
            "forward_with_hidden_states_s": median_time(forward_with_states, 30),
            "lm_head_s": median_time(lambda: logits_from_hidden(model, final), 30),
            "sampler_and_record_sampling_s": median_time(lambda: rec.sampled(1, logits, params, gen), 30),
            "sampler_and_record_greedy_s": median_time(lambda: rec.sampled(1, logits, greedy, gen), 30),
        }
    step = sum(v for k, v in pieces.items() if k != "sampler_and_record_greedy_s")
    out = {
        "benchmark": "decode",
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "model": lm.name,
        "prompt_tokens": len(ids),
        "new_tokens": n,
        "repeats": args.repeats,
    }
    for mode, (a, b) in rows.items():
        ratios = [x / y for x, y in zip(a, b)]
        out[mode] = {
            "llmvis_tokens_per_s_median": round(n / statistics.median(a), 2),
            "model_generate_tokens_per_s_median": round(n / statistics.median(b), 2),
            "time_ratio_llmvis_over_generate_median": round(statistics.median(ratios), 4),
        }
    out["step_pieces_median_s"] = {k: round(v, 5) for k, v in pieces.items()}
    out["step_share"] = {k: round(v / step, 3) for k, v in pieces.items() if k != "sampler_and_record_greedy_s"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
