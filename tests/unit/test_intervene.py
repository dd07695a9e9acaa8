"""Interventions on tiny random-weight models (issue 15): every number is checked against an eager
forward pass with hooks written here, or a brute-force loop, never against llmvis' own hooks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.support import build_tokenizer
from llmvis.core.errors import BadRequest, Cancelled, GenerationFailed
from llmvis.engine import intervene as iv
from llmvis.engine.decode import GenerationParams
from llmvis.engine.engine import Engine
from llmvis.engine.views import align_runs, edit_alignment, kl_dense, kl_logp
from llmvis.keep.bundle import dump_bundle, read_bundle
from llmvis.keep.history import History
from llmvis.keep.library import history_row
from llmvis.model.loading import LoadedModel, ModelSource

VOCAB = 384
GQA_KINDS = ("llama", "qwen3", "qwen2", "mistral", "gemma", "gemma2", "gemma3")
PROMPT = "Why is the sky blue? Because"


def _engine(make_tiny, kind: str, seed: int = 3):
    model = make_tiny(kind, layers=2, seed=seed, vocab_size=VOCAB)
    lm = LoadedModel(model=model, tokenizer=build_tokenizer(), name=f"tiny-{kind}",
                     source=ModelSource("folder", Path("/nonexistent"), f"tiny-{kind}"))
    return Engine(lm)


def _eager(make_tiny, kind: str, seed: int = 3):
    ref = make_tiny(kind, layers=2, seed=seed, vocab_size=VOCAB)
    ref.set_attn_implementation("eager")
    return ref


def _run(eng, temperature=0.8, new=8, seed=5):
    return eng.generate([{"role": "user", "content": PROMPT}], GenerationParams(temperature, 40, 0.95, new, seed), False)


def _layers(model):
    return model.get_decoder().layers


def _hd(model):
    cfg = model.config.get_text_config(decoder=True)
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def _final_logits(model, ids, pre_hooks=(), fwd_hooks=()):
    """Logits of a plain eager forward with the test's own hooks (removed after)."""
    handles = [m.register_forward_pre_hook(f) for m, f in pre_hooks] + [m.register_forward_hook(f) for m, f in fwd_hooks]
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0].float()
    finally:
        for h in handles:
            h.remove()


def _run_logits(eng, run):
    """The run's logits from its stored final states (row p predicts token p + 1)."""
    head = eng.lm.model.get_output_embeddings()
    with torch.no_grad():
        logits = head(run.hidden[-1]).float()
    cap = getattr(eng.lm.model.config.get_text_config(decoder=True), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _no_hooks_left(model):
    """No hook of llmvis' interventions is left on any module (transformers keeps its own)."""
    for m in model.modules():
        for fn in [*m._forward_pre_hooks.values(), *m._forward_hooks.values()]:
            assert getattr(fn, "__module__", "") != "llmvis.model.intervene", (type(m).__name__, fn)


# ---- ablation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", GQA_KINDS)
def test_zero_ablating_a_head_equals_an_eager_forward_with_its_o_proj_slice_zeroed(make_tiny, kind):
    eng = _engine(make_tiny, kind)
    ref = _eager(make_tiny, kind)
    parent = _run(eng)
    layer, head = 1, 2
    d = _hd(ref)

    def zero_head(module, args):
        x = args[0].clone()
        x[..., head * d:(head + 1) * d] = 0
        return (x,)

    ab = eng.ablate(parent, [{"kind": "head", "layer": layer, "head": head}], "zero")
    assert ab.kind == "intervention" and ab.ids == parent.ids and ab.links["parent_id"] == parent.id
    want = _final_logits(ref, parent.ids, [(_layers(ref)[layer].self_attn.o_proj, zero_head)])
    plain = _final_logits(ref, parent.ids)
    got = _run_logits(eng, ab)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - plain).abs().max() > 1e-4  # the ablation changed something
    _no_hooks_left(eng.lm.model)


