"""Interventions on the real default model (SmolLM2-135M: 30 layers, 9 query heads over 3 KV
heads), through the API and the Python API, which must answer the same numbers.

Each number is checked against the model's own forward pass with hooks written here."""
import numpy as np
import pytest
import torch

import llmvis
from llmvis import pyapi
from llmvis.web.app import create_app

pytestmark = pytest.mark.model

CLEAN, CORRUPTED = "The Eiffel Tower is in", "The Colosseum is in"


@pytest.fixture(scope="module")
def engine():
    return pyapi.engine_for("default")  # the engine llmvis.patch / llmvis.trace use, so both answer alike


@pytest.fixture(scope="module")
def client(engine):
    return create_app(engine).test_client()


@pytest.fixture(scope="module")
def parent(client):
    r = client.post("/api/generate", json={"prompt": "Name a fruit.", "temperature": 0.7, "seed": 4, "max_new_tokens": 8})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _ids(run):
    return [t["id"] for t in run["tokens"]]


def _logits(model, ids, pre=()):
    handles = [m.register_forward_pre_hook(f) for m, f in pre]
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0].double()
    finally:
        for h in handles:
            h.remove()


def test_zero_ablating_two_heads_equals_a_forward_with_their_o_proj_slices_zeroed(client, parent, engine):
    model = engine.lm.model
    d = 64
    layer, heads = 14, (3, 4)

    def zero(module, args):
        x = args[0].clone()
        for h in heads:
            x[..., h * d:(h + 1) * d] = 0
        return (x,)

    body = client.post("/api/intervene/ablate", json={"run_id": parent["run_id"], "targets": [
        {"kind": "head", "layer": layer, "head": h} for h in heads]}).get_json()
    run, eff = body["run"], body["effects"]
    assert run["kind"] == "intervention" and run["parent_id"] == parent["run_id"] and _ids(run) == _ids(parent)
    ids = _ids(parent)
    with torch.no_grad():
        base = torch.log_softmax(_logits(model, ids), -1)
        abl = torch.log_softmax(_logits(model, ids, [(model.model.layers[layer].self_attn.o_proj, zero)]), -1)
    for r in eff["positions"]:
        p = r["position"]
        assert r["logprob_intervened"] == pytest.approx(float(abl[p - 1, ids[p]]), abs=2e-4)
        assert r["kl"] == pytest.approx(float((base[p - 1].exp() * (base[p - 1] - abl[p - 1])).sum()), rel=2e-3, abs=1e-5)
    assert eff["summary"]["max_kl"] > 0
    # the Python API: the same run and the same effects
    trace = pyapi.Trace(engine, engine.get_run(parent["run_id"]))
    again = trace.ablate(heads=[(layer, h) for h in heads])
    assert again.run.kind == "intervention" and again.run.links == {"parent_id": parent["run_id"],
                                                                  "intervention": run["intervention"]}
    assert [t["prob"] for t in again.tokens] == [t["prob"] for t in run["tokens"]]
    mine = again.effects()
    assert mine["positions"] == eff["positions"] and mine["summary"] == eff["summary"]


def test_a_plain_run_after_interventions_is_bit_identical(engine, parent):
    before = llmvis.trace("Name a fruit.", temperature=0.7, seed=4, max_new_tokens=8)
    trace = pyapi.Trace(engine, engine.get_run(parent["run_id"]))
    trace.ablate(kv_groups=[(3, 1)], mlp=[5], mode="mean")
    trace.steer(10, 7042, [0.0, 8.0])
    after = llmvis.trace("Name a fruit.", temperature=0.7, seed=4, max_new_tokens=8)
    assert after.run.ids == before.run.ids == parent_ids(parent)
    assert torch.equal(after.run.hidden, before.run.hidden)


def parent_ids(parent):
    return _ids(parent)


def test_steering_the_python_api_and_the_api_agree_and_alpha_zero_is_the_parent(client, engine, parent):
    vec = np.random.default_rng(0).standard_normal(576).astype(np.float32)
    body = client.post("/api/intervene/steer", json={"run_id": parent["run_id"], "layer": 12, "alphas": [0.0, 6.0],
                                                    "vector": {"source": "raw", "values": vec.tolist()},
                                                    "normalize": True}).get_json()
    assert body["vector"]["norm"] == pytest.approx(float(np.linalg.norm(vec.astype(np.float64))), rel=1e-5)
    zero, six = body["results"]
    assert zero["run"]["tokens"] == parent["tokens"]
    trace = pyapi.Trace(engine, engine.get_run(parent["run_id"]))
    mine = trace.steer(12, vec, [0.0, 6.0], normalize=True)
    assert [t.tokens for t in mine] == [zero["run"]["tokens"], six["run"]["tokens"]]
    assert mine[1].effects()["positions"] == six["effects"]["positions"]


def test_eiffel_tower_patching_matches_a_brute_force_loop_and_the_python_api(client, engine):
    tok = engine.lm.tokenizer
    paris, rome = tok.encode(" Paris", add_special_tokens=False)[0], tok.encode(" Rome", add_special_tokens=False)[0]
    body = client.post("/api/intervene/patch", json={
        "clean": {"text": CLEAN}, "corrupted": {"text": CORRUPTED}, "sweep": "residual",
        "metric": {"type": "logit_diff", "token_a": " Paris", "token_b": " Rome"}, "job_id": "e1ffe1e1"}).get_json()
    assert body["metric"]["token_a"] == paris and body["metric"]["token_b"] == rome
    assert body["clean_metric"] > 0 > body["corrupted_metric"]  # Paris for the tower, Rome for the Colosseum
    model = engine.lm.model
    clean, corrupted = tok(CLEAN)["input_ids"], tok(CORRUPTED)["input_ids"]
    layers = model.model.layers
    res = {}

    def keep(i):
        def hook(module, args):
            res.setdefault(i, args[0][0].clone())
        return hook

    hs = [layer.register_forward_pre_hook(keep(i)) for i, layer in enumerate(layers)]
    clean_logits = _logits(model, clean)
    for h in hs:
        h.remove()
    assert body["clean_metric"] == pytest.approx(float(clean_logits[-1, paris] - clean_logits[-1, rome]), abs=1e-3)
    for layer in range(0, 30, 3):
        for p in range(len(clean)):
            def patch(module, args, p=p, layer=layer):
                x = args[0].clone()
                x[0, p] = res[layer][p]
                return (x, *args[1:])
            logits = _logits(model, corrupted, [(layers[layer], patch)])
            assert body["values"][layer][p] == pytest.approx(float(logits[-1, paris] - logits[-1, rome]), abs=2e-3)
    norm = np.array(body["normalized"], dtype=float)
    same = [p for p in range(len(clean)) if clean[p] == corrupted[p]]
    assert np.abs(norm[0, same]).max() < 1e-3  # the same token's embedding changes nothing
    assert client.get("/api/jobs/e1ffe1e1").get_json()["status"] == "done"
    mine = llmvis.patch(CLEAN, CORRUPTED, metric={"type": "logit_diff", "token_a": " Paris", "token_b": " Rome"})
    assert {k: v for k, v in mine.items() if k not in ("compute_s", "job_id")} == \
        {k: v for k, v in body.items() if k not in ("compute_s", "job_id")}
    heads = llmvis.patch(CLEAN, CORRUPTED, metric={"type": "logit_diff", "token_a": paris, "token_b": rome}, sweep="heads")
    assert np.array(heads["values"]).shape == (30, 9)
