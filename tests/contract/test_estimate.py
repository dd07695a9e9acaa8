"""POST /api/estimate against what the server then holds: the run's bytes in the store, the bytes
of its tensors in an export, and the growth of one cached attention view."""
import pytest
from safetensors.torch import load

from .support import get, ok

BODY = {"system": "You are terse.", "prompt": "Estimate me, please.", "temperature": 0, "max_new_tokens": 12}


def test_estimate_agrees_with_the_stored_run_and_one_attention_view(make_server):
    eng, client = make_server()
    est = ok(client.post("/api/estimate", json=BODY))
    assert set(est) >= {"num_prompt_tokens", "num_tokens", "run_bytes", "kv_cache_bytes", "attention_layer_bytes",
                        "attention_cache_bytes", "peak_bytes", "store_budget_bytes", "fits"}
    assert len(eng.store) == 0 and not len(eng.jobs)  # nothing was generated
    run = ok(client.post("/api/generate", json=BODY))
    assert run["finish_reason"] == "length"  # so the run has exactly the estimated length
    assert (est["num_prompt_tokens"], est["num_tokens"]) == (run["num_prompt_tokens"], run["num_tokens"])
    assert est["fits"] is True and est["store_budget_bytes"] == 2 << 30 and "message" not in est
    t = run["num_tokens"]
    stored = eng.store.get(run["run_id"]).nbytes
    numbers = {"estimate run_bytes": est["run_bytes"], "stored nbytes": stored}
    assert abs(stored - est["run_bytes"]) <= 0.10 * stored, numbers
    # the arrays the run holds, as an export writes them, are the same size (ids and timings aside)
    tensors = load(client.get(f"/api/runs/{run['run_id']}/export").data)
    held = sum(v.numel() * v.element_size() for k, v in tensors.items() if k not in ("ids", "step_s"))
    assert abs(held - est["run_bytes"]) <= 0.10 * held, numbers | {"exported tensors": held}
    # one attention view is one (T, T) float32 matrix
    assert est["attention_layer_bytes"] == pytest.approx(t * t * 4, rel=0.10)
    get(client, "/api/attention", run_id=run["run_id"], layer=0, head="mean")
    grown = eng.store.get(run["run_id"]).nbytes - stored
    numbers |= {"exported tensors": held, "grown by one view": grown, "attention_layer_bytes": est["attention_layer_bytes"]}
    assert abs(grown - est["attention_layer_bytes"]) <= 0.10 * grown, numbers
    assert est["peak_bytes"] > est["run_bytes"] + est["attention_layer_bytes"]
    # KV cache: 2 (K, V) x layers x KV heads x head_dim x T x 4 bytes
    assert est["kv_cache_bytes"] == pytest.approx(2 * 2 * 2 * 16 * t * 4, rel=0.10)


def test_estimate_flags_runs_that_do_not_fit(make_server, tiny_tokenizer):
    _, client = make_server(store_budget_bytes=64 << 10)
    big = ok(client.post("/api/estimate", json={"prompt": "x", "max_new_tokens": 32}))
    assert big["fits"] is False and big["run_bytes"] > 64 << 10 and "budget" in big["message"]
    _, client = make_server()
    long = ok(client.post("/api/estimate", json={"prompt": "hello " * 125, "max_new_tokens": 32}))
    assert long["num_tokens"] > 512 and long["fits"] is False and "context" in long["message"]


def test_estimate_grows_with_the_length_asked(client):
    a = ok(client.post("/api/estimate", json=BODY | {"max_new_tokens": 4}))
    b = ok(client.post("/api/estimate", json=BODY | {"max_new_tokens": 8}))
    assert b["num_tokens"] - a["num_tokens"] == 4
    per_token = (b["run_bytes"] - a["run_bytes"]) / 4
    # per token: (L + 2) hidden states of 64 float32, 100 alternatives x (id, prob, sample prob), scalars
    assert per_token == pytest.approx(4 * 64 * 4 + 100 * 12 + 28, rel=0.15)


def test_cached_attention_per_run_is_bounded(make_server):
    """A run caches at most attention_cache_bytes of views, least recently viewed dropped first;
    the store counts what it holds."""
    _, probe = make_server()
    t = ok(probe.post("/api/estimate", json=BODY))["num_tokens"]
    view = t * t * 4
    eng, client = make_server(attention_cache_bytes=2 * view)
    run = ok(client.post("/api/generate", json=BODY))
    base = eng.store.get(run["run_id"]).nbytes
    first = get(client, "/api/attention", run_id=run["run_id"], layer=0, head=0)
    for layer, head in ((1, 0), (0, "max"), (1, 3)):
        get(client, "/api/attention", run_id=run["run_id"], layer=layer, head=head)
        held = eng.store.get(run["run_id"]).nbytes - base
        assert held <= 2 * view, (layer, head, held, view)
    assert held == 2 * view and eng.store.total_bytes == eng.store.get(run["run_id"]).nbytes
    # the first view was dropped from the cache: it is recomputed, identically, and still within bounds
    assert get(client, "/api/attention", run_id=run["run_id"], layer=0, head=0) == first
    assert eng.store.get(run["run_id"]).nbytes - base == 2 * view