@pytest.mark.parametrize("kind", ("llama", "gemma2"))
def test_kv_group_mlp_and_attention_ablation_with_means_equal_eager_hooks(make_tiny, kind):
    eng = _engine(make_tiny, kind)
    ref = _eager(make_tiny, kind)
    parent = _run(eng)
    d = _hd(ref)
    layers = _layers(ref)
    seen = {}

    def keep(key, pick):
        def hook(module, args, out=None):
            seen.setdefault(key, pick(args, out).clone())  # returns None: the forward is unchanged
        return hook

    rec = [(layers[0].self_attn.o_proj, keep("o", lambda a, out: a[0][0]))]
    fwd = [(layers[1].mlp, keep("mlp", lambda a, out: out[0])),
           (layers[1].self_attn, keep("attn", lambda a, out: out[0][0]))]
    _final_logits(ref, parent.ids, rec, fwd)  # the test's own means over the parent's positions
    mean_o, mean_mlp, mean_attn = seen["o"].mean(0), seen["mlp"].mean(0), seen["attn"].mean(0)
    group_heads = [2, 3]  # group 1 of 4 query heads over 2 KV heads

    def heads_to_mean(module, args):
        x = args[0].clone()
        for h in group_heads:
            x[..., h * d:(h + 1) * d] = mean_o[h * d:(h + 1) * d]
        return (x,)

    def attn_to_mean(module, args, out):
        return (mean_attn.expand_as(out[0]).clone(), *out[1:])

    ab = eng.ablate(parent, [{"kind": "kv_group", "layer": 0, "group": 1}, {"kind": "mlp", "layer": 1},
                             {"kind": "attention", "layer": 1}], "mean")
    want = _final_logits(ref, parent.ids, [(layers[0].self_attn.o_proj, heads_to_mean)],
                         [(layers[1].mlp, lambda m, a, out: mean_mlp.expand_as(out).clone()),
                          (layers[1].self_attn, attn_to_mean)])
    torch.testing.assert_close(_run_logits(eng, ab), want, rtol=1e-4, atol=1e-4)
    zero = eng.ablate(parent, [{"kind": "mlp", "layer": 0}], "zero")
    want0 = _final_logits(ref, parent.ids, fwd_hooks=[(layers[0].mlp, lambda m, a, out: torch.zeros_like(out))])
    torch.testing.assert_close(_run_logits(eng, zero), want0, rtol=1e-4, atol=1e-4)


def test_teacher_forced_statistics_match_the_eager_forward_and_the_effects_are_measured(make_tiny):
    eng = _engine(make_tiny, "llama")
    ref = _eager(make_tiny, "llama")
    parent = _run(eng)
    d = _hd(ref)

    def zero(module, args):
        x = args[0].clone()
        x[..., 0:d] = 0
        return (x,)

    ab = eng.ablate(parent, [{"kind": "head", "layer": 0, "head": 0}])
    want = _final_logits(ref, parent.ids, [(_layers(ref)[0].self_attn.o_proj, zero)])
    logp = torch.log_softmax(want, -1)
    nxt = torch.tensor(parent.ids[1:])
    np.testing.assert_allclose(ab.result.stats.prob[1:], logp[:-1].gather(1, nxt[:, None])[:, 0].exp().numpy(), rtol=1e-4)
    assert np.isnan(ab.result.stats.sample_prob[: parent.num_prompt]).all()
    assert not np.isnan(ab.result.stats.sample_prob[parent.num_prompt:]).any()
    eff = eng.intervention_effects(ab)
    assert eff["align"] == "position" and eff["divergence_position"] is None
    base = torch.log_softmax(_final_logits(ref, parent.ids), -1)
    for row in eff["positions"]:
        p = row["position"]
        kl_want = float((base[p - 1].exp() * (base[p - 1] - logp[p - 1])).sum())
        assert row["kl"] == pytest.approx(kl_want, rel=1e-3, abs=1e-5) and not row["kl_floored"]
        assert row["delta_logprob"] == pytest.approx(float(logp[p - 1, parent.ids[p]] - base[p - 1, parent.ids[p]]), abs=1e-4)
    top = eff["summary"]["top"]
    assert [r["kl"] for r in top] == sorted((r["kl"] for r in eff["positions"]), reverse=True)[: len(top)]
    assert eff["summary"]["mean_kl"] == pytest.approx(np.mean([r["kl"] for r in eff["positions"]]))


