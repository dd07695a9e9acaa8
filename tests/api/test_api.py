"""The v1 API through the Flask test client, on the real default model."""
import json
import math

import pytest
import torch

from llmvis.web.app import create_app
from llmvis.core.config import ServerConfig
from llmvis.engine.engine import Engine

pytestmark = pytest.mark.model
TOKEN_FIELDS = {"position", "id", "text", "source", "prob", "rank", "entropy", "sample_prob"}


@pytest.fixture(scope="module")
def engine(default_lm):
    return Engine(default_lm, ServerConfig(max_new_tokens=64))


@pytest.fixture(scope="module")
def client(engine):
    app = create_app(engine)
    return app.test_client()


@pytest.fixture(scope="module")
def greedy_run(client):
    resp = client.post("/api/generate", json={
        "prompt": "What is the capital of France? One word.", "temperature": 0, "max_new_tokens": 12,
    })
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_model_info(client):
    body = client.get("/api/model").get_json()
    for key in ("name", "architecture", "num_layers", "num_heads", "num_kv_heads", "hidden_size", "vocab_size", "device", "dtype"):
        assert key in body
    assert (body["num_layers"], body["num_heads"], body["num_kv_heads"], body["vocab_size"]) == (30, 9, 3, 49152)
    assert body["limits"]["max_new_tokens"] == 64


def test_generate_shape_and_statistics(greedy_run):
    r = greedy_run
    assert set(r) >= {"run_id", "model", "params", "tokens", "generated_text", "finish_reason", "timing"}
    assert r["finish_reason"] == "eos" and "Paris" in r["generated_text"]
    assert r["params"] == {"temperature": 0.0, "top_k": 50, "top_p": 0.95, "max_new_tokens": 12,
                           "seed": r["params"]["seed"], "use_chat_template": True}
    assert set(r["timing"]) >= {"generate_s", "tokens_per_s", "analysis_s"}
    toks = r["tokens"]
    assert [t["position"] for t in toks] == list(range(len(toks)))
    assert all(TOKEN_FIELDS <= set(t) for t in toks)
    assert toks[0]["prob"] is None and toks[0]["rank"] is None and toks[0]["entropy"] is None
    prompt = [t for t in toks if t["source"] == "prompt"]
    gen = [t for t in toks if t["source"] == "generated"]
    assert len(prompt) == r["num_prompt_tokens"] and gen
    assert all(t["sample_prob"] is None for t in prompt)
    assert all(0 < t["prob"] <= 1 and t["rank"] >= 1 and t["entropy"] >= 0 for t in toks[1:])
    # greedy: every generated token is the argmax and had sampling probability 1
    assert all(t["rank"] == 1 and t["sample_prob"] == 1.0 for t in gen)
    assert {t["segment"] for t in prompt} >= {"user", "template"}


def test_same_seed_same_tokens(client):
    body = {"prompt": "Write a word.", "temperature": 1.2, "top_k": 0, "top_p": 1.0, "max_new_tokens": 8, "seed": 7}
    a = client.post("/api/generate", json=body).get_json()
    b = client.post("/api/generate", json=body).get_json()
    assert [t["id"] for t in a["tokens"]] == [t["id"] for t in b["tokens"]]
    assert a["run_id"] != b["run_id"]
    gen = [t for t in a["tokens"] if t["source"] == "generated"]
    assert all(0 < t["sample_prob"] <= 1 for t in gen)


def test_messages_and_system(client):
    r = client.post("/api/generate", json={
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                     {"role": "user", "content": "Bye"}],
        "system": "You are terse.", "temperature": 0, "max_new_tokens": 2,
    }).get_json()
    segs = {t["segment"] for t in r["tokens"]}
    assert {"system", "user", "assistant", "template"} <= segs
    assert r["finish_reason"] in ("eos", "length")


def test_raw_text_mode(client):
    r = client.post("/api/generate", json={"prompt": "The sky is", "use_chat_template": False,
                                           "temperature": 0, "max_new_tokens": 3}).get_json()
    assert r["params"]["use_chat_template"] is False
    assert not any(t["text"] == "<|im_start|>" for t in r["tokens"])


def test_token_probs(client, greedy_run):
    run_id = greedy_run["run_id"]
    pos = greedy_run["num_prompt_tokens"]  # the first generated token
    body = client.get(f"/api/token_probs?run_id={run_id}&position={pos}&top_n=20").get_json()
    assert set(body) >= {"position", "token", "entropy", "cut_mass", "candidates"}
    cands = body["candidates"]
    assert len(cands) == 20
    assert [c["prob"] for c in cands] == sorted((c["prob"] for c in cands), reverse=True)
    assert cands[0]["id"] == body["token"]["id"]  # greedy: chosen is the top candidate
    assert cands[0]["sample_prob"] == 1.0 and all(c["sample_prob"] == 0 for c in cands[1:])
    assert body["cut_mass"] == pytest.approx(1 - cands[0]["prob"], abs=1e-5)
    default = client.get(f"/api/token_probs?run_id={run_id}&position=3").get_json()
    assert len(default["candidates"]) == 10
    assert all(c["sample_prob"] is None for c in default["candidates"])  # prompt position


