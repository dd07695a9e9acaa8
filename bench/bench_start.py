"""Benchmark: time from `llmvis serve` to a ready /api/model, cold (empty cache) and warm.

Prints one JSON object with the median of --repeats starts of each kind.

    python bench/bench_start.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_once(cache_dir: str) -> float:
    port = free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--port", str(port), "--cache-dir", cache_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cold, warm = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="llmvis-bench-cache-") as cache:
            cold.append(start_once(cache))  # converts the GGUF and writes the cache
            warm.append(start_once(cache))  # loads the cache
    print(json.dumps({
        "benchmark": "start",
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "cold_start_s_median": round(statistics.median(cold), 2),
        "warm_start_s_median": round(statistics.median(warm), 2),
        "cold_start_s": [round(x, 2) for x in cold],
        "warm_start_s": [round(x, 2) for x in warm],
        "targets": {"cold_s": 30, "warm_s": 8},
    }, indent=2))


if __name__ == "__main__":
    main()
