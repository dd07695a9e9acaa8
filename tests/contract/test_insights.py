"""Views inside the layers (logit lens, attention insights, attention rows, segments), each checked
against the tiny model's own eager forward pass and plain torch."""

import numpy as np
import pytest
import torch

from . import reference as R
from .support import HEADS, LAYERS, get, ok

SEGMENT_ORDER = ("system", "user", "assistant", "think", "template")


@pytest.fixture(scope="module")
def run(client, ref):
    """A run with every segment: system, user, an assistant turn with a think block, template, answer."""
    r = ok(client.post("/api/generate", json={
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "<think>greet back</think>Hello!"},
                     {"role": "user", "content": "Count to three."}],
        "temperature": 0, "max_new_tokens": 6}))
    assert r["finish_reason"] == "length"
    ids = [t["id"] for t in r["tokens"]]
    return r, ids, ref.forward(ids)


def _lens_reference(ref, fwd, ids):
    """Per layer 0..L: probs (T, V) of norm + LM head on that layer's state (the output itself for L)."""
    out = []
    for layer in range(LAYERS + 1):
        h = fwd.hidden[layer]
        logits = ref.lm_head(h if layer == LAYERS else ref.norm(h))
        out.append(torch.softmax(logits, -1))
    return torch.stack(out)  # (L+1, T, V)


# ---- logit lens ------------------------------------------------------------------------------------
def test_logit_lens_matches_norm_and_lm_head_on_every_layer(client, run, ref):
    r, ids, fwd = run
    n = r["num_tokens"]
    body = get(client, "/api/logit_lens", run_id=r["run_id"], top_k=5)
    probs = _lens_reference(ref, fwd, ids)  # (L+1, T, V)
    assert (body["num_layers"], body["num_tokens"], body["num_prompt_tokens"]) == (LAYERS, n, r["num_prompt_tokens"])
    assert (body["start"], body["end"], body["top_k"]) == (0, n, 5)
    assert body["tokens"] == [t["text"] for t in r["tokens"]] and body["next_ids"] == ids[1:] + [None]
    ranks = np.zeros((LAYERS + 1, n - 1), dtype=int)
    for layer in range(LAYERS + 1):
        for p in range(n):
            dist = probs[layer, p]
            assert body["entropy"][layer][p] == pytest.approx(float(R.entropy(dist)), abs=2e-4)
            top = torch.topk(dist, 5)
            assert np.allclose(body["top_probs"][layer][p], top.values.numpy(), atol=2e-5)
            assert body["top_ids"][layer][p][0] == int(top.indices[0])
            if p == n - 1:
                assert body["chosen_prob"][layer][p] is None and body["chosen_rank"][layer][p] is None
                continue
            nxt = ids[p + 1]
            assert body["chosen_prob"][layer][p] == pytest.approx(float(dist[nxt]), rel=1e-4, abs=1e-6)
            assert body["chosen_rank"][layer][p] == R.rank(dist, nxt)
            ranks[layer, p] = R.rank(dist, nxt)
        assert body["mean_entropy"][layer] == pytest.approx(float(R.entropy(probs[layer]).mean()), abs=2e-4)
    top1 = ranks == 1  # (L+1, T-1)
    for p in range(n - 1):
        first = next((layer for layer in range(LAYERS + 1) if top1[layer, p]), None)
        settled = next((layer for layer in range(LAYERS + 1) if top1[layer:, p].all()), None)
        assert (body["first_top1"][p], body["settled_top1"][p]) == (first, settled), p
    assert (body["first_top1"][-1], body["settled_top1"][-1]) == (None, None)
    assert {int(k) for k in body["texts"]} == {i for layer in body["top_ids"] for row in layer for i in row}


def test_logit_lens_last_layer_is_the_models_output_distribution(client, run):
    r, ids, fwd = run
    body = get(client, "/api/logit_lens", run_id=r["run_id"], top_k=20)
    for p in range(r["num_tokens"] - 1):
        assert body["chosen_prob"][LAYERS][p] == pytest.approx(r["tokens"][p + 1]["prob"], abs=1e-6)  # 6 decimals
        assert body["chosen_rank"][LAYERS][p] == r["tokens"][p + 1]["rank"]
        assert np.allclose(body["top_probs"][LAYERS][p], torch.topk(fwd.probs[p], 20).values.numpy(), atol=2e-5)