def test_free_ablation_follows_the_parent_until_it_diverges_and_aligns_by_edit_distance(make_tiny):
    eng = _engine(make_tiny, "qwen3")
    parent = _run(eng, temperature=0.0, new=12)
    ab = eng.ablate(parent, [{"kind": "attention", "layer": 0}, {"kind": "mlp", "layer": 1}], "zero", free=True)
    assert ab.ids[: parent.num_prompt] == parent.ids[: parent.num_prompt]
    assert ab.links["intervention"]["free"] is True
    eff = eng.intervention_effects(ab, align="edit")
    assert eff["align"] == "edit"
    _, pairs = align_runs(parent.ids, ab.ids, "edit")
    dist = sum(1 for i, j in pairs if i is None or j is None or parent.ids[i] != ab.ids[j])
    assert dist == _levenshtein(parent.ids, ab.ids)


# ---- steering ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ("llama", "gemma3"))
def test_steering_alpha_zero_is_bit_identical_and_alpha_adds_the_vector(make_tiny, kind):
    eng = _engine(make_tiny, kind)
    ref = _eager(make_tiny, kind)
    parent = _run(eng)
    size = int(eng.lm.config.get_text_config(decoder=True).hidden_size)
    v = torch.randn(size, generator=torch.Generator().manual_seed(0))
    summary, runs = eng.steer(parent, 1, {"source": "raw", "values": v.tolist()}, [0.0, 3.0])
    same = runs[0]
    assert same.ids == parent.ids and torch.equal(same.hidden, parent.hidden)
    for name in ("prob", "rank", "entropy", "top_ids", "top_probs"):
        np.testing.assert_array_equal(getattr(same.result.stats, name), getattr(parent.result.stats, name))
    assert summary["norm"] == pytest.approx(float(v.norm()))
    # teacher-forced steering against the test's own hook: + 3 v at positions >= the last prompt token
    _, [forced] = eng.steer(parent, 1, {"source": "raw", "values": v.tolist()}, [3.0], free=False)
    start = parent.num_prompt - 1

    def add(module, args, kwargs):
        x = args[0].clone() if args else kwargs["hidden_states"].clone()
        x[0, start:] += 3.0 * v
        return ((x, *args[1:]), kwargs) if args else (args, dict(kwargs, hidden_states=x))

    h = _layers(ref)[1].register_forward_pre_hook(add, with_kwargs=True)
    try:
        with torch.no_grad():
            want = ref(input_ids=torch.tensor([parent.ids])).logits[0].float()
    finally:
        h.remove()
    torch.testing.assert_close(_run_logits(eng, forced), want, rtol=1e-4, atol=1e-4)


def test_steering_vectors_from_prompts_and_tokens(make_tiny):
    eng = _engine(make_tiny, "llama")
    ref = _eager(make_tiny, "llama")
    parent = _run(eng)
    tok = eng.lm.tokenizer
    summary, [run] = eng.steer(parent, 1, {"source": "mean_diff", "positive": ["red", "blue sky"], "negative": ["dog"]}, [1.0])
    states = {}
    for text in ("red", "blue sky", "dog"):
        seen = []
        h = _layers(ref)[1].register_forward_pre_hook(lambda m, a: seen.append(a[0][0, -1].clone()))
        with torch.no_grad():
            ref(input_ids=torch.tensor([tok(text)["input_ids"]]))
        h.remove()
        states[text] = seen[0]
    want = (states["red"] + states["blue sky"]) / 2 - states["dog"]
    got = torch.tensor(run.links["intervention"]["vector"]["values"])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    _, [trun] = eng.steer(parent, 0, {"source": "token", "token_id": 77}, [2.0], normalize=True)
    unembed = ref.get_output_embeddings().weight[77].detach()
    torch.testing.assert_close(torch.tensor(trun.links["intervention"]["vector"]["values"]), unembed / unembed.norm())


