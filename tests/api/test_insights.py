"""Logit lens, attention insights, attention rows and segments through the Flask test client,
on the real default model (SmolLM2-135M: 30 layers, 9 query heads over 3 KV heads)."""
import math

import pytest

from llmvis.web.app import create_app
from llmvis.core.config import ServerConfig
from llmvis.engine.engine import Engine

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine(default_lm):
    return Engine(default_lm, ServerConfig(max_new_tokens=16))


@pytest.fixture(scope="module")
def client(engine):
    return create_app(engine).test_client()


@pytest.fixture(scope="module")
def run(client):
    resp = client.post("/api/generate", json={
        "prompt": "What is the capital of France?", "system": "Answer in one word.",
        "temperature": 0, "max_new_tokens": 8,
    })
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def get(client, path, **query):
    resp = client.get(path, query_string=query)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_logit_lens_last_layer_is_the_models_output(client, engine, run):
    body = get(client, "/api/logit_lens", run_id=run["run_id"], top_k=3)
    toks = run["tokens"]
    n, L = len(toks), 30
    assert body["num_layers"] == L and body["num_tokens"] == n and body["top_k"] == 3
    assert len(body["chosen_prob"]) == L + 1 and all(len(r) == n for r in body["chosen_prob"])
    assert len(body["top_ids"][L][0]) == 3 and len(body["entropy"]) == L + 1 and len(body["mean_entropy"]) == L + 1
    # Position p's lens at the last layer predicts token p+1 exactly as the model did.
    for p in range(n - 1):
        nxt = toks[p + 1]
        assert body["chosen_prob"][L][p] == pytest.approx(nxt["prob"], rel=1e-3, abs=1e-6), p
        assert body["chosen_rank"][L][p] == nxt["rank"], p
        assert body["entropy"][L][p] == pytest.approx(nxt["entropy"], rel=1e-3, abs=1e-4), p
    assert body["chosen_prob"][L][n - 1] is None and body["chosen_rank"][L][n - 1] is None
    # Greedy: the top-1 of the last layer at every generated step is the token that followed.
    first_gen = run["num_prompt_tokens"]
    for p in range(first_gen - 1, n - 1):
        assert body["top_ids"][L][p][0] == toks[p + 1]["id"]
        first = body["first_top1"][p]
        assert first is not None and 0 <= first <= L and body["chosen_rank"][first][p] == 1
        settled = body["settled_top1"][p]
        assert first <= settled <= L and all(body["chosen_rank"][l][p] == 1 for l in range(settled, L + 1))
    assert body["texts"][str(toks[first_gen]["id"])] == toks[first_gen]["text"]
    # Probabilities are probabilities; lens entropy in middle layers is finite and >= 0.
    assert all(0 <= v <= 1 for row in body["top_probs"][5] for v in row)
    assert all(e >= 0 for e in body["mean_entropy"])
    # Cached on the run, and counted against the store.
    run_obj = engine.get_run(run["run_id"])
    assert "lens" in run_obj.view_cache
    assert run_obj.nbytes >= run_obj.view_cache["lens"].nbytes > 0
    again = get(client, "/api/logit_lens", run_id=run["run_id"], top_k=3)
    assert again["compute_s"] == 0 and again["chosen_prob"] == body["chosen_prob"]


def test_logit_lens_window_computes_only_what_is_asked(client, engine):
    """The page asks for the columns it shows (by default the generated tokens): only those are
    computed, later windows reuse them, and every window equals the same slice of the whole."""
    run = client.post("/api/generate", json={"prompt": "Name three rivers in Europe.", "temperature": 0,
                                             "max_new_tokens": 6}).get_json()
    n, start = run["num_tokens"], run["num_prompt_tokens"] - 1
    win = get(client, "/api/logit_lens", run_id=run["run_id"], start=start, top_k=3)
    assert (win["start"], win["end"]) == (start, n) and win["compute_s"] > 0
    assert len(win["chosen_prob"][0]) == n - start and len(win["first_top1"]) == n - start
    assert len(win["tokens"]) == n and len(win["next_ids"]) == n  # whole, for labels
    lens = engine.get_run(run["run_id"]).view_cache["lens"]
    assert lens.done.sum() == n - start  # nothing outside the window was computed
    again = get(client, "/api/logit_lens", run_id=run["run_id"], start=start + 2, end=n - 1, top_k=3)
    assert again["compute_s"] == 0
    assert again["chosen_prob"] == [row[2:-1] for row in win["chosen_prob"]]
    whole = get(client, "/api/logit_lens", run_id=run["run_id"], top_k=3)
    assert whole["compute_s"] > 0 and lens.done.all() and (whole["start"], whole["end"]) == (0, n)
    for name in ("chosen_prob", "chosen_rank", "entropy", "top_ids", "top_probs"):
        assert [row[start:] for row in whole[name]] == win[name], name
    assert whole["first_top1"][start:] == win["first_top1"]
    # the model's own next-token prob at the last layer, inside the window too
    for p in range(start, n - 1):
        assert win["chosen_prob"][30][p - start] == pytest.approx(run["tokens"][p + 1]["prob"], rel=1e-3, abs=1e-6)