def test_logit_lens_windows_cover_only_the_asked_positions(client, run, make_server):
    r, ids, _ = run
    n = r["num_tokens"]
    whole = get(client, "/api/logit_lens", run_id=r["run_id"], top_k=3)
    _, fresh = make_server()  # a new server, so the windows are computed from nothing
    again = ok(fresh.post("/api/generate", json={"messages": [{"role": "user", "content": "Count to three."}],
                                                 "system": "You are terse.", "temperature": 0, "max_new_tokens": 6}))
    for start, end in ((n - 7, n), (0, 4), (3, n - 2)):
        win = get(client, "/api/logit_lens", run_id=r["run_id"], top_k=3, start=start, end=end)
        assert (win["start"], win["end"], win["num_tokens"]) == (start, end, n)
        assert win["tokens"] == whole["tokens"] and win["next_ids"] == whole["next_ids"]
        for key in ("chosen_prob", "chosen_rank", "entropy", "top_ids", "top_probs"):
            assert win[key] == [row[start:end] for row in whole[key]], key
        for key in ("first_top1", "settled_top1"):
            assert win[key] == whole[key][start:end], key
        assert win["mean_entropy"] == pytest.approx([float(np.mean(row[start:end])) for row in whole["entropy"]], abs=2e-4)
    m = again["num_tokens"]
    tail = get(fresh, "/api/logit_lens", run_id=again["run_id"], start=m - 2)  # a first window on a fresh run
    assert tail["end"] == m and len(tail["entropy"][0]) == 2
    assert tail["chosen_prob"][LAYERS][0] == pytest.approx(again["tokens"][m - 1]["prob"], rel=1e-4)


# ---- attention insights ----------------------------------------------------------------------------
def test_attention_insights_per_head(client, run):
    r, _, fwd = run
    n = r["num_tokens"]
    body = get(client, "/api/attention_insights", run_id=r["run_id"])
    assert (body["num_layers"], body["num_heads"], body["num_kv_heads"]) == (LAYERS, HEADS, 2)
    assert body["kv_group"] == [0, 0, 1, 1] and body["metrics"] == ["entropy", "entropy_norm", "sink", "prev"]
    assert body["num_tokens"] == n and body["query_rows_used"] == n  # a short run: every row, exact
    rows = torch.arange(1, n)  # row 0 sees only itself and is left out of the means
    for layer in range(LAYERS):
        a = fwd.attentions[layer][:, 1:]  # (Hq, T-1, T)
        ent = R.entropy(a)  # (Hq, T-1)
        want = {
            "entropy": ent.mean(1),
            "entropy_norm": (ent / torch.log(rows + 1.0)).mean(1),
            "sink": a[:, :, 0].mean(1),
            "prev": a[:, torch.arange(n - 1), rows - 1].mean(1),
        }
        for metric, values in want.items():
            assert np.allclose(body[metric][layer], values.numpy(), atol=3e-5), (metric, layer)


@pytest.mark.parametrize("head", ["mean", "max", "0", "3"])
def test_attention_row_every_layer(client, run, head):
    r, _, fwd = run
    n = r["num_tokens"]
    for position in (0, 5, n - 1):
        query = {"run_id": r["run_id"], "position": position} | ({} if head == "mean" else {"head": head})
        body = get(client, "/api/attention_row", **query)
        assert body["position"] == position and body["head"] == (int(head) if head.isdigit() else head)
        assert (body["num_layers"], body["num_keys"]) == (LAYERS, position + 1)
        assert body["tokens"] == [t["text"] for t in r["tokens"][: position + 1]]
        for layer in range(LAYERS):
            row = fwd.attentions[layer][:, position, : position + 1]  # (Hq, P+1)
            want = row.mean(0) if head == "mean" else row.amax(0) if head == "max" else row[int(head)]
            assert np.allclose(body["matrix"][layer], want.numpy(), atol=1e-3), (layer, position)  # float16 storage
            assert torch.all(fwd.attentions[layer][:, position, position + 1:] == 0)