# ---- hooks never stay --------------------------------------------------------------------------
def test_a_plain_run_after_interventions_and_a_failed_one_is_bit_identical(make_tiny):
    eng = _engine(make_tiny, "mistral")
    before = _run(eng)
    eng.ablate(before, [{"kind": "head", "layer": 0, "head": 1}], "mean")
    eng.steer(before, 1, {"source": "token", "token_id": 9}, [5.0])

    def boom(x):
        raise RuntimeError("hook failed on purpose")

    spec = {"type": "ablate", "mode": "zero", "free": False, "targets": []}
    with pytest.raises(GenerationFailed):
        iv.run_intervention(eng, before, spec, lambda model: [("o_proj_in", 1, boom)])
    _no_hooks_left(eng.lm.model)
    after = _run(eng)
    assert after.ids == before.ids and torch.equal(after.hidden, before.hidden)
    np.testing.assert_array_equal(after.result.stats.top_probs, before.result.stats.top_probs)


# ---- patching ----------------------------------------------------------------------------------
def _pair(eng):
    clean = eng.tokenize("The quick brown fox").ids
    corrupted = eng.tokenize("The lazy brown dog").ids
    assert len(clean) == len(corrupted)
    return clean, corrupted


@pytest.mark.parametrize("kind", ("llama", "gemma2"))
def test_patching_the_whole_clean_residual_at_layer_0_reproduces_the_clean_logits(make_tiny, kind):
    eng = _engine(make_tiny, kind)
    model = eng.lm.model
    clean, corrupted = _pair(eng)
    emb = []
    h = _layers(model)[0].register_forward_pre_hook(lambda m, a: emb.append(a[0][0].clone()))
    with torch.no_grad():
        want = model(input_ids=torch.tensor([clean])).logits[0].float()
    h.remove()
    got = iv.patched_logits(model, corrupted, 0, emb[0])
    assert torch.equal(got, want)


def _brute_sweep(model, clean, corrupted, metric, sweep, head_position="all"):
    """The sweep as a plain loop of full eager forwards, each with one hook written here."""
    layers = _layers(model)
    d = _hd(model)
    m = metric["position"]

    def value(logits):
        row = logits[m]
        if metric["type"] == "logit_diff":
            return float(row[metric["token_a"]] - row[metric["token_b"]])
        return float(torch.log_softmax(row, -1)[metric["token"]])

    res, oin = {}, {}

    def keep(store, i):
        def hook(module, a):
            store.setdefault(i, a[0][0].clone())  # returns None: the forward is unchanged
        return hook

    hs = [layer.register_forward_pre_hook(keep(res, i)) for i, layer in enumerate(layers)]
    hs += [layer.self_attn.o_proj.register_forward_pre_hook(keep(oin, i)) for i, layer in enumerate(layers)]
    clean_logits = _final_logits(model, clean)
    for h in hs:
        h.remove()
    n_heads = oin[0].shape[1] // d
    out = np.zeros((len(layers), len(clean) if sweep == "residual" else n_heads))
    for layer in range(len(layers)):
        for c in range(out.shape[1]):
            if sweep == "residual":
                def hook(mod, a, p=c, layer=layer):
                    x = a[0].clone()
                    x[0, p] = res[layer][p]
                    return (x, *a[1:])
                site = layers[layer]
            else:
                def hook(mod, a, h=c, layer=layer):
                    x = a[0].clone()
                    rows = slice(None) if head_position == "all" else slice(head_position, head_position + 1)
                    x[0, rows, h * d:(h + 1) * d] = oin[layer][rows, h * d:(h + 1) * d]
                    return (x,)
                site = layers[layer].self_attn.o_proj
            out[layer, c] = value(_final_logits(model, corrupted, [(site, hook)]))
    return out, value(clean_logits), value(_final_logits(model, corrupted))


