"""Load: 16 concurrent clients against the real server (waitress), mixing generate, attention and
token_probs. Every request ends in 2xx or a clear 503 with Retry-After; no run's tokens belong to
another prompt; the server stays up. Counts go to artifacts/load_counts.json."""
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.model
CLIENTS = 16
ROUNDS = 3
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, timeout=300):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("load") / "server.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--port", str(port), "--threads", "24",
                                 "--max-new-tokens", "16"], stdout=fh, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail("server exited:\n" + log.read_text()[-4000:])
        try:
            if call(base, "GET", "/api/model", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server not ready:\n" + log.read_text()[-4000:])
        time.sleep(0.2)
    yield base, proc, log
    proc.terminate()
    proc.wait(timeout=30)


def test_sixteen_concurrent_clients(server):
    base, proc, log = server
    counts = {"requests": 0, "2xx": 0, "503": 0, "other": 0, "mixed_runs": 0, "runs": 0}
    lock = threading.Lock()
    problems = []

    def record(status, headers, payload, what):
        with lock:
            counts["requests"] += 1
            if 200 <= status < 300:
                counts["2xx"] += 1
            elif status in (429, 503):
                counts["503"] += 1
                body = json.loads(payload)
                if not headers.get("Retry-After") or body.get("status") != status or not body.get("error"):
                    problems.append(f"{what}: {status} without Retry-After or error shape: {headers} {body}")
            else:
                counts["other"] += 1
                problems.append(f"{what}: unexpected {status}: {payload[:300]!r}")

    def client(i):
        rng = random.Random(i)
        word = f"zebra{i}q" if i % 2 else f"violin{i}q"
        for r in range(ROUNDS):
            prompt = f"Repeat exactly this word: {word}"
            for attempt in range(120):
                status, headers, payload = call(base, "POST", "/api/generate",
                                                {"prompt": prompt, "temperature": 0, "max_new_tokens": 4})
                record(status, headers, payload, f"client {i} generate")
                if status != 503:
                    break
                time.sleep(min(float(headers.get("Retry-After", 1)), 1.0) * (0.3 + 0.7 * rng.random()))
            if status != 200:
                with lock:
                    problems.append(f"client {i} never got its run through: {status}")
                continue
            with lock:
                counts["runs"] += 1
            run = json.loads(payload)
            text = "".join(t["text"] for t in run["tokens"] if t["source"] == "prompt")
            if word not in text or any(f"zebra{j}q" in text or f"violin{j}q" in text for j in range(CLIENTS) if j != i):
                with lock:
                    counts["mixed_runs"] += 1
            rid, n = run["run_id"], len(run["tokens"])
            record(*call(base, "GET", f"/api/attention?run_id={rid}&layer={rng.randrange(30)}&head=mean&format=f16"), "attention")
            record(*call(base, "GET", f"/api/token_probs?run_id={rid}&position={rng.randrange(1, n)}&top_n=20"), "token_probs")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=540)
    assert not any(t.is_alive() for t in threads), "clients did not finish"
    assert not problems, problems[:5]
    assert counts["mixed_runs"] == 0
    assert counts["runs"] == CLIENTS * ROUNDS  # every client's every run got through, in the end
    assert proc.poll() is None, "server died"
    assert call(base, "GET", "/api/model")[0] == 200
    out = ROOT / "artifacts"
    out.mkdir(exist_ok=True)
    (out / "load_counts.json").write_text(json.dumps(counts | {"clients": CLIENTS}))
