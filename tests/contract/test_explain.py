"""GET /api/explain/{logit,inputs,flow} on the tiny Llama, checked against independent numbers:
the reference model's own eager forward, hooks written here, autograd and plain einsums.

Nothing here calls llmvis code for a reference value: the answers must sum to the model's own
logits, match a per-head recomputation with the other heads zeroed, equal an autograd gradient,
and equal a direct einsum of the eager attention weights and the values.
"""
import math
import threading
import time

import pytest
import torch

from .support import HEADS, KV_HEADS, LAYERS, get, ok

POS = 12  # the token explained: predicted from row POS - 1


@pytest.fixture(scope="module")
def run(greedy_run):
    assert len(greedy_run["tokens"]) > POS + 2
    return greedy_run


def ids_of(run):
    return [t["id"] for t in run["tokens"]]


def eager_rows(ref, ids):
    """The reference model's logits and its final norm's input (T, H), by a hook."""
    model = ref.model
    seen = []
    def keep_norm_input(module, args):
        seen.append(args[0][0].detach().double())

    hooks = [model.model.norm.register_forward_pre_hook(keep_norm_input)]
    try:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
    finally:
        for h in hooks:
            h.remove()
    return logits, seen[0]


def readout(ref, resid_q, target, contrast):
    """w with logit difference ≈ w · c for any residual part c: (W_U[t] - W_U[c]) ⊙ g / rms(resid)."""
    model = ref.model
    norm = model.model.norm
    w_u = model.lm_head.weight.detach().double()
    u = w_u[target] - (w_u[contrast] if contrast is not None else 0)
    rms = torch.sqrt(resid_q.pow(2).mean() + norm.variance_epsilon)
    return u * norm.weight.detach().double() / rms