@pytest.mark.parametrize("kind,sweep,head_position,metric", [
    ("llama", "residual", "all", {"type": "logit_diff", "token_a": 5, "token_b": 9, "position": -1}),
    ("llama", "heads", "all", {"type": "logprob", "token": 40}),
    ("mistral", "residual", "all", {"type": "logit_diff", "token_a": 12, "token_b": 100, "position": 4}),
    ("gemma2", "heads", 3, {"type": "logit_diff", "token_a": 5, "token_b": 9}),
    ("qwen3", "heads", 2, {"type": "logprob", "token": 7, "position": -2}),
])
def test_patching_sweeps_match_a_brute_force_loop(make_tiny, kind, sweep, head_position, metric):
    eng = _engine(make_tiny, kind)
    clean, corrupted = _pair(eng)
    out = eng.patch(clean, corrupted, dict(metric), sweep, head_position)
    m = out["metric"]
    assert m["position"] == (metric.get("position", -1) % len(clean))
    want, want_clean, want_corrupted = _brute_sweep(eng.lm.model, clean, corrupted, m, sweep, head_position)
    np.testing.assert_allclose(out["values"], want, rtol=1e-4, atol=1e-4)
    assert out["clean_metric"] == pytest.approx(want_clean, abs=1e-4)
    assert out["corrupted_metric"] == pytest.approx(want_corrupted, abs=1e-4)
    if sweep == "residual":  # layer 0 at every position > the metric's: exactly the corrupted value
        assert (out["values"][:, m["position"] + 1:] == out["corrupted_metric"]).all()


def test_patch_job_reports_progress_and_stops_when_cancelled(make_tiny, monkeypatch):
    eng = _engine(make_tiny, "llama")
    clean, corrupted = _pair(eng)
    metric = {"type": "logit_diff", "token_a": 5, "token_b": 9}
    eng.patch(clean, corrupted, dict(metric), "residual", job_id="00aa00aa")
    assert eng.read_job("00aa00aa") == {"job_id": "00aa00aa", "kind": "patch", "run_id": "", "done": 2 * len(clean),
                                        "total": 2 * len(clean), "status": "done"}
    original = iv.metric_value

    def cancelling_metric(logits, m):  # the real metric; the client cancels once the first cell is read
        eng.cancel("00bb00bb")
        return original(logits, m)

    monkeypatch.setattr(iv, "metric_value", cancelling_metric)
    with pytest.raises(Cancelled) as info:
        eng.patch(clean, corrupted, dict(metric), "heads", job_id="00bb00bb")
    assert "cancelled" in str(info.value) and info.value.status == 409
    job = eng.read_job("00bb00bb")
    assert job["status"] == "cancelled" and job["done"] < job["total"]
    _no_hooks_left(eng.lm.model)


def test_bad_patch_and_ablation_inputs_name_their_field(make_tiny):
    eng = _engine(make_tiny, "llama")
    clean, corrupted = _pair(eng)
    parent = _run(eng)
    metric = {"type": "logit_diff", "token_a": 5, "token_b": 9}
    cases = [
        (lambda: eng.patch(clean, corrupted + [5], dict(metric), "residual"), "corrupted"),
        (lambda: eng.patch(clean, corrupted, dict(metric), "sideways"), "sweep"),
        (lambda: eng.patch(clean, corrupted, {"type": "nope"}, "residual"), "metric.type"),
        (lambda: eng.patch(clean, corrupted, dict(metric, position=99), "residual"), "metric.position"),
        (lambda: eng.patch(clean, corrupted, dict(metric, token_a=VOCAB), "residual"), "metric.token_a"),
        (lambda: eng.patch(clean, corrupted, dict(metric), "heads", 99), "head_position"),
        (lambda: eng.ablate(parent, [{"kind": "head", "layer": 0, "head": 4}]), "targets[0].head"),
        (lambda: eng.ablate(parent, [{"kind": "head", "layer": 2, "head": 0}]), "targets[0].layer"),
        (lambda: eng.ablate(parent, [{"kind": "kv_group", "layer": 0, "group": 2}]), "targets[0].group"),
        (lambda: eng.ablate(parent, [{"kind": "neuron", "layer": 0}]), "targets[0].kind"),
        (lambda: eng.ablate(parent, []), "targets"),
        (lambda: eng.ablate(parent, [{"kind": "mlp", "layer": 0}], "half"), "mode"),
        (lambda: eng.steer(parent, 5, {"source": "token", "token_id": 1}, [1.0]), "layer"),
        (lambda: eng.steer(parent, 0, {"source": "raw", "values": [1.0]}, [1.0]), "vector.values"),
        (lambda: eng.steer(parent, 0, {"source": "token", "token_id": 1}, [float("nan")]), "alphas[0]"),
        (lambda: eng.steer(parent, 0, {"source": "mean_diff", "positive": [], "negative": ["a"]}, [1.0]), "vector.positive"),
        (lambda: eng.steer(parent, 0, {"source": "token", "token": "two tokens here"}, [1.0]), "vector.token"),
    ]
    for call, field in cases:
        with pytest.raises(BadRequest) as info:
            call()
        assert info.value.field == field, (field, str(info.value))
    _no_hooks_left(eng.lm.model)