# ---- segments --------------------------------------------------------------------------------------
def test_segments_labels_spans_counts_and_entropy(client, run, ref):
    r, ids, fwd = run
    segs = [t["segment"] for t in r["tokens"]]
    assert set(segs) == set(SEGMENT_ORDER)
    body = get(client, "/api/segments", run_id=r["run_id"], attention=0)
    assert body["segments"] == segs and body["names"] == list(SEGMENT_ORDER)
    assert "attention_share" not in body
    spans, start = [], 0
    for i in range(1, len(segs) + 1):
        if i == len(segs) or segs[i] != segs[start]:
            spans.append({"segment": segs[start], "start": start, "end": i})
            start = i
    assert body["spans"] == spans
    assert body["counts"] == {s: segs.count(s) for s in SEGMENT_ORDER}
    assert body["num_generated_queries"] == r["num_tokens"] - r["num_prompt_tokens"]
    for s in SEGMENT_ORDER:
        ents = [ref.position_stats(ids, i)["entropy"] for i, x in enumerate(segs) if x == s and i > 0]
        assert body["token_entropy"][s] == pytest.approx(sum(ents) / len(ents), abs=2e-5), s


def test_segments_attention_share_and_entropy(client, run):
    r, ids, fwd = run
    segs = [t["segment"] for t in r["tokens"]]
    n, p = r["num_tokens"], r["num_prompt_tokens"]
    body = get(client, "/api/segments", run_id=r["run_id"])
    assert body["num_layers"] == LAYERS and body["query_rows_used"] == n
    for layer in range(LAYERS):
        a = fwd.attentions[layer]  # (Hq, T, T)
        gen = a[:, p:]  # (Hq, G, T) the generated queries
        for s in SEGMENT_ORDER:
            keys = torch.tensor([x == s for x in segs])
            share = gen[:, :, keys].sum(-1).mean(0).mean()  # per query: mean over heads of the mass on s
            assert body["attention_share"][s][layer] == pytest.approx(float(share), abs=3e-5), (s, layer)
            q_rows = torch.tensor([x == s for x in segs])
            ent = R.entropy(a[:, q_rows]).mean(0).mean()
            assert body["attention_entropy"][s][layer] == pytest.approx(float(ent), abs=3e-5), (s, layer)
        total = sum(body["attention_share"][s][layer] for s in SEGMENT_ORDER)
        assert total == pytest.approx(1.0, abs=1e-4)


# ---- bad input -------------------------------------------------------------------------------------
def test_bad_insight_queries_answer_400_naming_the_parameter(client, run, assert_error):
    r, _, _ = run
    rid, n = r["run_id"], r["num_tokens"]
    cases = [
        ("/api/logit_lens", {"top_k": 0}, "top_k"),
        ("/api/logit_lens", {"top_k": 21}, "top_k"),
        ("/api/logit_lens", {"top_k": "five"}, "top_k"),
        ("/api/logit_lens", {"start": -1}, "start"),
        ("/api/logit_lens", {"start": n}, "start"),
        ("/api/logit_lens", {"end": 0}, "end"),
        ("/api/logit_lens", {"end": n + 1}, "end"),
        ("/api/logit_lens", {"start": 5, "end": 5}, "end"),
        ("/api/logit_lens", {"start": 6, "end": 2}, "end"),
        ("/api/logit_lens", {"end": "Infinity"}, "end"),
        ("/api/attention_row", {}, "position"),
        ("/api/attention_row", {"position": n}, "position"),
        ("/api/attention_row", {"position": -1}, "position"),
        ("/api/attention_row", {"position": 2, "head": HEADS}, "head"),
        ("/api/attention_row", {"position": 2, "head": "sum"}, "head"),
        ("/api/segments", {"attention": "yes"}, "attention"),
        ("/api/segments", {"attention": "2"}, "attention"),
    ]
    for path, query, field in cases:
        assert_error(client.get(path, query_string={"run_id": rid} | query), 400, field)