def test_parts_sum_to_the_models_logit_difference(client, ref, run):
    ids = ids_of(run)
    probs = get(client, "/api/token_probs", run_id=run["run_id"], position=POS, top_n=5)
    target = ids[POS]
    contrast = next(c["id"] for c in probs["candidates"] if c["id"] != target)
    logits, _ = eager_rows(ref, ids)
    for c in (None, contrast):
        query = {"run_id": run["run_id"], "position": POS} | ({} if c is None else {"contrast": c})
        out = get(client, "/api/explain/logit", **query)
        want = float(logits[POS - 1, target] - (logits[POS - 1, c] if c is not None else 0))
        assert out["query_position"] == POS - 1 and out["target"]["id"] == target
        assert (out["contrast"] or {}).get("id") == c
        assert out["softcap"] is None
        assert abs(out["logit"] - want) < 1e-4, (out["logit"], want)
        parts = out["embedding"] + sum(out["attention"]) + sum(out["mlp"])
        assert abs(parts - want) < 1e-3 and out["gap"] < 1e-3, (parts, want)
        assert len(out["heads"]) == LAYERS and all(len(r) == HEADS for r in out["heads"])
        for layer in range(LAYERS):  # the heads and the output bias make up the attention part
            assert abs(sum(out["heads"][layer]) + out["o_bias"][layer] - out["attention"][layer]) < 1e-5
        assert out["kv_group"] == [h // (HEADS // KV_HEADS) for h in range(HEADS)]


def test_each_head_matches_a_forward_with_the_other_heads_zeroed(client, ref, run):
    ids = ids_of(run)
    q = POS - 1
    target, contrast = ids[POS], 7
    out = get(client, "/api/explain/logit", run_id=run["run_id"], position=POS, contrast=contrast)
    _, resid = eager_rows(ref, ids)
    w = readout(ref, resid[q], target, contrast)
    d = ref.model.config.hidden_size // HEADS
    for layer in range(LAYERS):
        o_proj = ref.model.model.layers[layer].self_attn.o_proj
        for head in range(HEADS):
            got = {}

            def keep_one(module, args, head=head):
                x = args[0].clone()
                mask = torch.zeros(x.shape[-1], dtype=x.dtype)
                mask[head * d:(head + 1) * d] = 1
                return (x * mask,)

            pre = o_proj.register_forward_pre_hook(keep_one)
            def record(module, args, output):
                got["out"] = output[0, q].detach().double()

            post = o_proj.register_forward_hook(record)
            try:
                with torch.no_grad():
                    ref.model(torch.tensor([ids[: q + 1]]))
            finally:
                pre.remove()
                post.remove()
            want = float(got["out"] @ w)
            assert abs(out["heads"][layer][head] - want) < 1e-5, (layer, head, out["heads"][layer][head], want)


def test_gradient_x_input_equals_autograd(client, ref, run):
    ids = ids_of(run)
    q = POS - 1
    target, contrast = ids[POS], 9
    out = get(client, "/api/explain/inputs", run_id=run["run_id"], position=POS, contrast=contrast,
              method="grad_x_input")
    emb = ref.model.model.embed_tokens.weight.detach()[torch.tensor(ids[: q + 1])].unsqueeze(0).clone()
    emb.requires_grad_(True)
    logits = ref.model(inputs_embeds=emb).logits[0, q]
    value = float((logits[target] - logits[contrast]).detach())
    (logits[target] - logits[contrast]).backward()
    want = (emb.grad[0] * emb.detach()[0]).sum(-1)
    assert len(out["scores"]) == q + 1 and out["tokens"][0] == run["tokens"][0]["text"]
    assert torch.allclose(torch.tensor(out["scores"], dtype=torch.float64), want.double(), atol=1e-5), (
        out["scores"][:4], want[:4])
    assert abs(out["value"] - value) < 1e-4


def test_integrated_gradients_completeness_gap_falls_with_steps(client, run):
    gaps = []
    for steps in (2, 8, 32):
        out = get(client, "/api/explain/inputs", run_id=run["run_id"], position=POS, method="integrated_gradients",
                  steps=steps)
        c = out["completeness"]
        assert out["steps"] == steps and abs(c["sum"] - sum(out["scores"])) < 1e-6
        assert abs(c["gap"] - abs(c["sum"] - c["expected"])) < 1e-9
        gaps.append(c["gap"])
    assert gaps[2] < gaps[1] < gaps[0], gaps  # the midpoint rule's error falls as steps grow
    assert gaps[2] < 0.01 * max(1e-9, abs(c["expected"])) + 1e-4, gaps
    assert c["baseline"]["id"] == 3  # the tiny tokenizer's EOS (its pad row, id 0, is all zeros)


def test_value_norm_equals_an_einsum_of_eager_attention_and_values(client, ref, run):
    ids = ids_of(run)
    q = POS - 1
    out = get(client, "/api/explain/inputs", run_id=run["run_id"], position=POS, method="value_norm")
    fwd = ref.forward(ids[: q + 1])  # eager attention weights (L, Hq, T, T)
    values = {}
    def keep_values(module, args, output, li):
        values[li] = output[0].detach().double()

    hooks = [layer.self_attn.v_proj.register_forward_hook(lambda m, a, o, li=li: keep_values(m, a, o, li))
             for li, layer in enumerate(ref.model.model.layers)]
    try:
        with torch.no_grad():
            ref.model(torch.tensor([ids[: q + 1]]))
    finally:
        for h in hooks:
            h.remove()
    d = ref.model.config.hidden_size // HEADS
    group = HEADS // KV_HEADS
    for layer in range(LAYERS):
        w_o = ref.model.model.layers[layer].self_attn.o_proj.weight.detach().double()  # (H, Hq*d)
        v = values[layer].view(q + 1, KV_HEADS, d)  # (S, Hkv, d)
        per_head = torch.stack([v[:, h // group] @ w_o[:, h * d:(h + 1) * d].T for h in range(HEADS)])  # (Hq, S, H)
        a = fwd.attentions[layer, :, q, : q + 1]  # (Hq, S)
        want = torch.einsum("hs,hs->s", a, per_head.norm(dim=-1))
        want = want / want.sum()
        assert torch.allclose(torch.tensor(out["layers"][layer], dtype=torch.float64), want, atol=1e-5)
    mean = torch.tensor(out["layers"]).mean(0)
    assert torch.allclose(torch.tensor(out["scores"]), mean, atol=1e-6)


def test_direct_parts_per_source_sum_to_the_heads(client, run):
    logit = get(client, "/api/explain/logit", run_id=run["run_id"], position=POS, contrast=5)
    direct = get(client, "/api/explain/inputs", run_id=run["run_id"], position=POS, contrast=5, method="direct")
    for layer in range(LAYERS):
        assert abs(sum(direct["layers"][layer]) - sum(logit["heads"][layer])) < 1e-5
    assert abs(sum(direct["scores"]) - sum(map(sum, logit["heads"]))) < 1e-5


def test_flow_graph_edges_are_normalised_and_pruned(client, run):
    full = get(client, "/api/explain/flow", run_id=run["run_id"], position=POS, threshold=1e-9)
    q = POS - 1
    nodes = {(n["layer"], n["position"]) for n in full["nodes"]}
    assert (LAYERS, q) in nodes and full["query_position"] == q
    into = {}
    for e in full["edges"]:
        (sl, sp), (tl, tp) = e["source"], e["target"]
        assert tl == sl + 1 and sp <= tp and (sl, sp) in nodes and (tl, tp) in nodes
        assert e["kind"] in ("attention", "residual", "mlp")
        assert (e["head"] is None) == (e["kind"] != "attention")
        into[(tl, tp)] = into.get((tl, tp), 0.0) + e["weight"]
    for node, total in into.items():  # nothing pruned: every receiving node's weights sum to 1
        assert abs(total - 1) < 1e-4, (node, total)
    pruned = get(client, "/api/explain/flow", run_id=run["run_id"], position=POS, threshold=0.2)
    assert pruned["edges"] and all(e["weight"] >= 0.2 for e in pruned["edges"])
    assert len(pruned["edges"]) < len(full["edges"])


def test_gradient_job_reports_progress_and_can_be_cancelled(client, engine, run):
    done = get(client, "/api/explain/inputs", run_id=run["run_id"], position=POS, method="integrated_gradients",
               steps=4, job_id="1e1e0001")
    assert done["steps"] == 4
    job = get(client, "/api/jobs/1e1e0001")
    assert (job["done"], job["total"], job["status"]) == (4, 4, "done")
    # a slow job: a hook written here makes each forward take a while, so the cancel lands mid-way
    slow = engine.lm.model.register_forward_pre_hook(lambda m, a, k: time.sleep(0.05), with_kwargs=True)
    answers = {}
    try:
        worker = threading.Thread(target=lambda: answers.setdefault("r", client.get("/api/explain/inputs", query_string={
            "run_id": run["run_id"], "position": POS + 1, "method": "integrated_gradients", "steps": 100,
            "job_id": "1e1e0002"})))
        worker.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            resp = client.get("/api/jobs/1e1e0002")
            if resp.status_code == 200 and resp.get_json()["done"] >= 2:
                break
            time.sleep(0.02)
        assert ok(client.post("/api/cancel", json={"run_id": "1e1e0002"}))["cancelled"] is True
        worker.join(30)
    finally:
        slow.remove()
    resp = answers["r"]
    assert resp.status_code == 409 and "cancelled" in resp.get_json()["error"], resp.get_json()
    assert get(client, "/api/jobs/1e1e0002")["status"] == "cancelled"


@pytest.mark.parametrize("path,query,field", [
    ("/api/explain/logit", {"position": 0}, "position"),
    ("/api/explain/logit", {"position": "x"}, "position"),
    ("/api/explain/logit", {"position": 10 ** 6}, "position"),
    ("/api/explain/logit", {"position": 3, "target": -1}, "target"),
    ("/api/explain/logit", {"position": 3, "contrast": 10 ** 7}, "contrast"),
    ("/api/explain/logit", {"position": 3, "target": 5, "contrast": 5}, "contrast"),
    ("/api/explain/inputs", {"position": 3, "method": "shap"}, "method"),
    ("/api/explain/inputs", {"position": 3, "method": "integrated_gradients", "steps": 0}, "steps"),
    ("/api/explain/inputs", {"position": 3, "method": "integrated_gradients", "steps": 129}, "steps"),
    ("/api/explain/inputs", {"position": 3, "job_id": "../x"}, "job_id"),
    ("/api/explain/flow", {"position": 3, "threshold": 0}, "threshold"),
    ("/api/explain/flow", {"position": 3, "threshold": "nan"}, "threshold"),
    ("/api/explain/flow", {"position": 3, "threshold": 2}, "threshold"),
])
def test_bad_input_is_a_clear_400(client, run, assert_error, path, query, field):
    assert_error(client.get(path, query_string={"run_id": run["run_id"]} | query), 400, field)


def test_unknown_run_is_404(client, assert_error):
    for path in ("/api/explain/logit", "/api/explain/inputs", "/api/explain/flow"):
        assert_error(client.get(path, query_string={"run_id": "0" * 16, "position": 1}), 404, "run_id")


def test_the_python_api_answers_what_the_http_api_answers(client, engine, run):
    from llmvis.pyapi import Trace

    trace = Trace(engine, engine.get_run(run["run_id"]))
    rid = run["run_id"]
    drop = lambda d: {k: v for k, v in d.items() if k != "compute_s"}  # noqa: E731
    assert drop(trace.explain(POS, contrast=5)) == drop(get(client, "/api/explain/logit", run_id=rid, position=POS,
                                                            contrast=5))
    for method in ("grad_x_input", "integrated_gradients", "value_norm", "direct"):
        api = get(client, "/api/explain/inputs", run_id=rid, position=POS, method=method, steps=4)
        assert drop(trace.explain(POS, method=method, steps=4)) == drop(api), method
    assert drop(trace.explain(POS, method="flow", threshold=0.1)) == drop(
        get(client, "/api/explain/flow", run_id=rid, position=POS, threshold=0.1))
    with pytest.raises(Exception, match="method"):
        trace.explain(POS, method="shap")


def test_the_direction_reads_the_logit_from_the_final_residual(client, ref, run):
    """direction = (W_U[t] - W_U[c]) ⊙ g and norm_scale = 1/rms: their product with the eager final
    residual is the logit difference (no bias here); the page offers it as a steering vector."""
    ids = ids_of(run)
    out = get(client, "/api/explain/logit", run_id=run["run_id"], position=POS, contrast=6)
    _, resid = eager_rows(ref, ids)
    w = readout(ref, resid[POS - 1], ids[POS], 6)
    direction = torch.tensor(out["direction"], dtype=torch.float64)
    assert direction.shape == (ref.model.config.hidden_size,)
    assert torch.allclose(direction * out["norm_scale"], w, rtol=1e-4, atol=1e-7)
    assert abs(float(direction @ resid[POS - 1]) * out["norm_scale"] - out["logit"]) < 1e-3