def test_attention_views(client, greedy_run):
    run_id, n = greedy_run["run_id"], len(greedy_run["tokens"])
    mats = {}
    for head in ("mean", "max", "0", "8"):
        body = client.get(f"/api/attention?run_id={run_id}&layer=5&head={head}").get_json()
        assert body["layer"] == 5 and body["num_tokens"] == n and len(body["tokens"]) == n
        m = body["matrix"]
        assert len(m) == n and all(len(row) == n for row in m)
        assert all(m[i][j] == 0 for i in range(n) for j in range(i + 1, n))
        mats[head] = m
    for head in ("mean", "0", "8"):
        assert all(abs(sum(row) - 1) < 1e-3 for row in mats[head])
    assert client.get(f"/api/attention?run_id={run_id}&layer=5").get_json()["head"] == "mean"
    assert mats["0"] != mats["8"]
    assert all(mats["max"][i][j] >= mats["mean"][i][j] - 1e-6 for i in range(n) for j in range(n))


def test_hidden_similarity_and_projection(client, engine, greedy_run):
    run_id, n = greedy_run["run_id"], len(greedy_run["tokens"])
    sim = client.get(f"/api/hidden_similarity?run_id={run_id}").get_json()
    assert len(sim["per_layer"]) == 30 and len(sim["per_token"]) == 30
    assert all(len(row) == n for row in sim["per_token"])
    assert sim["per_layer"][3] == pytest.approx(sum(sim["per_token"][3]) / n, rel=1e-4)
    # The last pair compares layer 29's output with layer 30's output before the final norm
    # (hidden_states[30] is after it, whose cosine with layer 29 is about 0 on this model).
    run = engine.get_run(run_id)
    want = torch.nn.functional.cosine_similarity(run.hidden[29].float(), run.result.final_residual.float(), dim=-1)
    assert sim["per_token"][29] == pytest.approx(want.tolist(), abs=1e-4)
    assert sim["per_layer"][29] > 0.3 and sim["per_layer"][28] > 0.3
    proj = client.get(f"/api/embedding_projection?run_id={run_id}&layer=12&method=pca").get_json()
    assert proj["layer"] == 12 and proj["method"] == "pca"
    assert len(proj["points"]) == n and {"position", "x", "y", "text"} <= set(proj["points"][0])
    assert 0 < proj["explained_variance"][1] <= proj["explained_variance"][0] <= 1


# ---- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("body, field", [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "x", "system": 3}, "system"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "temperature": -0.1}, "temperature"),
    ({"prompt": "x", "temperature": True}, "temperature"),
    ({"prompt": "x", "top_k": -1}, "top_k"),
    ({"prompt": "x", "top_k": 1.5}, "top_k"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_p": 1.01}, "top_p"),
    ({"prompt": "x", "max_new_tokens": 0}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": 65}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": "10"}, "max_new_tokens"),
    ({"prompt": "x", "seed": "abc"}, "seed"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "use_chat_template": "yes"}, "use_chat_template"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 1}]}, "messages[0].content"),
])
def test_generate_rejects_bad_input(client, assert_error, body, field):
    assert_error(client.post("/api/generate", json=body), 400, field)


def test_non_finite_numbers_rejected(client, assert_error):
    resp = client.post("/api/generate", data='{"prompt": "x", "temperature": NaN}', content_type="application/json")
    assert_error(resp, 400, "temperature")


def test_body_not_json_or_not_object(client, assert_error):
    assert_error(client.post("/api/generate", data="{not json", content_type="application/json"), 400, "body")
    assert_error(client.post("/api/generate", data="[1, 2]", content_type="application/json"), 400, "body")
    assert_error(client.post("/api/generate", data=b"", content_type="application/json"), 400, "body")


def test_body_too_large(client, assert_error):
    big = json.dumps({"prompt": "x" * (1 << 20)})
    assert_error(client.post("/api/generate", data=big, content_type="application/json"), 413, "body")


def test_prompt_longer_than_context(client, assert_error):
    assert_error(client.post("/api/generate", json={"prompt": "hello " * 9000, "max_new_tokens": 1}), 400, "prompt")