def test_head_statistics_of_a_long_run_use_a_weighted_sample_of_query_rows(client):
    """Past 256 rows in a (segment, prompt/generated) group the head statistics are estimated
    from a weighted sample of query rows; the answer says so, and every segment keeps its rows."""
    prompt = " ".join(["apples and pears"] * 200)  # ~600 user tokens
    run = client.post("/api/generate", json={"prompt": prompt, "system": "Be brief.", "temperature": 0,
                                             "max_new_tokens": 3}).get_json()
    n = run["num_tokens"]
    body = get(client, "/api/attention_insights", run_id=run["run_id"])
    assert n > 500 and body["num_tokens"] == n and body["query_rows_used"] < n / 2
    assert all(0 <= v <= 1 + 1e-4 for r in body["sink"] + body["prev"] for v in r)
    seg = get(client, "/api/segments", run_id=run["run_id"])
    assert seg["query_rows_used"] == body["query_rows_used"]
    assert all(v is not None for v in seg["attention_entropy"]["system"])  # a short segment is kept whole
    for layer in range(30):
        assert sum(seg["attention_share"][s][layer] for s in seg["names"]) == pytest.approx(1.0, abs=1e-3)


def test_attention_insights_per_head_and_kv_groups(client, engine, run):
    body = get(client, "/api/attention_insights", run_id=run["run_id"])
    assert (body["num_layers"], body["num_heads"], body["num_kv_heads"]) == (30, 9, 3)
    assert body["kv_group"] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    n = run["num_tokens"]
    for name in ("entropy", "entropy_norm", "sink", "prev"):
        assert len(body[name]) == 30 and all(len(r) == 9 for r in body[name]), name
    assert all(0 <= v <= math.log(n) + 1e-4 for r in body["entropy"] for v in r)
    assert all(0 <= v <= 1 + 1e-4 for r in body["entropy_norm"] for v in r)
    assert all(0 <= v <= 1 + 1e-4 for r in body["sink"] + body["prev"] for v in r)
    # SmolLM2's later layers park most attention on the first token (an attention sink).
    assert max(max(r) for r in body["sink"][10:]) > 0.5
    # Agrees with the attention endpoint: head 4 of layer 3, sink share = mean of column 0 over rows 1..
    attn = get(client, "/api/attention", run_id=run["run_id"], layer=3, head=4)["matrix"]
    want = sum(attn[i][0] for i in range(1, n)) / (n - 1)
    assert body["sink"][3][4] == pytest.approx(want, abs=2e-3)
    # Only small results are cached; no layer was added to the bounded attention cache.
    run_obj = engine.get_run(run["run_id"])
    assert "attn_stats" in run_obj.view_cache and run_obj.view_cache["attn_stats"].nbytes < 10_000


def test_attention_row_every_layer(client, run):
    pos = run["num_tokens"] - 2
    body = get(client, "/api/attention_row", run_id=run["run_id"], position=pos)
    assert body["position"] == pos and body["head"] == "mean" and body["num_layers"] == 30
    assert len(body["matrix"]) == 30 and all(len(r) == pos + 1 for r in body["matrix"])
    assert all(sum(r) == pytest.approx(1.0, abs=2e-3) for r in body["matrix"])
    assert len(body["tokens"]) == pos + 1
    # Row pos of /api/attention, layer 7, head 2 (full matrix) == this view's row for head 2.
    one = get(client, "/api/attention_row", run_id=run["run_id"], position=pos, head=2)
    full = get(client, "/api/attention", run_id=run["run_id"], layer=7, head=2)["matrix"][pos][: pos + 1]
    assert one["matrix"][7] == pytest.approx(full, abs=2e-3)
    mx = get(client, "/api/attention_row", run_id=run["run_id"], position=pos, head="max")
    assert all(a >= b - 1e-6 for a, b in zip(mx["matrix"][7], one["matrix"][7]))
    first = get(client, "/api/attention_row", run_id=run["run_id"], position=0)
    assert first["matrix"] == [[1.0]] * 30


