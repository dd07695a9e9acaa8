"""Parity: what llmvis captures equals what the model itself returns.

- hidden states from the decode loop == model(..., output_hidden_states=True)
- attention recomputed per layer == model(..., output_attentions=True) in eager mode
- recorded step statistics == a direct softmax of the model's logits
Run on tiny random-weight models of every supported layout (GQA: 4 query heads, 2 KV heads):
Qwen3, Llama, Qwen2, Mistral, Gemma, Gemma 2 and Gemma 3, the last three with sliding windows
shorter than the sequence and Gemma 2 with attention and final-logit soft-capping.
"""
import math

import pytest
import torch

from llmvis.engine.decode import GenerationParams, decode
from llmvis.engine.views import logit_lens
from llmvis.model.capture import CAPTURE_KEY, capture_mode, layer_attention

KINDS = ("qwen3", "llama", "qwen2", "mistral", "gemma", "gemma2", "gemma3", "gemma3_mm")


def reference(model, ids):
    """The model's own outputs in eager attention, for the full sequence."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
    finally:
        model.set_attn_implementation(previous)
    return out


def sliding_layers(config) -> list[int]:
    """The layers that attend within a sliding window."""
    config = config.get_text_config(decoder=True)
    window = getattr(config, "sliding_window", None)
    if not window:
        return []
    types = getattr(config, "layer_types", None)
    if types is None:
        return list(range(config.num_hidden_layers))
    return [i for i, t in enumerate(types) if t == "sliding_attention"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_capture_matches_model_outputs(make_tiny, kind, temperature):
    model = make_tiny(kind, layers=3)
    prompt = [1, 17, 42, 99, 5, 7, 150, 23]
    res = decode(model, prompt, GenerationParams(temperature, 20, 0.9, 12, seed=3), stop_ids=set(), top_k_record=20)
    ids = res.ids
    assert len(ids) == len(prompt) + 12 and res.finish_reason == "length"
    ref = reference(model, ids)
    # hidden states: num_layers + 1 states, index 0 = embeddings
    assert res.hidden.shape == (4, len(ids), 64)
    for layer in range(4):
        assert torch.allclose(res.hidden[layer], ref.hidden_states[layer][0], atol=1e-4), layer
    # attention per query head, from each layer's cached input
    for layer in range(3):
        got = layer_attention(model, res.hidden[layer], layer)  # (Hq, T, T)
        want = ref.attentions[layer][0]
        assert got.shape == (4, len(ids), len(ids))
        assert torch.allclose(got, want, atol=1e-5), (layer, (got - want).abs().max())
        assert torch.allclose(got.sum(-1), torch.ones(4, len(ids)), atol=1e-3)
        assert torch.triu(got, 1).abs().max().item() == 0.0
        if layer in sliding_layers(model.config):  # keys further back than the window get nothing
            window = model.config.get_text_config(decoder=True).sliding_window
            assert torch.tril(got, -window).abs().max().item() == 0.0, layer
            assert torch.tril(got, -window + 1).abs().max().item() > 0.0, layer
    if kind in ("mistral", "gemma2", "gemma3", "gemma3_mm"):
        assert sliding_layers(model.config) and len(ids) > model.config.get_text_config(decoder=True).sliding_window
    # the logit lens at the last layer is the model's own output distribution (soft-capped for Gemma 2)
    lens = logit_lens(model, res.hidden, ids, top_k=5)
    top = torch.topk(torch.softmax(reference(model, ids).logits[0].float(), -1), 5)
    assert torch.allclose(torch.from_numpy(lens.top_probs[-1]), top.values, atol=1e-5)
    assert (torch.from_numpy(lens.top_ids[-1]).long() == top.indices).all()
    # the last layer's output before the final norm, for the similarity of the last layer pair
    base = model.get_decoder()
    seen = []
    hook = base.norm.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            base(torch.tensor([ids]))
    finally:
        hook.remove()
    assert res.final_residual.shape == (len(ids), 64)
    assert torch.allclose(res.final_residual, seen[0][0], atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(base.norm(res.final_residual), res.hidden[-1], atol=1e-4)
    # step statistics == direct softmax of the model's logits
    logits = ref.logits[0].float()  # (T, V)
    probs = torch.softmax(logits, -1)
    s = res.stats
    for pos in range(1, len(ids)):
        p = probs[pos - 1]
        assert s.prob[pos] == pytest.approx(p[ids[pos]].item(), rel=1e-4, abs=1e-6)
        assert s.rank[pos] == int((p > p[ids[pos]]).sum()) + 1
        ent = -(p * torch.log(p)).sum().item()
        assert s.entropy[pos] == pytest.approx(ent, rel=1e-4)
        top = torch.topk(p, 20)
        assert s.top_ids[pos].tolist() == top.indices.tolist()
        assert torch.allclose(torch.from_numpy(s.top_probs[pos]), top.values, atol=1e-6)
    assert math.isnan(s.prob[0])
    gen = slice(len(prompt), len(ids))
    assert (s.sample_prob[gen] > 0).all()
    assert all(math.isnan(v) for v in s.sample_prob[: len(prompt)])
    if temperature == 0:
        assert (s.rank[gen] == 1).all() and (s.sample_prob[gen] == 1.0).all()


def test_greedy_matches_model_generate(make_tiny):
    model = make_tiny("qwen3", layers=2, seed=1)
    prompt = [1, 8, 9, 10, 11]
    res = decode(model, prompt, GenerationParams(0.0, 0, 1.0, 10, seed=0), stop_ids=set(), top_k_record=10)
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=10, min_new_tokens=10,
                             pad_token_id=0, eos_token_id=None)
    assert res.ids == ref[0].tolist()


def test_same_seed_same_tokens_and_eos_stops(make_tiny):
    model = make_tiny("llama", layers=2, seed=2)
    p = GenerationParams(1.5, 0, 1.0, 16, seed=1234)
    a = decode(model, [1, 5, 6], p, stop_ids=set())
    b = decode(model, [1, 5, 6], GenerationParams(1.5, 0, 1.0, 16, seed=1234), stop_ids=set())
    c = decode(model, [1, 5, 6], GenerationParams(1.5, 0, 1.0, 16, seed=99), stop_ids=set())
    assert a.ids == b.ids
    assert a.ids != c.ids
    stop = a.ids[5]  # the third generated token becomes an EOS id
    d = decode(model, [1, 5, 6], GenerationParams(1.5, 0, 1.0, 16, seed=1234), stop_ids={stop})
    assert d.finish_reason == "eos" and d.ids[-1] == stop and len(d.ids) <= 6
    assert d.hidden.shape[1] == len(d.ids)


def test_capture_mode_restores_on_error(make_tiny):
    model = make_tiny("qwen3")
    before = model.config._attn_implementation
    with pytest.raises(RuntimeError):
        with capture_mode(model):
            assert model.config._attn_implementation == CAPTURE_KEY
            raise RuntimeError("boom")
    assert model.config._attn_implementation == before == "sdpa"


@pytest.mark.model
def test_default_model_parity(default_lm):
    """The same parity on the real embedded model, through its chat-formatted prompt."""
    model, tok = default_lm.model, default_lm.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name a colour."}], add_generation_prompt=True)["input_ids"]
    res = decode(model, prompt, GenerationParams(0.0, 50, 0.95, 6, seed=0), stop_ids=set(), top_k_record=100)
    ref = reference(model, res.ids)
    for layer in (0, 7, 29):
        got = layer_attention(model, res.hidden[layer], layer)
        assert got.shape == (9, len(res.ids), len(res.ids))
        assert torch.allclose(got, ref.attentions[layer][0], atol=1e-4)
    for layer in (0, 15, 30):
        assert torch.allclose(res.hidden[layer], ref.hidden_states[layer][0], atol=2e-3)
    probs = torch.softmax(ref.logits[0].float(), -1)
    for pos in range(1, len(res.ids)):
        assert res.stats.prob[pos] == pytest.approx(probs[pos - 1, res.ids[pos]].item(), rel=1e-3, abs=1e-6)
