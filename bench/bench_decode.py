"""Benchmark: where the decode time goes per token, and tokens/s against model.generate.

Runs llmvis's decode loop (every layer's states and the per-token statistics) and a plain
`model.generate` of the same number of tokens, alternating in one process (the order flips each
repeat), greedy and sampled, for each --new-tokens; then times the pieces of one step on their own
(the forward pass with hidden states, the LM head, the sampler and its recording). Prints one JSON
object of medians: wall time and the process's CPU time (the steadier figure on a shared machine,
with OMP_NUM_THREADS=1 both sides use one core), and `ratios`, llmvis / generate, per length and mode.

    OMP_NUM_THREADS=1 python bench/bench_decode.py [--new-tokens 128 512] [--repeats 5] [--modes greedy sampling] [--no-pieces]
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
    ap.add_argument("--new-tokens", type=int, nargs="+", default=[128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", nargs="+", default=["greedy", "sampling"], choices=["greedy", "sampling"])
    ap.add_argument("--no-pieces", action="store_true", help="skip timing the pieces of one step")
    args = ap.parse_args()

    import torch

    from llmvis.core.config import ModelConfig
    from llmvis.engine.decode import GenerationParams, decode
    from llmvis.model.loading import load_model

    lm = load_model(ModelConfig())
    model, tok = lm.model, lm.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
                                  add_generation_prompt=True)["input_ids"]
    inp = torch.tensor([ids])

    def ours(temperature, n):
        return decode(model, ids, GenerationParams(temperature, 50, 0.95, n, seed=1), stop_ids=set())

    def plain(sample, n):
        with torch.inference_mode():
            kw = dict(do_sample=True, temperature=0.7, top_k=50, top_p=0.95) if sample else dict(do_sample=False)
            return model.generate(inp, max_new_tokens=n, min_new_tokens=n, pad_token_id=tok.eos_token_id, **kw)

    ours(0.0, 16), plain(False, 16)  # warm-up
    results: dict = {}
    for n in args.new_tokens:
        rows = {mode: {"llmvis": ([], []), "generate": ([], [])} for mode in args.modes}
        for rep in range(args.repeats):
            for mode, temp in [(m, t) for m, t in (("greedy", 0.0), ("sampling", 0.7)) if m in args.modes]:
                sides = [("llmvis", lambda: ours(temp, n)), ("generate", lambda: plain(mode == "sampling", n))]
                for side, fn in sides if rep % 2 == 0 else sides[::-1]:
                    w, c = time.perf_counter(), time.process_time()
                    res = fn()
                    rows[mode][side][0].append(time.perf_counter() - w)
                    rows[mode][side][1].append(time.process_time() - c)
                    if side == "llmvis":
                        assert len(res.ids) - len(ids) == n
                        generated = res.ids[len(ids):]
        results[n] = rows
    pieces = {} if args.no_pieces else step_pieces(model, ids, generated, args.new_tokens[-1])
    out = {
        "benchmark": "decode",
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "model": lm.name,
        "prompt_tokens": len(ids),
        "repeats": args.repeats,
        "ratios": {},
    }
    for n, rows in results.items():
        for mode, sides in rows.items():
            (aw, ac), (bw, bc) = sides["llmvis"], sides["generate"]
            out[f"{mode}_{n}"] = {
                "llmvis_wall_s_median": round(statistics.median(aw), 3),
                "generate_wall_s_median": round(statistics.median(bw), 3),
                "llmvis_cpu_s_median": round(statistics.median(ac), 3),
                "generate_cpu_s_median": round(statistics.median(bc), 3),
                "llmvis_tokens_per_s_median": round(n / statistics.median(aw), 2),
                "generate_tokens_per_s_median": round(n / statistics.median(bw), 2),
            }
            out["ratios"][f"{mode}_{n}"] = {
                "wall": round(statistics.median(a / b for a, b in zip(aw, bw)), 4),
                "cpu": round(statistics.median(a / b for a, b in zip(ac, bc)), 4),
            }
    if pieces:
        step = sum(v for k, v in pieces.items() if k != "sampler_and_record_greedy_s")
        out["step_pieces_median_s"] = {k: round(v, 5) for k, v in pieces.items()}
        out["step_share"] = {k: round(v / step, 3) for k, v in pieces.items() if k != "sampler_and_record_greedy_s"}
    print(json.dumps(out, indent=2))


def step_pieces(model, ids, generated, n) -> dict:
    """Each piece of one decode step timed on its own, at a context of len(ids) + n/2."""
    import torch

    from llmvis.engine.decode import GenerationParams, _Recorder
    from llmvis.model.introspect import logits_from_hidden

    base = model.get_decoder()
    with torch.inference_mode():
        out = base(input_ids=torch.tensor([ids + generated[:n // 2]]), use_cache=True)
        cache = out.past_key_values
        one = torch.tensor([[generated[-1]]])

        def forward_with_states():
            base(input_ids=one, past_key_values=cache, use_cache=True, output_hidden_states=True)
            cache.crop(-1)  # drop the token just added, so every call sees the same context

        final = out.last_hidden_state[0, -1]
        logits = logits_from_hidden(model, final)
        rec = _Recorder(4, 100)
        gen = torch.Generator().manual_seed(0)
        params = GenerationParams(0.7, 50, 0.95, 1, seed=0)
        greedy = GenerationParams(0.0, 50, 0.95, 1, seed=0)
        return {
            "forward_with_hidden_states_s": median_time(forward_with_states, 30),
            "lm_head_s": median_time(lambda: logits_from_hidden(model, final), 30),
            "sampler_and_record_sampling_s": median_time(lambda: rec.sampled(1, logits, params, gen), 30),
            "sampler_and_record_greedy_s": median_time(lambda: rec.sampled(1, logits, greedy, gen), 30),
        }


if __name__ == "__main__":
    main()
