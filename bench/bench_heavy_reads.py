"""Heavy reads against the real server: how long `/api/model` and a small generation take while
N heavy views (attention JSON of new layers, logit-lens ranges, head statistics) are in flight on
a long run, and how many of those were admitted or answered 503 (admission control).

    python bench/bench_heavy_reads.py [--tokens 2048] [--readers 12] [--repeats 3]

Prints JSON. Medians over repeats; each repeat uses layers not viewed before (nothing cached).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def call(base, path, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        err.read()
        status = err.code
    return status, time.perf_counter() - t0


def main() -> None:
    from bench_browser import text_of_tokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--readers", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--port", str(port), "--no-history",
                             "--threads", "32"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if call(base, "/api/model", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        req = urllib.request.Request(base + "/api/score", data=json.dumps({"text": text_of_tokens(args.tokens)}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            rid = json.loads(resp.read())["run_id"]
        rounds = []
        for rep in range(args.repeats):
            statuses, model_s, gen_s = [], [], []
            done = threading.Event()

            def reader(i, rep=rep):
                kind = i % 3
                if kind == 0:
                    path = f"/api/attention?run_id={rid}&layer={(rep * args.readers + i) % 30}&head={i % 9}&pool=1024"
                elif kind == 1:
                    a = (rep * args.readers + i) * 37 % max(1, args.tokens - 64)
                    path = f"/api/logit_lens?run_id={rid}&start={a}&end={a + 64}"
                else:
                    path = f"/api/attention_row?run_id={rid}&position={(rep * 97 + i * 13) % args.tokens}"
                statuses.append(call(base, path)[0])

            threads = [threading.Thread(target=reader, args=(i,)) for i in range(args.readers)]
            for th in threads:
                th.start()
            time.sleep(0.3)
            while any(th.is_alive() for th in threads) and len(model_s) < 20:
                model_s.append(call(base, "/api/model")[1])
                time.sleep(0.1)
            gen_s.append(call(base, "/api/generate", {"prompt": "Hi", "max_new_tokens": 4, "temperature": 0})[1])
            for th in threads:
                th.join()
            done.set()
            rounds.append({"model_median_s": statistics.median(model_s), "model_max_s": max(model_s),
                           "generate_s": gen_s[0], "admitted": statuses.count(200), "refused_503": statuses.count(503),
                           "other": [s for s in statuses if s not in (200, 503)]})
        print(json.dumps({
            "tokens": args.tokens, "readers": args.readers, "repeats": args.repeats,
            "model_median_s": round(statistics.median(r["model_median_s"] for r in rounds), 4),
            "model_max_s": round(max(r["model_max_s"] for r in rounds), 4),
            "generate_median_s": round(statistics.median(r["generate_s"] for r in rounds), 3),
            "rounds": rounds,
        }, indent=2))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
