"""The history folder without a model: eviction by budget, two real processes, atomic files, escaping."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmvis.core.errors import BadRequest, RunNotFound
from llmvis.keep.history import History, atomic_write
from llmvis.web.share import inline_script, json_for_html

ROOT = Path(__file__).resolve().parents[2]


def row(run_id: str, created: float) -> dict:
    return {"id": run_id, "title": f"run {run_id}", "created": created, "model": "m", "kind": "generate",
            "num_tokens": 3, "num_prompt": 1, "finish_reason": "eos"}


def rid(i: int) -> str:
    return f"{i:016x}"


def test_oldest_runs_are_evicted_over_budget(tmp_path):
    hist = History(tmp_path, budget_bytes=250)
    evicted = []
    for i in range(5):
        evicted += hist.save(row(rid(i), created=1000.0 + i), bytes([i]) * 100)
    assert evicted == [rid(0), rid(1), rid(2)]
    rows, total, nbytes = hist.list()
    assert [r["id"] for r in rows] == [rid(4), rid(3)] and total == 2 and nbytes == 200
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"{rid(3)}.llmvis", f"{rid(4)}.llmvis"]
    assert hist.read(rid(4)) == bytes([4]) * 100 and hist.read(rid(0)) is None
    # a single run over the whole budget is kept (the newest run is never evicted)
    hist.save(row(rid(9), created=2000.0), b"x" * 1000)
    assert [r["id"] for r in hist.list()[0]] == [rid(9)]


def test_rename_delete_and_bad_ids(tmp_path):
    hist = History(tmp_path, budget_bytes=1 << 20)
    hist.save(row(rid(1), 1.0), b"abc")
    assert hist.rename(rid(1), "new")["title"] == "new"
    with pytest.raises(RunNotFound):
        hist.rename(rid(2), "x")
    hist.delete(rid(1))
    assert hist.read(rid(1)) is None and not (tmp_path / "runs" / f"{rid(1)}.llmvis").exists()
    with pytest.raises(RunNotFound):
        hist.delete(rid(1))
    for bad in ("../../etc/passwd", "ABCDEF01", "", "a" * 40):
        assert hist.read(bad) is None and hist.get(bad) is None
        with pytest.raises(BadRequest, match="run_id"):
            hist.path_of(bad)


def test_atomic_write_leaves_no_partial_or_temp_file(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, b"one")
    atomic_write(target, b"two" * 1000)
    assert target.read_bytes() == b"two" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


WRITER = textwrap.dedent("""
    import random, sys
    from llmvis.keep.history import History
    folder, who, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    hist = History(folder, budget_bytes=40_000)
    for i in range(n):
        run_id = f"{who:02x}{i:014x}"
        data = bytes([who]) * random.randint(1000, 6000)
        hist.save({"id": run_id, "title": f"p{who} {i}", "created": float(i * 2 + who), "model": "m",
                   "kind": "generate", "num_tokens": 3, "num_prompt": 1, "finish_reason": "eos"}, data)
        rows = hist.list(limit=5)[0]
        if rows and i % 3 == 0:
            try:
                hist.rename(rows[-1]["id"], f"renamed by {who}")
            except Exception as exc:  # evicted by the other process in between: that is fine
                assert "no run" in str(exc), exc
        if i % 7 == 6:
            try:
                hist.delete(rows[0]["id"])
            except Exception as exc:
                assert "no run" in str(exc), exc
    print("ok")
""")


def test_two_processes_share_one_folder_without_corruption(tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(who), "40"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for who in (1, 2)]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0 and out.strip() == "ok", err[-3000:]
    hist = History(tmp_path, budget_bytes=40_000)
    assert hist.check() == "ok"
    rows, count, total = hist.list(limit=1000)
    assert count == len(rows) > 0 and total <= 40_000
    files = {p.name for p in (tmp_path / "runs").iterdir()}
    assert files == {f"{r['id']}.llmvis" for r in rows}  # no orphans, no temp files, none missing
    for r in rows:  # every file is whole and belongs to the process that wrote it
        data = hist.read(r["id"])
        assert len(data) == r["nbytes"] and set(data) == {int(r["id"][:2], 16)}
    assert {int(r["id"][:2], 16) for r in rows} == {1, 2}


def test_json_for_html_cannot_break_out_of_its_script_block():
    data = {"text": "</script><script>alert(1)</script>", "amp": "a & b", "sep": "\u2028"}
    text = json_for_html(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == data
    assert inline_script('x = "</SCRIPT>"; y = "</script"') == 'x = "<\\/SCRIPT>"; y = "<\\/script"'


def test_forks_keep_their_parent_and_older_folders_gain_the_columns(tmp_path):
    import sqlite3

    hist = History(tmp_path / "new", 1 << 20)
    hist.save(row(rid(1), 1.0), b"a")
    hist.save(row(rid(2), 2.0) | {"kind": "fork", "parent_id": rid(1), "fork_position": 5}, b"b")
    rows = {r["id"]: r for r in hist.list()[0]}
    assert (rows[rid(2)]["parent_id"], rows[rid(2)]["fork_position"]) == (rid(1), 5)
    assert (rows[rid(1)]["parent_id"], rows[rid(1)]["fork_position"]) == (None, None)
    old = tmp_path / "old"
    (old / "runs").mkdir(parents=True)
    con = sqlite3.connect(old / "history.sqlite")  # the schema before forks were listed with parents
    con.executescript("""CREATE TABLE runs (id TEXT PRIMARY KEY, title TEXT NOT NULL, created REAL NOT NULL,
        saved REAL NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'generate', num_tokens INTEGER NOT NULL,
        num_prompt INTEGER NOT NULL, finish_reason TEXT NOT NULL, nbytes INTEGER NOT NULL);
        INSERT INTO runs VALUES ('00000000000000aa', 'kept', 1.0, 1.0, 'm', 'generate', 3, 1, 'eos', 1);""")
    con.commit()
    con.close()
    (old / "runs" / "00000000000000aa.llmvis").write_bytes(b"x")
    reopened = History(old, 1 << 20)
    listed = reopened.list()[0]
    assert listed[0]["id"] == "00000000000000aa" and listed[0]["parent_id"] is None
    reopened.save(row(rid(3), 3.0) | {"kind": "fork", "parent_id": "00000000000000aa", "fork_position": 2}, b"c")
    assert reopened.get(rid(3))["parent_id"] == "00000000000000aa"
    History(old, 1 << 20)  # opening again: the columns are there already
