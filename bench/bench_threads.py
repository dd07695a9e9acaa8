"""Benchmark: model work in a server worker thread vs the main thread, with and without
`store.tune_allocator` (one malloc arena, blocks under 256 MiB from the heap).

The WSGI server runs every request in a worker thread. Without the tuning, glibc gives each
thread an arena whose heaps are capped at 64 MiB, so large tensors are fresh mmaps each time.
Each mode runs in its own process (mallopt cannot be undone): a 4,096-token scored text, then
the Heads grid (every layer's attention) of two such runs, one from the main thread and one from
a worker thread, alternating which goes first. Prints one JSON object of medians.

    python bench/bench_threads.py [--tokens 4000] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def measure(tokens: int, repeats: int, tuned: bool) -> dict:
    import llmvis.web.app
    import llmvis.engine.store

    if not tuned:
        llmvis.engine.store.tune_allocator = llmvis.web.app.tune_allocator = lambda: False
    from bench_browser import text_of_tokens

    from llmvis.web.app import create_app
    from llmvis.core.config import ModelConfig, ServerConfig
    from llmvis.model.loading import load_model
    from llmvis.engine.engine import Engine

    lm = load_model(ModelConfig())
    client = create_app(Engine(lm, ServerConfig())).test_client()
    times = {"main": [], "worker": []}

    def heads(label: str) -> None:
        rid = client.post("/api/score", json={"text": text_of_tokens(tokens)}).get_json()["run_id"]
        t0 = time.perf_counter()
        client.get("/api/attention_insights", query_string={"run_id": rid})
        times[label].append(time.perf_counter() - t0)

    def in_worker() -> None:
        th = threading.Thread(target=heads, args=("worker",))
        th.start()
        th.join()

    for i in range(repeats):
        for fn in ((lambda: heads("main")), in_worker)[:: 1 if i % 2 == 0 else -1]:
            fn()
    return {k: round(statistics.median(v), 3) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mode", choices=["tuned", "untuned"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(measure(args.tokens, args.repeats, args.mode == "tuned")))
        return
    out = {"benchmark": "worker_threads", "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
           "what": "Heads grid of a scored text, server seconds (median)", "tokens": args.tokens}
    for mode in ("untuned", "tuned"):
        cmd = [sys.executable, __file__, "--mode", mode, "--tokens", str(args.tokens), "--repeats", str(args.repeats)]
        out[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        out[mode]["worker_over_main"] = round(out[mode]["worker"] / out[mode]["main"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