# ---- alignment and KL ---------------------------------------------------------------------------
def _levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_edit_alignment_is_a_minimal_edit_script():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.integers(0, 4, rng.integers(0, 12)).tolist()
        b = rng.integers(0, 4, rng.integers(0, 12)).tolist()
        pairs = edit_alignment(a, b)
        assert [i for i, _ in pairs if i is not None] == list(range(len(a)))
        assert [j for _, j in pairs if j is not None] == list(range(len(b)))
        cost = sum(1 for i, j in pairs if i is None or j is None or a[i] != b[j])
        assert cost == _levenshtein(a, b), (a, b, pairs)
    assert align_runs([1, 2, 3, 4], [1, 2, 9, 3, 4], "auto") == ("edit", [(0, 0), (1, 1), (None, 2), (2, 3), (3, 4)])
    assert align_runs([1, 2, 3], [1, 2, 3, 4], "auto")[0] == "position"


def test_kl_floors_are_flagged_not_measured():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([1.0, 0.0, 0.0])
    value, floored = kl_dense(p, q)
    assert floored and value == pytest.approx(0.5 * math.log(0.5) + 0.5 * (math.log(0.5) - math.log(1e-10)))
    assert kl_dense(p, p) == (0.0, False)
    logp = torch.log(torch.tensor([[0.7, 0.3]]))
    logq = torch.log(torch.tensor([[0.4, 0.6]]))
    k, f = kl_logp(logp, logq)
    assert float(k[0]) == pytest.approx(0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6)) and not bool(f[0])
    k, f = kl_logp(torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[1.0, 0.0]])))
    assert bool(f[0]) and float(k[0]) == pytest.approx(0.5 * math.log(0.5) + 0.5 * (math.log(0.5) + 23.02585), rel=1e-5)


# ---- keeping -----------------------------------------------------------------------------------
def test_intervention_runs_round_trip_bundles_and_history_and_bad_specs_are_refused(make_tiny, tmp_path):
    eng = _engine(make_tiny, "llama")
    parent = _run(eng)
    ab = eng.ablate(parent, [{"kind": "head", "layer": 1, "head": 0}, {"kind": "mlp", "layer": 0}], "mean")
    _, [st] = eng.steer(parent, 1, {"source": "token", "token_id": 3}, [2.5])
    info = eng.model_info()
    for run in (ab, st):
        back, _ = read_bundle(dump_bundle(run, info), info)
        assert back.kind == "intervention" and back.links == run.links and back.ids == run.ids
    hist = History(tmp_path / "data", 1 << 30)
    hist.save(history_row(ab, "x") | {"nbytes": 1}, dump_bundle(ab, info))
    row = hist.get(ab.id)
    assert row["kind"] == "intervention" and row["parent_id"] == parent.id

    def tampered(change):
        import json
        import struct

        data = dump_bundle(ab, info)
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        meta = json.loads(header["__metadata__"]["meta"])
        change(meta["run"])
        header["__metadata__"]["meta"] = json.dumps(meta)
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        return struct.pack("<Q", len(raw)) + raw + data[8 + n:]

    bad = [
        lambda r: r["links"]["intervention"].update(mode="half"),
        lambda r: r["links"]["intervention"]["targets"][0].update(head=99),
        lambda r: r["links"]["intervention"].update(extra=1),
        lambda r: r["links"].pop("intervention"),
        lambda r: r.update(kind="generate"),
        lambda r: r["links"]["intervention"]["targets"].append({"kind": "mlp", "layer": "0"}),
    ]
    for change in bad:
        with pytest.raises(BadRequest) as exc:
            read_bundle(tampered(change), info)
        assert "bundle" in str(exc.value)
    good, _ = read_bundle(tampered(lambda r: None), info)
    assert good.links == ab.links
