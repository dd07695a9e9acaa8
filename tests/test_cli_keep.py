"""`llmvis analyze` and `llmvis show` as a user runs them (subprocesses), and the Python API."""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

HISTORY_FLAGS = ("--data-dir", "--no-history", "--history-budget-mb", "--max-import-mb")


def run_cli(*args, timeout=300, env=None):
    env = os.environ | {"HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "llmvis", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_error_line(res, message):
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    lines = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_help_explains_every_flag():
    serve = run_cli("serve", "--help").stdout
    assert all(flag in serve for flag in HISTORY_FLAGS)
    analyze = run_cli("analyze", "--help").stdout
    for flag in ("--out", "--model", "--temperature", "--top-k", "--top-p", "--max-new-tokens", "--seed", "--system",
                 "--share-html", "--no-chat-template"):
        assert flag in analyze, flag
    show = run_cli("show", "--help").stdout
    assert all(flag in show for flag in ("--port", "--model", "--open", *HISTORY_FLAGS))


@pytest.mark.parametrize("args, message", [
    (["analyze", "hi", "--out", "/definitely/not/here/run.llmvis"], "does not exist"),
    (["analyze", "hi", "--out", "x.llmvis", "--temperature", "-1"], "temperature: must be >= 0"),
    (["analyze", "hi", "--out", "x.llmvis", "--top-p", "0"], "top_p"),
    (["analyze", "  ", "--out", "x.llmvis"], "prompt: must not be empty"),
    (["show", "/definitely/not/here.llmvis"], "no such file"),
    (["show", "/"], "not a file"),
])
def test_bad_input_is_one_error_line_and_exit_1(args, message, tmp_path):
    res = run_cli(*args, timeout=60, env={"LLMVIS_DATA_DIR": str(tmp_path)})
    one_error_line(res, message)


def test_show_refuses_an_unreadable_bundle(tmp_path):
    bad = tmp_path / "bad.llmvis"
    bad.write_bytes(b"\x00" * 64)
    one_error_line(run_cli("show", str(bad), timeout=60), "bundle: is not a llmvis bundle")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.model
def test_analyze_then_show_then_python_load(tmp_path):
    out = tmp_path / "run.llmvis"
    html = tmp_path / "run.html"
    res = run_cli("analyze", "What is 2+2?", "--temperature", "0", "--max-new-tokens", "6", "--seed", "3",
                  "--out", str(out), "--share-html", str(html))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Generating" in res.stderr and "tok" in res.stderr  # the progress bar, on stderr
    assert f"wrote {out}" in res.stdout and out.stat().st_size > 100_000 and html.stat().st_size > 1_000_000

    import llmvis

    run = llmvis.load(out)
    assert run.params["seed"] == 3 and run.params["temperature"] == 0
    assert len(run.tokens) == run.num_prompt_tokens + 6 or run.finish_reason == "eos"

    port = free_port()
    data_dir = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "llmvis", "show", str(out), "--port", str(port),
                             "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    try:
        line = proc.stdout.readline()  # printed once the run is imported, just before serving
        found = re.search(rf"http://127\.0\.0\.1:{port}/\?run=([0-9a-f]{{16}})", line)
        assert found, (line, proc.stderr.read() if proc.poll() else "")
        new_id = found.group(1)
        assert new_id != run.id  # an import always gets a fresh id
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/run?run_id={new_id}", timeout=2) as resp:
                    served = json.loads(resp.read())
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "show did not serve"
                time.sleep(0.2)
        assert [t["id"] for t in served["tokens"]] == [t["id"] for t in run.tokens]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/history", timeout=5) as resp:
            assert [r["run_id"] for r in json.loads(resp.read())["runs"]] == [new_id]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.model
def test_python_api_shares_the_engine_and_round_trips(default_lm, tmp_path):
    import llmvis
    from llmvis import pyapi

    run = llmvis.trace("Name a fruit.", temperature=0, max_new_tokens=5, seed=1)
    again = llmvis.trace("Name a fruit.", temperature=0, max_new_tokens=5, seed=1)
    assert run.engine is again.engine is pyapi.engine_for("default")  # the model loads once per spec
    assert [t["id"] for t in run.tokens] == [t["id"] for t in again.tokens]
    assert run.tokens[0]["prob"] is None and all(0 < t["prob"] <= 1 for t in run.tokens[1:])
    n = len(run.tokens)
    att = run.attention(layer=3, head=2)
    assert att.shape == (n, n) and np.allclose(att.sum(1), 1, atol=1e-3) and np.allclose(np.triu(att, 1), 0)
    probs = run.token_probs(n - 1, top_n=5)
    assert len(probs["candidates"]) == 5 and probs["token"]["id"] == run.tokens[-1]["id"]
    path = run.save(tmp_path / "fruit.llmvis")
    loaded = llmvis.load(path)
    assert loaded.tokens == run.tokens and loaded.params == run.params
    assert np.array_equal(loaded.attention(3, "mean"), run.attention(3, "mean"))
    assert loaded.token_probs(n - 1) == run.token_probs(n - 1)
    from llmvis.core.errors import BadRequest, LlmvisError

    with pytest.raises(BadRequest, match="temperature"):
        llmvis.trace("x", temperature=-1)
    with pytest.raises(LlmvisError, match="no such file"):
        llmvis.load(tmp_path / "missing.llmvis")
    with pytest.raises(BadRequest, match="top_n"):
        run.token_probs(2, top_n=0)


def test_import_llmvis_is_cheap():
    code = "import sys, llmvis; assert callable(llmvis.trace); print(sorted(m for m in ('torch', 'transformers', 'flask') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.model
def test_python_api_scores_text_and_gives_every_head(default_lm):
    import math

    import llmvis

    scored = llmvis.score("The cat sat on the mat because it was warm.")
    d = scored.to_dict()
    from llmvis import pyapi

    assert d["kind"] == "score" and scored.engine is pyapi.engine_for("default")
    probs = [t["prob"] for t in scored.tokens[1:]]
    assert d["score"]["perplexity"] == pytest.approx(math.exp(-sum(map(math.log, probs)) / len(probs)), rel=1e-6)
    heads = scored.attention(5, "all")  # (9, T, T), every query head in one pass
    n = len(scored.tokens)
    assert heads.shape == (9, n, n)
    assert np.allclose(heads.mean(0), scored.attention(5, "mean"), atol=1e-5)
    assert np.allclose(heads[4], scored.attention(5, 4), atol=1e-6)
    lens = scored.logit_lens(start=n - 4, top_k=2)
    assert lens["start"] == n - 4 and len(lens["entropy"][0]) == 4
    from llmvis.core.errors import BadRequest

    with pytest.raises(BadRequest, match="text"):
        llmvis.score("   ")


@pytest.mark.model
def test_run_open_imports_into_a_running_server_or_starts_one(tmp_path):
    """Trace.open(): into a server given by URL (with its token), and, when none answers at the
    default address, into one it starts itself."""
    import llmvis
    from llmvis import pyapi

    run = llmvis.trace("Name a tree.", temperature=0, max_new_tokens=3)
    port = free_port()
    token = "open-test-token-123"
    proc = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--port", str(port), "--token", token,
                             "--data-dir", str(tmp_path / "data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while not pyapi._server_answers(base, token):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        page = run.open(base, token=token, browser=False)
        new_id = re.fullmatch(rf"{base}/\?run=([0-9a-f]{{16}})", page).group(1)
        req = urllib.request.Request(f"{base}/api/run?run_id={new_id}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            served = json.loads(resp.read())
        assert [t["id"] for t in served["tokens"]] == [t["id"] for t in run.tokens]
        with pytest.raises(llmvis.core.errors.LlmvisError, match="refused"):
            run.open(base, token="wrong-token-0000", browser=False)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    started = run.open(browser=False) if not pyapi._server_answers(pyapi.DEFAULT_SERVER, None) else None
    if started is not None:  # nothing listens on :5000 here, so open() started a server of its own
        assert started.startswith("http://127.0.0.1:") and not started.startswith(pyapi.DEFAULT_SERVER + "/")
        with urllib.request.urlopen(started.replace("/?run=", "/api/run?run_id="), timeout=30) as resp:
            assert json.loads(resp.read())["tokens"][-1]["id"] == run.tokens[-1]["id"]