def test_unknown_run_and_ranges(client, assert_error, greedy_run):
    run_id, n = greedy_run["run_id"], len(greedy_run["tokens"])
    assert_error(client.get("/api/attention?run_id=nope&layer=0"), 404, "run_id")
    assert_error(client.get("/api/attention?layer=0"), 400, "run_id")
    assert_error(client.get(f"/api/attention?run_id={run_id}&layer=30"), 400, "layer")
    assert_error(client.get(f"/api/attention?run_id={run_id}&layer=-1"), 400, "layer")
    assert_error(client.get(f"/api/attention?run_id={run_id}&layer=x"), 400, "layer")
    assert_error(client.get(f"/api/attention?run_id={run_id}&layer=0&head=9"), 400, "head")
    assert_error(client.get(f"/api/attention?run_id={run_id}&layer=0&head=avg"), 400, "head")
    assert_error(client.get(f"/api/token_probs?run_id={run_id}&position={n}"), 400, "position")
    assert_error(client.get(f"/api/token_probs?run_id={run_id}&position=0"), 400, "position")
    assert_error(client.get(f"/api/token_probs?run_id={run_id}&position=1&top_n=101"), 400, "top_n")
    assert_error(client.get(f"/api/token_probs?run_id={run_id}&position=1&top_n=0"), 400, "top_n")
    assert_error(client.get(f"/api/embedding_projection?run_id={run_id}&layer=31"), 400, "layer")
    assert_error(client.get(f"/api/embedding_projection?run_id={run_id}&layer=1&method=tsne"), 400, "method")
    assert_error(client.get("/api/hidden_similarity?run_id=" + "z" * 5000), 404, "run_id")


def test_unknown_endpoint_and_method(client, assert_error):
    assert_error(client.get("/api/nope"), 404)
    assert_error(client.get("/api/generate"), 405)


def test_evicted_run_answers_run_expired(default_lm, assert_error):
    eng = Engine(default_lm, ServerConfig(max_new_tokens=8, store_budget_bytes=3 << 20))
    client = create_app(eng).test_client()
    first = client.post("/api/generate", json={"prompt": "One", "temperature": 0, "max_new_tokens": 2}).get_json()
    for word in ("Two", "Three", "Four"):
        assert client.post("/api/generate", json={"prompt": word, "temperature": 0, "max_new_tokens": 2}).status_code == 200
    body = assert_error(client.get(f"/api/hidden_similarity?run_id={first['run_id']}"), 404, "run_id")
    assert "run expired" in body["error"]
    assert eng.store.total_bytes <= 3 << 20


def test_run_over_budget_is_refused(default_lm, assert_error):
    eng = Engine(default_lm, ServerConfig(max_new_tokens=2048, store_budget_bytes=16 << 20))
    client = create_app(eng).test_client()
    assert_error(client.post("/api/generate", json={"prompt": "x", "max_new_tokens": 2000}), 413, "max_new_tokens")


