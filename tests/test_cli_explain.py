"""`llmvis explain FILE` as a user runs it: the same JSON as Trace.explain, a clear error line."""
import json
import os
import subprocess
import sys

import pytest


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "llmvis", *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ | {"HF_HUB_OFFLINE": "1"})


def test_help_names_every_flag():
    out = run_cli("explain", "--help").stdout
    for flag in ("--position", "--target", "--contrast", "--method", "--steps", "--threshold", "--out", "--model"):
        assert flag in out, flag
    assert "explain" in run_cli("--help").stdout


@pytest.mark.model
def test_explain_a_bundle_gives_the_python_apis_numbers(default_lm, tmp_path):
    import llmvis

    trace = llmvis.trace("Name a colour.", temperature=0, max_new_tokens=4)
    path = trace.save(tmp_path / "run.llmvis")
    pos = len(trace.tokens) - 2
    res = run_cli("explain", str(path), "--position", str(pos), "--contrast", "11", "--out", str(tmp_path / "e.json"))
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads((tmp_path / "e.json").read_text())
    want = trace.explain(pos, contrast=11)
    for key in ("heads", "mlp", "attention", "embedding", "logit", "target", "contrast"):
        assert got[key] == want[key], key
    assert got["gap"] < 1e-3

    bad = run_cli("explain", str(path), "--position", "0")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.startswith("Error:") and "position" in line], bad.stderr