def test_head_statistics_of_a_long_run_estimate_the_exact_means(client, ref):
    """Past 256 query rows in a segment the statistics use a weighted sample of rows (the answer
    says how many); the estimate stays close to the exact mean over every row."""
    r = ok(client.post("/api/generate", json={"prompt": "hello " * 90, "temperature": 0, "max_new_tokens": 3}))
    n = r["num_tokens"]
    body = get(client, "/api/attention_insights", run_id=r["run_id"])
    assert n > 360 and 256 < body["query_rows_used"] < n
    fwd = ref.forward([t["id"] for t in r["tokens"]])
    rows = torch.arange(1, n)
    for layer in range(LAYERS):
        a = fwd.attentions[layer][:, 1:]  # (Hq, T-1, T)
        exact = {"entropy": R.entropy(a).mean(1), "sink": a[:, :, 0].mean(1),
                 "prev": a[:, torch.arange(n - 1), rows - 1].mean(1)}
        for metric, values in exact.items():
            assert np.allclose(body[metric][layer], values.numpy(), rtol=0.02, atol=2e-3), (metric, layer)
    seg = get(client, "/api/segments", run_id=r["run_id"])
    assert seg["query_rows_used"] == body["query_rows_used"]
    for layer in range(LAYERS):  # generated rows are few: their shares are exact
        gen = fwd.attentions[layer][:, r["num_prompt_tokens"]:]
        user = torch.tensor([t["segment"] == "user" for t in r["tokens"]])
        assert seg["attention_share"]["user"][layer] == pytest.approx(float(gen[:, :, user].sum(-1).mean()), abs=3e-5)


def test_a_named_lens_range_is_a_job_to_follow_and_cancel(make_server, assert_error):
    """GET /api/logit_lens?job_id=... registers the range as a job: /api/jobs/<id> reports done of
    total positions, POST /api/cancel stops it before its next step (409), what was done is kept."""
    import threading
    import time

    eng, client = make_server()
    r = ok(client.post("/api/generate", json={"prompt": "Count to five.", "temperature": 0, "max_new_tokens": 8}))
    n = r["num_tokens"]
    finished = get(client, "/api/logit_lens", run_id=r["run_id"], start=0, end=4, job_id="00aa00aa00aa00aa")
    assert finished["end"] == 4
    assert get(client, "/api/jobs/00aa00aa00aa00aa") == {"job_id": "00aa00aa00aa00aa", "kind": "logit_lens",
                                                         "run_id": r["run_id"], "done": 4, "total": 4, "status": "done"}
    assert ok(client.post("/api/cancel", json={"run_id": "00aa00aa00aa00aa"})) == {
        "run_id": "00aa00aa00aa00aa", "cancelled": False, "status": "done"}
    answer = {}
    with eng.lm.lock:  # the model is busy: the job is registered and waits for its first step
        worker = threading.Thread(target=lambda: answer.update(resp=client.get(
            "/api/logit_lens", query_string={"run_id": r["run_id"], "start": "4", "end": str(n), "job_id": "11bb11bb11bb11bb"})))
        worker.start()
        deadline = time.monotonic() + 30
        while client.get("/api/jobs/11bb11bb11bb11bb").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        progress = get(client, "/api/jobs/11bb11bb11bb11bb")
        assert (progress["done"], progress["total"], progress["status"]) == (0, n - 4, "running")
        assert ok(client.post("/api/cancel", json={"run_id": "11bb11bb11bb11bb"}))["cancelled"] is True
    worker.join(30)
    assert_error(answer["resp"], 409, "cancelled")
    assert get(client, "/api/jobs/11bb11bb11bb11bb")["status"] == "cancelled"
    assert int(eng.get_run(r["run_id"]).view_cache["lens"].done.sum()) == 4  # the first job's positions stay
    assert_error(client.get("/api/jobs/22cc22cc22cc22cc"), 404, "job_id")
    assert_error(client.get("/api/jobs/zz"), 400, "job_id")
    assert_error(client.get("/api/logit_lens", query_string={"run_id": r["run_id"], "job_id": "NOPE"}), 400, "job_id")