def test_unexpected_failure_is_500_and_server_keeps_serving(engine, client, assert_error, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(engine, "generate", explode)
    body = assert_error(client.post("/api/generate", json={"prompt": "x"}), 500)
    assert "RuntimeError" in body["error"] and "Traceback" not in body["error"]
    monkeypatch.undo()
    ok = client.post("/api/generate", json={"prompt": "x", "temperature": 0, "max_new_tokens": 1})
    assert ok.status_code == 200


def test_page_and_echarts_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and b"<html" in page.data.lower()
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    js = client.get("/vendor/echarts.min.js")
    assert js.status_code == 200 and len(js.data) > 500_000
    js.close()


def test_no_nan_in_json(greedy_run):
    text = json.dumps(greedy_run)
    assert "NaN" not in text and "Infinity" not in text
    assert not any(isinstance(v, float) and math.isnan(v) for t in greedy_run["tokens"] for v in t.values())


def test_attention_binary_pooled_and_window(client, greedy_run, assert_error):
    import numpy as np

    run_id, n = greedy_run["run_id"], len(greedy_run["tokens"])
    full = np.array(client.get(f"/api/attention?run_id={run_id}&layer=3&head=2").get_json()["matrix"])
    resp = client.get(f"/api/attention?run_id={run_id}&layer=3&head=2&format=f16")
    assert resp.mimetype == "application/octet-stream"
    assert int(resp.headers["X-Llmvis-Rows"]) == n and int(resp.headers["X-Llmvis-Cols"]) == n
    binary = np.frombuffer(resp.data, dtype="<f2").reshape(n, n).astype(np.float32)
    assert np.allclose(binary, full, atol=1e-3)
    pooled = client.get(f"/api/attention?run_id={run_id}&layer=3&head=2&pool=16&pool_mode=max").get_json()
    block = pooled["block"]
    assert block == -(-n // 16) and pooled["rows"] == len(pooled["matrix"]) == -(-n // block)
    assert pooled["matrix"][0][0] == pytest.approx(full[:block, :block].max(), abs=1e-3)
    win = client.get(f"/api/attention?run_id={run_id}&layer=3&head=2&q_start=5&q_end=9&k_start=2&k_end=6").get_json()
    assert (win["rows"], win["cols"], win["q_start"], win["k_start"]) == (4, 4, 5, 2)
    assert np.allclose(np.array(win["matrix"]), full[5:9, 2:6], atol=1e-6)
    assert_error(client.get(f"/api/attention?run_id={run_id}&layer=3&format=png"), 400, "format")
    assert_error(client.get(f"/api/attention?run_id={run_id}&layer=3&pool=3"), 400, "pool")
    assert_error(client.get(f"/api/attention?run_id={run_id}&layer=3&q_start=9&q_end=5"), 400, "q_start")
    assert_error(client.get(f"/api/attention?run_id={run_id}&layer=3&k_end={n + 1}"), 400, "k_end")


def test_attention_cache_per_run_is_bounded(default_lm):
    n_layers_fit = 2
    eng = Engine(default_lm, ServerConfig(max_new_tokens=8))
    client = create_app(eng).test_client()
    r = client.post("/api/generate", json={"prompt": "Count to three.", "temperature": 0, "max_new_tokens": 4}).get_json()
    run = eng.store.get(r["run_id"])
    view_bytes = run.num_tokens**2 * 4  # one (T, T) float32 view: a head, or the mean or max
    run.attention_budget = n_layers_fit * view_bytes
    for layer in (1, 2, 3, 2, 4):
        assert client.get(f"/api/attention?run_id={run.id}&layer={layer}").status_code == 200
    assert list(run.attention_cache) == [(2, "mean"), (4, "mean")]  # least recently viewed dropped first
    assert client.get(f"/api/attention?run_id={run.id}&layer=4&head=5").status_code == 200
    assert list(run.attention_cache) == [(4, "mean"), (4, 5)]
    assert eng.store.total_bytes == run.nbytes


def test_projection_fits_without_the_sink_token(client, greedy_run, assert_error):
    run_id = greedy_run["run_id"]
    default = client.get(f"/api/embedding_projection?run_id={run_id}&layer=15").get_json()
    with_first = client.get(f"/api/embedding_projection?run_id={run_id}&layer=15&include_first=1").get_json()
    assert default["fit_positions"][0] == 1 and with_first["fit_positions"][0] == 0
    assert with_first["explained_variance"][0] > default["explained_variance"][0]
    assert len(default["points"]) == len(greedy_run["tokens"])
    assert_error(client.get(f"/api/embedding_projection?run_id={run_id}&include_first=yes"), 400, "include_first")


def test_estimate_matches_the_run_and_flags_budget(client, engine, default_lm, assert_error):
    body = {"prompt": "Count from one to fifty in words.", "temperature": 0, "max_new_tokens": 12}
    est = client.post("/api/estimate", json=body).get_json()
    run = client.post("/api/generate", json=body).get_json()
    assert est["num_prompt_tokens"] == run["num_prompt_tokens"] and est["fits"] is True
    assert run["finish_reason"] == "length" and len(run["tokens"]) == est["num_tokens"]
    stored = engine.store.get(run["run_id"])
    # what the run really holds, measured from its tensors and arrays
    held = sum(t.numel() * t.element_size() for t in (stored.result.hidden, stored.result.final_residual))
    held += sum(a.nbytes for a in vars(stored.result.stats).values())
    assert abs(est["run_bytes"] - held) / held < 0.10, (est["run_bytes"], held)
    assert est["run_bytes"] == stored.nbytes  # and exactly what the store counts
    before = stored.nbytes
    assert client.get("/api/attention", query_string={"run_id": run["run_id"], "layer": 2, "head": "mean"}).status_code == 200
    view = stored.attention_cache[(2, "mean")]
    assert est["attention_layer_bytes"] == view.numel() * view.element_size() == stored.nbytes - before
    assert est["attention_cache_bytes"] >= est["attention_layer_bytes"]
    assert est["peak_bytes"] > est["run_bytes"] > 0
    small = Engine(default_lm, ServerConfig(max_new_tokens=2048, store_budget_bytes=16 << 20))
    c2 = create_app(small).test_client()
    big = c2.post("/api/estimate", json={"prompt": "x", "max_new_tokens": 2000}).get_json()
    assert big["fits"] is False and "budget" in big["message"]
    assert_error(client.post("/api/estimate", json={"prompt": ""}), 400, "prompt")


def test_think_blocks_are_their_own_segment(client):
    r = client.post("/api/generate", json={
        "messages": [{"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "<think>greet back</think>Hello!"},
                     {"role": "user", "content": "Again"}],
        "temperature": 0, "max_new_tokens": 2,
    }).get_json()
    think = "".join(t["text"] for t in r["tokens"] if t["segment"] == "think")
    assert think == "<think>greet back</think>"
    assert any(t["segment"] == "assistant" and "Hello" in t["text"] for t in r["tokens"])
