"""POST /api/tokenize, /api/intervene/ablate, /api/intervene/steer, /api/intervene/patch,
GET /api/intervene/effects and GET /api/diff?align= on the tiny model (docs/INTERVENE.md).

Every number is checked against the reference copy of the model (eager attention) run with hooks
written here, or against plain torch maths; never against llmvis' own hooks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from .support import HEADS, KV_HEADS, LAYERS, VOCAB, get, ok

HEAD_DIM = 16


@pytest.fixture(scope="module")
def parent(client):
    body = {"prompt": "Why is the sky blue?", "temperature": 0.8, "top_k": 40, "seed": 3, "max_new_tokens": 8}
    return ok(client.post("/api/generate", json=body))


def _ids(run):
    return [t["id"] for t in run["tokens"]]


def _logits(ref, ids, pre=(), fwd=()):
    """The reference model's logits (T, V) float64 with the test's own hooks (removed after)."""
    handles = [m.register_forward_pre_hook(f) for m, f in pre] + [m.register_forward_hook(f) for m, f in fwd]
    try:
        with torch.no_grad():
            return ref.model(input_ids=torch.tensor([ids])).logits[0].double()
    finally:
        for h in handles:
            h.remove()


def _zero_heads(heads):
    def hook(module, args):
        x = args[0].clone()
        for h in heads:
            x[..., h * HEAD_DIM:(h + 1) * HEAD_DIM] = 0
        return (x,)
    return hook


# ---- tokenize --------------------------------------------------------------------------------------
def test_tokenize_plain_and_with_the_template(client, tiny_tokenizer):
    body = ok(client.post("/api/tokenize", json={"text": "The quick brown fox"}))
    want = tiny_tokenizer("The quick brown fox")["input_ids"]
    assert body["ids"] == want and body["count"] == len(want) and body["use_chat_template"] is False
    assert [t["id"] for t in body["tokens"]] == want and [t["position"] for t in body["tokens"]] == list(range(len(want)))
    assert "".join(t["text"] for t in body["tokens"][1:]) == "The quick brown fox"
    chat = ok(client.post("/api/tokenize", json={"text": "Hi", "use_chat_template": True, "system": "Be terse."}))
    rendered = tiny_tokenizer.apply_chat_template([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
                                                  tokenize=False, add_generation_prompt=True)
    assert chat["ids"] == tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("body,field", [
    ({}, "text"), ({"text": ""}, "text"), ({"text": 5}, "text"), ({"text": "a", "use_chat_template": "yes"}, "use_chat_template"),
    ({"text": "a", "system": 3}, "system"),
])
def test_tokenize_bad_input(client, assert_error, body, field):
    assert_error(client.post("/api/tokenize", json=body), 400, field)


def test_tokenize_needs_json(client, assert_error):
    assert_error(client.post("/api/tokenize", data="text=a", content_type="application/x-www-form-urlencoded"), 415)


# ---- ablation and effects ----------------------------------------------------------------------
def test_ablating_two_heads_makes_a_linked_run_whose_effects_match_the_reference(client, parent, ref):
    body = ok(client.post("/api/intervene/ablate", json={"run_id": parent["run_id"], "targets": [
        {"kind": "head", "layer": 1, "head": 0}, {"kind": "head", "layer": 1, "head": 3}]}))
    run, eff = body["run"], body["effects"]
    assert run["kind"] == "intervention" and run["parent_id"] == parent["run_id"]
    assert run["intervention"] == {"type": "ablate", "mode": "zero", "free": False, "targets": [
        {"kind": "head", "layer": 1, "head": 0}, {"kind": "head", "layer": 1, "head": 3}]}
    assert _ids(run) == _ids(parent) and run["num_prompt_tokens"] == parent["num_prompt_tokens"]
    assert run["params"] == parent["params"] | {"max_new_tokens": len(_ids(parent)) - parent["num_prompt_tokens"]}
    assert get(client, "/api/run", run_id=parent["run_id"])["children"][-1] == run["run_id"]
    assert get(client, "/api/run", run_id=run["run_id"])["intervention"] == run["intervention"]
    ids = _ids(parent)
    base = torch.log_softmax(_logits(ref, ids), -1)
    abl = torch.log_softmax(_logits(ref, ids, [(ref.model.model.layers[1].self_attn.o_proj, _zero_heads([0, 3]))]), -1)
    assert eff["align"] == "position" and eff["divergence_position"] is None
    assert [r["position"] for r in eff["positions"]] == list(range(1, len(ids)))
    for r in eff["positions"]:
        p = r["position"]
        assert r["kl"] == pytest.approx(float((base[p - 1].exp() * (base[p - 1] - abl[p - 1])).sum()), rel=1e-3, abs=1e-6)
        assert r["logprob_parent"] == pytest.approx(float(base[p - 1, ids[p]]), abs=1e-4)
        assert r["delta_logprob"] == pytest.approx(float(abl[p - 1, ids[p]] - base[p - 1, ids[p]]), abs=1e-4)
        assert r["kl_floored"] is False and r["same_token"] is True and isinstance(r["text"], str)
        # the run's own statistics are the intervened model's
        assert run["tokens"][p]["prob"] == pytest.approx(math.exp(float(abl[p - 1, ids[p]])), rel=1e-3)
    s = eff["summary"]
    assert s["num_measured"] == len(ids) - 1 and s["num_floored"] == 0 and s["floored_lower_bound"] is None
    assert s["mean_kl"] == pytest.approx(np.mean([r["kl"] for r in eff["positions"]]))
    assert s["top"][0]["kl"] == s["max_kl"] == max(r["kl"] for r in eff["positions"])
    again = get(client, "/api/intervene/effects", run_id=run["run_id"])
    assert again == eff | {"run_id": run["run_id"], "parent_id": parent["run_id"], "intervention": run["intervention"]}
    assert len(get(client, "/api/intervene/effects", run_id=run["run_id"], top=3)["summary"]["top"]) == 3


def test_a_kv_group_ablation_zeroes_the_heads_that_share_it(client, parent, ref):
    body = ok(client.post("/api/intervene/ablate", json={"run_id": parent["run_id"], "mode": "zero",
                                                        "targets": [{"kind": "kv_group", "layer": 0, "group": 1}]}))
    ids = _ids(parent)
    group = HEADS // KV_HEADS
    want = torch.log_softmax(_logits(ref, ids, [(ref.model.model.layers[0].self_attn.o_proj,
                                                _zero_heads(range(group, 2 * group)))]), -1)
    for r in body["effects"]["positions"]:
        p = r["position"]
        assert r["logprob_intervened"] == pytest.approx(float(want[p - 1, ids[p]]), abs=1e-4)


def test_a_free_ablation_diverges_and_its_effects_align_by_edit_distance(client, ref):
    greedy = ok(client.post("/api/generate", json={"prompt": "Count to three:", "temperature": 0, "max_new_tokens": 12}))
    body = ok(client.post("/api/intervene/ablate", json={"run_id": greedy["run_id"], "free": True, "mode": "mean",
                                                        "targets": [{"kind": "mlp", "layer": 0}, {"kind": "attention", "layer": 1}]}))
    run = body["run"]
    assert run["intervention"]["free"] is True and run["kind"] == "intervention"
    a, b = _ids(greedy), _ids(run)
    eff = body["effects"]
    same = a == b
    assert eff["align"] == ("position" if same else "edit")
    pairs = {(r["parent_position"], r["position"]) for r in eff["positions"]}
    prefix = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert all(1 <= i < len(a) and 1 <= j < len(b) for i, j in pairs)
    assert all(i == j for i, j in pairs if min(i, j) < prefix)  # the common prefix aligns position by position
    for r in eff["positions"]:
        assert r["same_token"] == (a[r["parent_position"]] == b[r["position"]])
        assert (r["delta_logprob"] is None) == (not r["same_token"])
    diff = get(client, "/api/diff", run_a=greedy["run_id"], run_b=run["run_id"], align="edit")
    assert diff["align"] == "edit" and diff["pairs"][: diff["common_prefix"]] == [[i, i] for i in range(diff["common_prefix"])]
    assert {(r["position"], r["position_b"]) for r in diff["kl"]} == pairs


@pytest.mark.parametrize("change,field,status", [
    ({"run_id": None}, "run_id", 400),
    ({"run_id": "feedfacefeedface"}, "run_id", 404),
    ({"targets": None}, "targets", 400),
    ({"targets": []}, "targets", 400),
    ({"targets": "head"}, "targets", 400),
    ({"targets": [{"kind": "head", "layer": 0, "head": HEADS}]}, "targets[0].head", 400),
    ({"targets": [{"kind": "head", "layer": 0, "head": -1}]}, "targets[0].head", 400),
    ({"targets": [{"kind": "head", "layer": LAYERS, "head": 0}]}, "targets[0].layer", 400),
    ({"targets": [{"kind": "head", "layer": 0}]}, "targets[0].head", 400),
    ({"targets": [{"kind": "kv_group", "layer": 0, "group": KV_HEADS}]}, "targets[0].group", 400),
    ({"targets": [{"kind": "neuron", "layer": 0}]}, "targets[0].kind", 400),
    ({"targets": [{"kind": "mlp", "layer": "0"}]}, "targets[0].layer", 400),
    ({"targets": [{"kind": "mlp", "layer": 0, "head": 1}]}, "targets[0]", 400),
    ({"targets": [{"kind": "mlp", "layer": 0}] * 65}, "targets", 400),
    ({"mode": "half"}, "mode", 400),
    ({"free": "yes"}, "free", 400),
])
def test_ablate_bad_input(client, parent, assert_error, change, field, status):
    body = {"run_id": parent["run_id"], "targets": [{"kind": "head", "layer": 0, "head": 0}]} | change
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(client.post("/api/intervene/ablate", json=body), status, field)


def test_effects_bad_input(client, parent, assert_error):
    assert_error(client.get("/api/intervene/effects", query_string={"run_id": parent["run_id"]}), 400, "run_id")
    assert_error(client.get("/api/intervene/effects", query_string={"run_id": "feedfacefeedface"}), 404, "run_id")
    ab = ok(client.post("/api/intervene/ablate", json={"run_id": parent["run_id"], "targets": [{"kind": "mlp", "layer": 1}]}))
    rid = ab["run"]["run_id"]
    assert_error(client.get("/api/intervene/effects", query_string={"run_id": rid, "align": "diagonal"}), 400, "align")
    assert_error(client.get("/api/intervene/effects", query_string={"run_id": rid, "top": "0"}), 400, "top")
    assert_error(client.get("/api/diff", query_string={"run_a": rid, "run_b": rid, "align": "x"}), 400, "align")


def test_an_intervention_run_exports_and_imports_with_its_spec(client, parent):
    ab = ok(client.post("/api/intervene/ablate", json={"run_id": parent["run_id"], "mode": "mean",
                                                      "targets": [{"kind": "head", "layer": 1, "head": 2}]}))["run"]
    data = client.get(f"/api/runs/{ab['run_id']}/export").get_data()
    back = ok(client.post("/api/import", data=data, content_type="application/octet-stream"))
    assert back["kind"] == "intervention" and back["intervention"] == ab["intervention"]
    assert back["parent_id"] == parent["run_id"] and _ids(back) == _ids(ab)


# ---- steering ----------------------------------------------------------------------------------
def test_steering_alpha_sweep_alpha_zero_is_the_parent_and_alpha_adds_the_vector(client, parent, ref):
    body = ok(client.post("/api/intervene/steer", json={"run_id": parent["run_id"], "layer": 1, "alphas": [0, 4.0],
                                                       "vector": {"source": "token", "token_id": 40}, "free": False}))
    unembed = ref.model.lm_head.weight[40].detach().double()
    assert body["vector"] == {"source": "token", "layer": 1, "norm": pytest.approx(float(unembed.norm()), rel=1e-5),
                              "normalize": False}
    zero, four = body["results"]
    assert zero["alpha"] == 0 and four["alpha"] == 4.0
    assert _ids(zero["run"]) == _ids(parent)
    assert all(r["kl"] < 1e-6 for r in zero["effects"]["positions"])
    ids = _ids(parent)
    start = parent["num_prompt_tokens"] - 1

    def add(module, args):
        x = args[0].clone()
        x[0, start:] += 4.0 * unembed.float()
        return (x, *args[1:])

    want = torch.log_softmax(_logits(ref, ids, [(ref.model.model.layers[1], add)]), -1)
    for r in four["effects"]["positions"]:
        p = r["position"]
        assert r["logprob_intervened"] == pytest.approx(float(want[p - 1, ids[p]]), abs=1e-4)
    assert four["run"]["intervention"]["from_position"] == start and four["run"]["parent_id"] == parent["run_id"]


def test_free_steering_with_alpha_zero_regenerates_the_parent_bit_for_bit(client, parent):
    body = ok(client.post("/api/intervene/steer", json={"run_id": parent["run_id"], "layer": 0, "alpha": 0.0,
                                                       "vector": {"source": "mean_diff", "positive": ["red"], "negative": ["dog"]}}))
    [res] = body["results"]
    assert res["run"]["tokens"] == parent["tokens"] and res["run"]["params"] == parent["params"]
    assert all(r["kl"] == 0 for r in res["effects"]["positions"])
    assert res["run"]["intervention"]["vector"]["positive"] == ["red"]


@pytest.mark.parametrize("change,field", [
    ({"layer": LAYERS}, "layer"), ({"layer": None}, "layer"), ({"alpha": None}, "alpha"),
    ({"alphas": [1.0]}, "alpha"), ({"alpha": None, "alphas": []}, "alphas"), ({"alpha": None, "alphas": [1] * 9}, "alphas"),
    ({"alpha": "big"}, "alpha"), ({"alpha": 1e9}, "alphas[0]"), ({"from_position": 10**6}, "from_position"),
    ({"vector": None}, "vector"), ({"vector": {"source": "magic"}}, "vector.source"),
    ({"vector": {"source": "raw", "values": [1.0, 2.0]}}, "vector.values"),
    ({"vector": {"source": "token", "token_id": VOCAB}}, "vector.token_id"),
    ({"vector": {"source": "token", "token": "The quick brown fox"}}, "vector.token"),
    ({"vector": {"source": "mean_diff", "positive": ["a"], "negative": []}}, "vector.negative"),
    ({"vector": {"source": "mean_diff", "positive": [""], "negative": ["b"]}}, "vector.positive[0]"),
    ({"free": 1}, "free"), ({"normalize": "no"}, "normalize"),
])
def test_steer_bad_input(client, parent, assert_error, change, field):
    body = {"run_id": parent["run_id"], "layer": 0, "alpha": 1.0, "vector": {"source": "token", "token_id": 5}} | change
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(client.post("/api/intervene/steer", json=body), 400, field)


# ---- patching ----------------------------------------------------------------------------------
CLEAN, CORRUPTED = "The quick brown fox", "The lazy brown dog"


def _brute_residual(ref, clean, corrupted, m, a, b):
    layers = ref.model.model.layers
    res = {}

    def keep(i):
        def hook(module, args):
            res.setdefault(i, args[0][0].clone())  # None: unchanged
        return hook

    hs = [layer.register_forward_pre_hook(keep(i)) for i, layer in enumerate(layers)]
    clean_logits = _logits(ref, clean)
    for h in hs:
        h.remove()
    out = np.zeros((len(layers), len(clean)))
    for layer in range(len(layers)):
        for p in range(len(clean)):
            def patch(module, args, p=p, layer=layer):
                x = args[0].clone()
                x[0, p] = res[layer][p]
                return (x, *args[1:])
            logits = _logits(ref, corrupted, [(layers[layer], patch)])
            out[layer, p] = float(logits[m, a] - logits[m, b])
    corrupted_logits = _logits(ref, corrupted)
    return out, float(clean_logits[m, a] - clean_logits[m, b]), float(corrupted_logits[m, a] - corrupted_logits[m, b])


def test_residual_patching_of_two_texts_matches_a_brute_force_loop(client, ref, tiny_tokenizer):
    clean, corrupted = tiny_tokenizer(CLEAN)["input_ids"], tiny_tokenizer(CORRUPTED)["input_ids"]
    body = ok(client.post("/api/intervene/patch", json={
        "clean": {"text": CLEAN}, "corrupted": {"text": CORRUPTED}, "sweep": "residual",
        "metric": {"type": "logit_diff", "token_a": " blue", "token_b": 9}}))
    a = tiny_tokenizer.encode(" blue", add_special_tokens=False)[0]
    m = len(clean) - 1
    assert body["metric"] == {"type": "logit_diff", "position": m, "token_a": a, "token_b": 9,
                              "texts": {"token_a": " blue", "token_b": body["metric"]["texts"]["token_b"]}}
    assert (body["num_layers"], body["num_tokens"], body["rows"], body["cols"]) == (LAYERS, len(clean), "layer", "position")
    want, want_clean, want_corrupted = _brute_residual(ref, clean, corrupted, m, a, 9)
    np.testing.assert_allclose(np.array(body["values"]), want, rtol=1e-4, atol=1e-4)
    assert body["clean_metric"] == pytest.approx(want_clean, abs=1e-4)
    assert body["corrupted_metric"] == pytest.approx(want_corrupted, abs=1e-4)
    norm = (want - want_corrupted) / (want_clean - want_corrupted)
    np.testing.assert_allclose(np.array(body["normalized"], dtype=float), norm, rtol=1e-3, atol=1e-3)
    assert body["tokens_clean"][1:] == [tiny_tokenizer.decode([i]) for i in clean[1:]]


def test_head_patching_of_two_runs_is_a_job_with_progress(client, ref, engine):
    runs = [ok(client.post("/api/score", json={"text": t})) for t in (CLEAN, CORRUPTED)]
    body = ok(client.post("/api/intervene/patch", json={
        "clean": {"run_id": runs[0]["run_id"]}, "corrupted": {"run_id": runs[1]["run_id"]}, "sweep": "heads",
        "head_position": 2, "metric": {"type": "logprob", "position": -1}, "job_id": "0123abcd"}))
    assert body["job_id"] == "0123abcd" and body["head_position"] == 2 and body["cols"] == "head"
    job = get(client, "/api/jobs/0123abcd")
    assert job == {"job_id": "0123abcd", "kind": "patch", "run_id": runs[0]["run_id"], "done": LAYERS * HEADS,
                   "total": LAYERS * HEADS, "status": "done"}
    clean, corrupted = _ids(runs[0]), _ids(runs[1])
    top = int(torch.argmax(_logits(ref, clean)[-1]))
    assert body["metric"]["token"] == top
    oin = {}

    def keep(i):
        def hook(module, args):
            oin.setdefault(i, args[0][0].clone())
        return hook

    layers = ref.model.model.layers
    hs = [layer.self_attn.o_proj.register_forward_pre_hook(keep(i)) for i, layer in enumerate(layers)]
    _logits(ref, clean)
    for h in hs:
        h.remove()
    for layer in range(LAYERS):
        for head in range(HEADS):
            def patch(module, args, layer=layer, head=head):
                x = args[0].clone()
                sl = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
                x[0, 2, sl] = oin[layer][2, sl]
                return (x,)
            want = float(torch.log_softmax(_logits(ref, corrupted, [(layers[layer].self_attn.o_proj, patch)])[-1], -1)[top])
            assert body["values"][layer][head] == pytest.approx(want, abs=1e-4)
    assert ok(client.post("/api/cancel", json={"run_id": "0123abcd"}))["cancelled"] is False  # already done


def test_patching_identical_texts_has_nothing_to_normalise(client):
    body = ok(client.post("/api/intervene/patch", json={
        "clean": {"text": CLEAN}, "corrupted": {"text": CLEAN}, "sweep": "residual",
        "metric": {"type": "logit_diff", "token_a": 5, "token_b": 9}}))
    assert body["clean_metric"] == body["corrupted_metric"] and "note" in body
    assert all(v is None for row in body["normalized"] for v in row)


@pytest.mark.parametrize("change,field,status", [
    ({"corrupted": {"text": "The lazy brown dog jumps"}}, "corrupted", 400),
    ({"clean": None}, "clean", 400),
    ({"clean": {"text": ""}}, "clean.text", 400),
    ({"clean": {"text": "a", "run_id": "feedfacefeedface"}}, "clean", 400),
    ({"clean": {"run_id": "feedfacefeedface"}}, "clean.run_id", 404),
    ({"metric": None}, "metric", 400),
    ({"metric": {"type": "accuracy"}}, "metric.type", 400),
    ({"metric": {"type": "logit_diff", "token_a": 5}}, "metric.token_b", 400),
    ({"metric": {"type": "logit_diff", "token_a": 5, "token_b": VOCAB}}, "metric.token_b", 400),
    ({"metric": {"type": "logit_diff", "token_a": "quick brown", "token_b": 1}}, "metric.token_a", 400),
    ({"metric": {"type": "logprob", "position": 99}}, "metric.position", 400),
    ({"metric": {"type": "logprob", "bogus": 1}}, "metric", 400),
    ({"sweep": "mlp"}, "sweep", 400),
    ({"sweep": "heads", "head_position": 99}, "head_position", 400),
    ({"sweep": "residual", "head_position": 1}, "head_position", 400),
    ({"job_id": "../x"}, "job_id", 400),
    ({"use_chat_template": "no"}, "use_chat_template", 400),
])
def test_patch_bad_input(client, assert_error, change, field, status):
    body = {"clean": {"text": CLEAN}, "corrupted": {"text": CORRUPTED},
            "metric": {"type": "logit_diff", "token_a": 5, "token_b": 9}} | change
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(client.post("/api/intervene/patch", json=body), status, field)


# ---- the diff's alignment ----------------------------------------------------------------------
def test_diff_of_a_fork_by_edit_distance(client, greedy_run, ref):
    pos = greedy_run["num_prompt_tokens"] + 1
    fork = ok(client.post("/api/fork", json={"run_id": greedy_run["run_id"], "position": pos, "token_id": 77}))
    plain = get(client, "/api/diff", run_a=greedy_run["run_id"], run_b=fork["run_id"])
    assert plain["align"] == "position" and all(r["after_divergence"] == (r["position"] > pos) for r in plain["kl"])
    body = get(client, "/api/diff", run_a=greedy_run["run_id"], run_b=fork["run_id"], align="edit")
    a, b = _ids(greedy_run), _ids(fork)
    assert body["align"] == "edit"
    left = [i for i, _ in body["pairs"] if i is not None]
    right = [j for _, j in body["pairs"] if j is not None]
    assert left == list(range(len(a))) and right == list(range(len(b)))
    fa, fb = ref.forward(a), ref.forward(b)
    for r in body["kl"]:
        i, j = r["position"], r["position_b"]
        pa, pb = fa.probs[i - 1], fb.probs[j - 1]
        assert r["kl_raw"] == pytest.approx(float((pa * (pa.log() - pb.log())).sum()), rel=1e-3, abs=1e-5)
        assert r["same_token"] == (a[i] == b[j])
    measured = [r["kl_raw"] for r in body["kl"] if not r["kl_raw_floored"]]
    assert body["summary"]["kl_raw"]["mean"] == pytest.approx(np.mean(measured))
    auto = get(client, "/api/diff", run_a=greedy_run["run_id"], run_b=fork["run_id"], align="auto")
    assert auto["align"] == "edit"


def test_a_sampling_kl_against_a_point_mass_is_floored_and_not_averaged(client):
    base = {"prompt": "Name three colours.", "max_new_tokens": 4}
    a = ok(client.post("/api/generate", json=base | {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 1}))
    b = ok(client.post("/api/generate", json=base | {"temperature": 0}))
    body = get(client, "/api/diff", run_a=a["run_id"], run_b=b["run_id"])
    assert all(r["kl_sampling_floored"] for r in body["kl"])  # a full distribution against a point mass: infinite
    s = body["summary"]["kl_sampling"]
    assert s["num_floored"] == len(body["kl"]) and s["mean"] is None and s["num_measured"] == 0
    assert s["floored_lower_bound"] == pytest.approx(min(r["kl_sampling"] for r in body["kl"]))
