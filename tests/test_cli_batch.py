"""Batch scoring: `llmvis score FILE` (one model load, JSON lines out, resumable, --keep into the
history) and `llmvis.score_many`, whose numbers must equal scoring each text alone."""
import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.model
TEXTS = ["The cat sat on the mat.", "Colourless green ideas sleep furiously.", "一二三四五"]


def run_cli(*args, timeout=300):
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "llmvis", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_score_many_equals_scoring_each_text_alone(default_lm):
    import llmvis
    from llmvis.core.errors import BadRequest

    rows = llmvis.score_many(TEXTS, surprising=3, as_dataframe=False)
    assert [r["index"] for r in rows] == [0, 1, 2]
    for text, row in zip(TEXTS, rows):
        alone = llmvis.score(text)
        want = alone.to_dict()["score"]
        assert row["perplexity"] == pytest.approx(want["perplexity"], rel=1e-9) and row["gltr"] == want["gltr"]
        probs = [t["prob"] for t in alone.tokens[1:]]
        assert row["perplexity"] == pytest.approx(math.exp(-sum(map(math.log, probs)) / len(probs)), rel=1e-6)
        assert sum(row["gltr"].values()) == row["num_scored"] == len(alone.tokens) - 1  # the buckets cover every token
        ents = [t["entropy"] for t in alone.tokens[1:]]
        assert row["mean_entropy"] == pytest.approx(sum(ents) / len(ents), rel=1e-5)
        lowest = sorted(alone.tokens[1:], key=lambda t: t["prob"])[:3]
        assert [s["prob"] for s in row["surprising"]] == [t["prob"] for t in lowest]
    with pytest.raises(BadRequest, match=r"texts\[1\]"):
        llmvis.score_many(["A fine sentence here.", "  "], as_dataframe=False)


def test_score_many_as_a_dataframe(default_lm):
    pandas = pytest.importorskip("pandas")
    import llmvis

    frame = llmvis.score_many(TEXTS[:2], as_dataframe=True)
    assert isinstance(frame, pandas.DataFrame) and list(frame["index"]) == [0, 1]


def test_the_cli_scores_a_file_resumes_and_keeps(tmp_path):
    src = tmp_path / "texts.jsonl"
    src.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(TEXTS[:2])) + "\n\n")
    out = tmp_path / "results.jsonl"
    first = run_cli("score", str(src), "--out", str(out), "--surprising", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1] and all(len(r["surprising"]) == 2 for r in rows)
    assert all(r["perplexity"] == pytest.approx(math.exp(r["mean_nll"])) for r in rows)
    assert "2 scored, 0 already there" in first.stdout and "Scoring" in first.stderr  # progress on stderr
    with open(src, "a") as fh:  # one more text: only it is scored on the next run
        fh.write(json.dumps({"text": TEXTS[2]}) + "\n")
    data = tmp_path / "data"
    again = run_cli("score", str(src), "--out", str(out), "--keep", "--data-dir", str(data))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 scored, 2 already there" in again.stdout
    assert [json.loads(line)["index"] for line in out.read_text().splitlines()] == [0, 1, 2]
    from llmvis.keep.history import History

    rows, total, _ = History(data, 1 << 30).list()
    assert total == 1 and rows[0]["kind"] == "score"  # --keep saved the newly scored text as a run


def test_the_cli_names_what_is_wrong_with_the_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    res = run_cli("score", str(bad))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "Error: bad.jsonl:2: field 'text' must be a non-empty string" in res.stderr
    other = tmp_path / "texts.csv"
    other.write_text("a,b\n")
    assert "expected a .jsonl or .txt file" in run_cli("score", str(other)).stderr
    assert "no such file" in run_cli("score", str(tmp_path / "missing.txt")).stderr
    txt = tmp_path / "lines.txt"
    txt.write_text("first text\n\nsecond text\n")
    ok = run_cli("score", str(txt))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert len((tmp_path / "lines.scores.jsonl").read_text().splitlines()) == 2  # one per non-empty line
