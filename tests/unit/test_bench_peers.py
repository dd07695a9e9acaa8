"""bench/bench_peers.py cannot rot: its quick path runs end to end, missing peers are skipped, the
memory watchdog kills and reports "oom". No timing is asserted (speed goals live in the bench's JSON)."""
import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "bench_peers.py"


def bench(*args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_quick_scores_a_short_text_with_llmvis_and_hf_and_they_agree():
    done = bench("--quick")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["benchmark"] == "peers" and report["threads"] == 1
    entry = report["workloads"]["W4_T64"]
    for tool in ("llmvis", "hf"):
        res = entry[tool]
        assert res["status"] == "ok", res
        assert res["torch_threads"] == 1 and res["measurements"] == 1
        assert res["wall_s_median"] > 0 and res["cpu_s_median"] > 0 and res["process_peak_rss_gb_max"] > 0.3
        assert len(res["check"]) == 16  # 8 next-token probs, then their 8 ranks
    # llmvis's recorded prob and rank against the bench's own HF forward + softmax
    assert entry["llmvis"]["check"][8:] == entry["hf"]["check"][8:]
    assert entry["ratios_llmvis_over_peer"]["hf"]["check_max_abs_diff"] <= 1e-5
    ratio = entry["ratios_llmvis_over_peer"]["hf"]
    assert ratio["time"] == pytest.approx(entry["llmvis"]["wall_s_median"] / entry["hf"]["wall_s_median"], abs=2e-3)


@pytest.mark.skipif(find_spec("transformer_lens") is not None, reason="TransformerLens is installed here")
def test_a_peer_that_is_not_installed_is_skipped():
    done = bench("--child", "--tool", "transformer_lens", "--workload", "W2", "--size", "64", "--threads", "1",
                 "--repeats-in", "1", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["status"] == "skipped" and res["reason"].startswith("not installed")


def test_the_watchdog_reports_oom_above_the_limit():
    done = bench("--quick", "--mem-limit-gb", "0.15", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    entry = json.loads(done.stdout)["workloads"]["W4_T64"]
    for tool in ("llmvis", "hf"):
        assert entry[tool]["status"] == "oom", entry[tool]
        assert entry[tool]["rss_at_kill"] > 0.15 * 2**30
    assert entry["ratios_llmvis_over_peer"] == {}


def test_unknown_workload_is_refused():
    done = bench("--workloads", "W9", timeout=60)
    assert done.returncode == 2 and "invalid choice" in done.stderr
