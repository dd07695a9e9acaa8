"""Batch scoring throughput: `llmvis.score_many` over N short texts with one model load.

    python bench/bench_score_many.py [--texts 1000] [--words 12]

Prints JSON: texts/s and tokens/s over the whole batch, and the median time per text.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars shine above quiet "
         "water and old trees whisper about rain wind light stone river city song paper").split()


def main() -> None:
    import llmvis

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--words", type=int, default=12)
    args = ap.parse_args()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(args.words)).capitalize() + "." for _ in range(args.texts)]
    llmvis.score_many(texts[:3], as_dataframe=False)  # model load and warm-up, not timed
    per_text = []
    last = [time.perf_counter()]

    def tick(i, row):
        now = time.perf_counter()
        per_text.append(now - last[0])
        last[0] = now

    t0 = time.perf_counter()
    rows = llmvis.score_many(texts, as_dataframe=False, on_result=tick)
    took = time.perf_counter() - t0
    tokens = sum(r["num_tokens"] for r in rows)
    print(json.dumps({"texts": len(rows), "tokens": tokens, "seconds": round(took, 2),
                      "texts_per_s": round(len(rows) / took, 1), "tokens_per_s": round(tokens / took, 1),
                      "median_ms_per_text": round(1000 * statistics.median(per_text), 2),
                      "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None}, indent=2))


if __name__ == "__main__":
    main()