def test_segments_and_attention_per_segment(client, run):
    body = get(client, "/api/segments", run_id=run["run_id"])
    toks = run["tokens"]
    assert body["segments"] == [t["segment"] for t in toks]  # no <think> here: unchanged
    assert {"system", "user", "assistant", "template"} <= set(body["names"])
    spans = body["spans"]
    assert spans[0]["start"] == 0 and spans[-1]["end"] == len(toks)
    assert all(a["end"] == b["start"] and a["segment"] != b["segment"] for a, b in zip(spans, spans[1:]))
    assert body["counts"]["assistant"] == len(toks) - run["num_prompt_tokens"]
    assert body["num_generated_queries"] == len(toks) - run["num_prompt_tokens"]
    share = body["attention_share"]
    for layer in range(30):
        assert sum(share[s][layer] for s in body["names"]) == pytest.approx(1.0, abs=1e-3)
    assert all(v is None or v >= 0 for s in body["names"] for v in body["attention_entropy"][s])
    gen_ent = [t["entropy"] for t in toks if t["segment"] == "assistant"]
    assert body["token_entropy"]["assistant"] == pytest.approx(sum(gen_ent) / len(gen_ent), rel=1e-4)


def test_think_segments_on_a_real_run(client):
    """An assistant turn with a <think> block is tagged think; a user typing the tag is not."""
    resp = client.post("/api/generate", json={"messages": [
        {"role": "user", "content": "What is 2+2? <think>"},
        {"role": "assistant", "content": "<think>2+2 is 4.</think>4"},
        {"role": "user", "content": "And 3+3?"},
    ], "temperature": 0, "max_new_tokens": 3})
    assert resp.status_code == 200, resp.get_json()
    run = resp.get_json()
    body = get(client, "/api/segments", run_id=run["run_id"])
    segs = body["segments"]
    block = next(sp for sp in body["spans"] if sp["segment"] == "think")  # the earlier assistant turn's
    text = "".join(run["tokens"][i]["text"] for i in range(block["start"], block["end"]))
    assert text == "<think>2+2 is 4.</think>"
    assert segs[block["end"]] == "assistant"  # the answer after the block
    # the run's own token list carries the same tags as /api/segments
    assert [t["segment"] for t in run["tokens"]] == segs
    user_tag = [i for i, t in enumerate(run["tokens"]) if t["segment"] == "user" and "think" in t["text"]]
    assert user_tag and all(segs[i] == "user" for i in user_tag)
    assert "think" in body["names"] and body["counts"]["think"] >= block["end"] - block["start"]
    assert len(body["attention_share"]["think"]) == 30


@pytest.mark.parametrize("path,query,field", [
    ("/api/logit_lens", {"top_k": "0"}, "top_k"),
    ("/api/logit_lens", {"top_k": "21"}, "top_k"),
    ("/api/logit_lens", {"top_k": "x"}, "top_k"),
    ("/api/logit_lens", {"start": "5", "end": "5"}, "end"),
    ("/api/logit_lens", {"start": "99999"}, "start"),
    ("/api/logit_lens", {"end": "99999"}, "end"),
    ("/api/logit_lens", {"start": "-1"}, "start"),
    ("/api/attention_row", {"position": "-1"}, "position"),
    ("/api/attention_row", {}, "position"),
    ("/api/attention_row", {"position": "99999"}, "position"),
    ("/api/attention_row", {"position": "1", "head": "9"}, "head"),
    ("/api/attention_row", {"position": "1", "head": "avg"}, "head"),
])
def test_bad_parameters(client, run, assert_error, path, query, field):
    assert_error(client.get(path, query_string={"run_id": run["run_id"], **query}), 400, field)


@pytest.mark.parametrize("path", ["/api/logit_lens", "/api/attention_insights", "/api/attention_row", "/api/segments"])
def test_missing_and_unknown_run(client, assert_error, path):
    assert_error(client.get(path), 400, "run_id")
    assert_error(client.get(path, query_string={"run_id": "nope", "position": "1"}), 404, "run_id")


def test_segments_without_attention_is_cheap(client, engine):
    run = client.post("/api/generate", json={"prompt": "Hi", "temperature": 0, "max_new_tokens": 2}).get_json()
    body = get(client, "/api/segments", run_id=run["run_id"], attention=0)
    assert body["segments"] == [t["segment"] for t in run["tokens"]]
    assert "attention_share" not in body
    assert "attn_stats" not in engine.get_run(run["run_id"]).view_cache  # nothing was computed
    assert "attention_share" in get(client, "/api/segments", run_id=run["run_id"])


def test_segments_attention_flag_is_validated(client, run, assert_error):
    assert_error(client.get("/api/segments", query_string={"run_id": run["run_id"], "attention": "yes"}), 400, "attention")
