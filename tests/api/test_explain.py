"""Explain endpoints on the real default model (SmolLM2-135M: 30 layers, 9 query heads over 3
KV heads): the logit attribution sums to the model's own logit difference from a plain forward,
gradient × input equals autograd written here, and the flow graph starts at the query node."""
import pytest
import torch

from llmvis.core.config import ServerConfig
from llmvis.engine.engine import Engine
from llmvis.web.app import create_app

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine(default_lm):
    return Engine(default_lm, ServerConfig(max_new_tokens=8))


@pytest.fixture(scope="module")
def client(engine):
    return create_app(engine).test_client()


@pytest.fixture(scope="module")
def run(client):
    resp = client.post("/api/generate", json={"prompt": "The capital of France is", "temperature": 0,
                                              "max_new_tokens": 6})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def get(client, path, **query):
    resp = client.get(path, query_string=query)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def plain_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double()


def test_logit_attribution_sums_to_the_models_logit(client, engine, run):
    ids = [t["id"] for t in run["tokens"]]
    pos = len(ids) - 3  # a generated token
    probs = get(client, "/api/token_probs", run_id=run["run_id"], position=pos, top_n=3)
    contrast = next(c["id"] for c in probs["candidates"] if c["id"] != ids[pos])
    logits = plain_logits(engine.lm.model, ids)
    out = get(client, "/api/explain/logit", run_id=run["run_id"], position=pos, contrast=contrast)
    want = float(logits[pos - 1, ids[pos]] - logits[pos - 1, contrast])
    parts = out["embedding"] + sum(out["attention"]) + sum(out["mlp"])
    assert abs(parts - want) < 1e-3 and abs(out["logit"] - want) < 1e-3, (parts, out["logit"], want)
    assert out["num_layers"] == 30 and out["num_heads"] == 9 and len(out["kv_group"]) == 9
    assert max(abs(sum(h) + b - a) for h, b, a in zip(out["heads"], out["o_bias"], out["attention"])) < 1e-4
    direct = get(client, "/api/explain/inputs", run_id=run["run_id"], position=pos, contrast=contrast, method="direct")
    assert abs(sum(direct["scores"]) - sum(map(sum, out["heads"]))) < 1e-3


def test_gradient_x_input_equals_autograd(client, engine, run):
    ids = [t["id"] for t in run["tokens"]]
    pos = len(ids) - 2
    out = get(client, "/api/explain/inputs", run_id=run["run_id"], position=pos, method="grad_x_input")
    model = engine.lm.model
    emb = model.get_input_embeddings().weight.detach()[torch.tensor(ids[:pos])].unsqueeze(0).clone().requires_grad_(True)
    logit = model(inputs_embeds=emb).logits[0, -1, ids[pos]]
    logit.backward()
    want = (emb.grad[0] * emb.detach()[0]).sum(-1)
    got = torch.tensor(out["scores"])
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4 + 1e-3 * float(want.abs().max())), (got[:5], want[:5])


def test_flow_graph_starts_at_the_prediction(client, run):
    pos = len(run["tokens"]) - 1
    out = get(client, "/api/explain/flow", run_id=run["run_id"], position=pos, threshold=0.1)
    assert {"layer": 30, "position": pos - 1} in out["nodes"]
    assert out["edges"] and all(e["weight"] >= 0.1 for e in out["edges"])
    nodes = {(n["layer"], n["position"]) for n in out["nodes"]}
    for e in out["edges"]:
        assert tuple(e["source"]) in nodes and tuple(e["target"]) in nodes and e["target"][0] == e["source"][0] + 1
        assert e["kind"] in ("attention", "residual", "mlp")
        if e["kind"] == "attention":
            assert 0 <= e["head"] < 9 and 0 < e["head_weight"] <= 1
    assert any(e["target"] == [30, pos - 1] for e in out["edges"])  # the prediction's node receives something
