"""Logit lens, attention insights, think segments: pure functions by hand, then a tiny Qwen3.

The tiny random-weight Qwen3 (GQA: 4 query heads, 2 KV heads) runs every view without a
tokenizer, which is what makes llmvis ready for a real Qwen3 checkpoint.
"""
import math

import numpy as np
import pytest
import torch

from llmvis.core.attention import causal_attention_probs, causal_attention_rows
from llmvis.engine.decode import GenerationParams, decode
from llmvis.core.attention import kv_groups
from llmvis.core.heads import HeadStatsAccumulator, sample_rows
from llmvis.core.lens import LensResult, first_true, lens_stats
from llmvis.core.segments import SEGMENTS, segment_spans, think_segments
from llmvis.engine.views import attention_row_all_layers, attention_stats, logit_lens
from llmvis.model.capture import layer_attention, layer_attention_rows


# ---- pure functions, by hand ------------------------------------------------------------------
def test_lens_stats_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.1, 0.2, 0.3, 0.4]]))  # (2, 4)
    top_ids, top_probs, prob, rank, ent = lens_stats(logits, torch.tensor([2, -1]), k=2)
    assert top_ids.tolist() == [[0, 1], [3, 2]]
    assert torch.allclose(top_probs, torch.tensor([[0.5, 0.25], [0.4, 0.3]]))
    assert prob[0].item() == pytest.approx(0.125)
    assert rank[0].item() == 3  # 0.5 and 0.25 are higher; the tied 0.125 is not
    assert math.isnan(prob[1].item()) and rank[1].item() == -1  # no next token
    h0 = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 2 * 0.125 * math.log(0.125))
    assert ent[0].item() == pytest.approx(h0, rel=1e-5)


def test_first_and_settled_top1_by_hand():
    rank = np.array([[3, 1, -1, 2],
                     [1, 2, -1, 5],
                     [1, 1, -1, 7]], np.int32)  # (L+1=3, T=4)
    z = np.zeros((3, 4), np.float32)
    lens = LensResult(np.zeros((3, 4, 1), np.int32), np.zeros((3, 4, 1), np.float32), z, rank, z)
    assert first_true(rank == 1).tolist() == [1, 0, -1, -1]
    assert lens.first_top1.tolist() == [1, 0, -1, -1]
    assert lens.settled_top1.tolist() == [1, 2, -1, -1]  # position 1 drops out at layer 1, back at 2


def test_think_segments_tag_split_tags_and_leave_user_text_alone():
    texts = ["<|im_start|>", "user", "\n", "say", " <think>", " hi", "<|im_end|>", "assistant", "\n",
             "<", "think", ">", "hmm", " ok", "</", "think", ">", "Hello", "!"]
    segs = ["template"] * 3 + ["user"] * 3 + ["template"] * 3 + ["assistant"] * 10
    out = think_segments(texts, segs)
    assert out[3:6] == ["user"] * 3, "a user typing <think> does not open a block"
    assert out[9:17] == ["think"] * 8, "markers split over tokens are part of the block"
    assert out[17:] == ["assistant", "assistant"]
    assert out[:3] == ["template"] * 3


def test_think_block_opened_in_the_prompt_and_unclosed_block():
    # Reasoning templates put "<think>\n" in the generation prompt; generation closes it.
    texts = ["<|im_start|>", "assistant", "\n", "<think>", "\n", "a", "b", "</think>", "\n\n", "Yes"]
    segs = ["template"] * 5 + ["assistant"] * 5
    out = think_segments(texts, segs)
    assert out == ["template"] * 3 + ["think"] * 5 + ["assistant"] * 2
    # Stopped in the middle of thinking: everything after the tag is think.
    out = think_segments(["x", "<think>", "a", "b"], ["template", "assistant", "assistant", "assistant"])
    assert out == ["template", "think", "think", "think"]
    # Idempotent, and nothing changes without tags.
    assert think_segments(texts, out_again := think_segments(texts, segs)) == out_again
    assert think_segments(["a", "b"], ["user", "assistant"]) == ["user", "assistant"]


def test_segment_spans():
    assert segment_spans(["template", "user", "user", "template", "assistant"]) == [
        {"segment": "template", "start": 0, "end": 1}, {"segment": "user", "start": 1, "end": 3},
        {"segment": "template", "start": 3, "end": 4}, {"segment": "assistant", "start": 4, "end": 5}]
    assert segment_spans([]) == []


def test_kv_groups():
    assert kv_groups(9, 3) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # SmolLM2-135M
    g = kv_groups(32, 8)  # Qwen3-4B
    assert g[:5] == [0, 0, 0, 0, 1] and g[-1] == 7 and len(g) == 32
    assert kv_groups(4, 4) == [0, 1, 2, 3]  # no GQA


@pytest.mark.parametrize("softcap,window", [(None, None), (30.0, None), (None, 3)])
def test_attention_rows_equal_full_matrix_rows(softcap, window):
    torch.manual_seed(0)
    q, k = torch.randn(4, 9, 8), torch.randn(2, 9, 8)  # GQA: 4 query heads over 2 KV heads
    full = causal_attention_probs(q, k, 0.35, softcap=softcap, sliding_window=window)  # (4, 9, 9)
    rows = torch.tensor([0, 4, 8, 5])
    got = causal_attention_rows(q, k, rows, 0.35, softcap=softcap, sliding_window=window)  # (4, 4, 9)
    assert got.shape == (4, 4, 9)
    assert torch.allclose(got, full[:, rows], atol=1e-6)


def test_head_stats_accumulator_by_hand():
    probs = torch.tensor([[[1.0, 0.0, 0.0],
                           [0.5, 0.5, 0.0],
                           [0.2, 0.3, 0.5]]])  # (1 head, 3 rows, 3 keys)
    seg_index = torch.tensor([SEGMENTS.index("user"), SEGMENTS.index("user"), SEGMENTS.index("assistant")])
    acc = HeadStatsAccumulator(1, seg_index, len(SEGMENTS), torch.tensor([False, False, True]))
    acc.add(probs[:, :2], torch.tensor([0, 1]))  # two chunks give the same as one
    acc.add(probs[:, 2:], torch.tensor([2]))
    r = acc.result()
    h1 = math.log(2)
    h2 = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    assert r["entropy"][0] == pytest.approx((h1 + h2) / 2, rel=1e-5)  # rows 1.. only
    assert r["entropy_norm"][0] == pytest.approx((h1 / math.log(2) + h2 / math.log(3)) / 2, rel=1e-5)
    assert r["sink"][0] == pytest.approx((0.5 + 0.2) / 2)
    assert r["prev"][0] == pytest.approx((0.5 + 0.3) / 2)
    share = dict(zip(SEGMENTS, r["seg_share"]))
    assert share["user"] == pytest.approx(0.5) and share["assistant"] == pytest.approx(0.5)
    assert share["system"] == 0 and sum(r["seg_share"]) == pytest.approx(1.0)
    ent = dict(zip(SEGMENTS, r["seg_entropy"]))
    assert ent["user"] == pytest.approx(h1 / 2) and ent["assistant"] == pytest.approx(h2)
    assert math.isnan(ent["system"])


# ---- a tiny random-weight Qwen3 ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(make_tiny):
    model = make_tiny("qwen3", layers=3, seed=2)
    prompt = [1, 17, 42, 99, 5, 7, 150, 23, 60]
    res = decode(model, prompt, GenerationParams(0.8, 30, 0.95, 8, seed=5), stop_ids=set(), top_k_record=10)
    return model, res


def test_logit_lens_windows_fill_in_to_the_whole(tiny_run):
    model, res = tiny_run
    whole = logit_lens(model, res.hidden, res.ids, top_k=7)
    part = logit_lens(model, res.hidden, res.ids, top_k=7, start=3, end=9, max_elems=211 * 4)
    assert part.done.tolist() == [3 <= p < 9 for p in range(len(res.ids))]
    assert np.array_equal(part.top_ids[:, 3:9], whole.top_ids[:, 3:9])
    assert (part.chosen_rank[:, :3] == -1).all()  # not computed: no rank claimed
    logit_lens(model, res.hidden, res.ids, top_k=7, start=0, end=5, into=part)  # only 0..2 are new
    logit_lens(model, res.hidden, res.ids, top_k=7, into=part)
    assert part.done.all()
    for name in ("top_ids", "top_probs", "chosen_rank", "entropy"):
        assert np.allclose(getattr(part, name), getattr(whole, name), atol=1e-6), name
    assert np.allclose(part.chosen_prob, whole.chosen_prob, atol=1e-6, equal_nan=True)
    assert np.array_equal(part.first_top1, whole.first_top1)


def test_logit_lens_last_layer_is_the_models_output_and_earlier_layers_use_the_final_norm(tiny_run):
    model, res = tiny_run
    ids = res.ids
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    probs = torch.softmax(out.logits[0].float(), -1)  # (T, V)
    lens = logit_lens(model, res.hidden, ids, top_k=7, max_elems=211 * 5)  # 5 rows per chunk
    n_layers = model.config.num_hidden_layers
    t = len(ids)
    assert lens.top_ids.shape == (n_layers + 1, t, 7) and lens.entropy.shape == (n_layers + 1, t)
    # Last layer == the model's own output distribution.
    top = torch.topk(probs, 7)
    assert lens.top_ids[n_layers].tolist() == top.indices.tolist()
    assert np.allclose(lens.top_probs[n_layers], top.values.numpy(), atol=1e-5)
    ent = -(probs * torch.log(probs)).sum(-1)
    assert np.allclose(lens.entropy[n_layers], ent.numpy(), atol=1e-4)
    for p in range(t - 1):
        assert lens.chosen_prob[n_layers, p] == pytest.approx(probs[p, ids[p + 1]].item(), rel=1e-4)
        assert lens.chosen_rank[n_layers, p] == int((probs[p] > probs[p, ids[p + 1]]).sum()) + 1
        # ... and the recorded generation statistics of token p+1.
        assert lens.chosen_prob[n_layers, p] == pytest.approx(res.stats.prob[p + 1], rel=1e-4)
    assert math.isnan(lens.chosen_prob[n_layers, t - 1]) and lens.chosen_rank[n_layers, t - 1] == -1
    # Earlier layers: the final norm, then the LM head, on the model's own hidden state.
    norm, head = model.get_decoder().norm, model.get_output_embeddings()
    for layer in range(n_layers):
        with torch.no_grad():
            want = torch.softmax(head(norm(out.hidden_states[layer][0])).float(), -1)  # (T, V)
        assert np.allclose(lens.top_probs[layer, :, 0], want.max(-1).values.numpy(), atol=1e-5), layer
        assert lens.top_ids[layer, :, 0].tolist() == want.argmax(-1).tolist()
        assert lens.chosen_prob[layer, 0] == pytest.approx(want[0, ids[1]].item(), rel=1e-4)
    # Only top-k and per-position scalars are kept, never (L+1, T, V).
    assert lens.nbytes < (n_layers + 1) * t * 211 * 4


def test_sample_rows_keeps_small_groups_whole_and_weighs_the_rest():
    seg = torch.tensor([0] * 3 + [1] * 40 + [2] * 5 + [1] * 12)  # (60,)
    gen = torch.arange(60) >= 48  # the last 12 rows are generated (segment 1)
    rows, w = sample_rows(seg, gen, per_group=10)
    assert rows.tolist() == sorted(set(rows.tolist()))
    for members in ([0, 1, 2], list(range(43, 48))):  # groups of <= 10 rows: whole, weight 1
        assert set(members) <= set(rows.tolist()) and all(w[rows == m].item() == 1.0 for m in members)
    big = (rows >= 3) & (rows < 43)  # 40 prompt rows of segment 1: 10 of them, 4 each
    assert int(big.sum()) == 10 and torch.allclose(w[big], torch.full((10,), 4.0, dtype=torch.float64))
    gen_rows = rows >= 48  # 12 generated rows: 10, 1.2 each
    assert int(gen_rows.sum()) == 10 and w[gen_rows].sum().item() == pytest.approx(12.0)
    assert w.sum().item() == pytest.approx(60.0)  # the weights add up to every row
    rows, w = sample_rows(seg, gen, per_group=100)
    assert rows.tolist() == list(range(60)) and (w == 1).all()


def test_sampled_attention_stats_estimate_the_exact_ones(make_tiny):
    """A long run: the head statistics from a weighted sample of query rows are close to the
    exact ones (every row), and short segments are still represented."""
    model = make_tiny("qwen3", layers=2, seed=4)
    ids = [1] + [int(i) for i in torch.randint(5, 200, (299,), generator=torch.Generator().manual_seed(0))]
    res = decode(model, ids, GenerationParams(0.0, 0, 1.0, 20, seed=0), stop_ids=set(), top_k_record=5)
    t, n_prompt = len(res.ids), res.num_prompt
    segs = ["template"] * 2 + ["system"] * 6 + ["user"] * (n_prompt - 8) + ["assistant"] * (t - n_prompt)
    exact = attention_stats(model, res.hidden, segs, n_prompt, per_group=10**6)
    approx = attention_stats(model, res.hidden, segs, n_prompt, per_group=24)
    assert exact.query_rows_used == t and approx.query_rows_used == 2 + 6 + 24 + 20
    for name in ("entropy", "entropy_norm", "sink", "prev"):
        a, b = getattr(approx, name), getattr(exact, name)
        assert np.allclose(a, b, rtol=0.1, atol=0.02), (name, np.abs(a - b).max())
    assert np.allclose(approx.seg_share, exact.seg_share, atol=1e-6)  # every generated row is used
    system = SEGMENTS.index("system")
    assert np.allclose(approx.seg_entropy[:, system], exact.seg_entropy[:, system], atol=1e-6)


def test_attention_stats_match_the_full_matrices(tiny_run):
    model, res = tiny_run
    t, n_prompt = len(res.ids), res.num_prompt
    segs = ["template", "user", "user", "user", "user", "template", "template", "template", "template"]
    segs = segs + ["assistant"] * (t - n_prompt)
    stats = attention_stats(model, res.hidden, segs, n_prompt, chunk=4)
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert stats.entropy.shape == (n_layers, n_heads) and stats.seg_share.shape == (n_layers, len(SEGMENTS))
    assert stats.num_gen_queries == t - n_prompt
    user, asst = SEGMENTS.index("user"), SEGMENTS.index("assistant")
    for layer in range(n_layers):
        a = layer_attention(model, res.hidden[layer], layer).double()  # (Hq, T, T)
        rows = a[:, 1:]  # (Hq, T-1, T)
        ent = -torch.where(rows > 0, rows * rows.log(), torch.zeros_like(rows)).sum(-1)  # (Hq, T-1)
        assert np.allclose(stats.entropy[layer], ent.mean(1).numpy(), atol=1e-5)
        norm = ent / torch.log(torch.arange(2, t + 1, dtype=torch.double))
        assert np.allclose(stats.entropy_norm[layer], norm.mean(1).numpy(), atol=1e-5)
        assert np.allclose(stats.sink[layer], rows[:, :, 0].mean(1).numpy(), atol=1e-5)
        prev = torch.stack([a[:, i, i - 1] for i in range(1, t)], 1)  # (Hq, T-1)
        assert np.allclose(stats.prev[layer], prev.mean(1).numpy(), atol=1e-5)
        gen = a[:, n_prompt:].mean(0)  # (G, T) mean over heads
        assert stats.seg_share[layer, user] == pytest.approx(gen[:, 1:5].sum(1).mean().item(), abs=1e-5)
        assert stats.seg_share[layer, asst] == pytest.approx(gen[:, n_prompt:].sum(1).mean().item(), abs=1e-5)
        assert stats.seg_share[layer].sum() == pytest.approx(1.0, abs=1e-4)


def test_attention_rows_of_every_layer_match_layer_attention(tiny_run):
    model, res = tiny_run
    pos = len(res.ids) - 3
    row = attention_row_all_layers(model, res.hidden, pos)
    assert row.weights.shape == (model.config.num_hidden_layers, 4, pos + 1)
    for layer in range(model.config.num_hidden_layers):
        full = layer_attention(model, res.hidden[layer], layer)  # (Hq, T, T)
        assert torch.allclose(row.weights[layer].float(), full[:, pos, : pos + 1], atol=2e-3)
        rows = layer_attention_rows(model, res.hidden[layer], layer, [0, pos, 2])  # (Hq, 3, T)
        assert torch.allclose(rows, full[:, [0, pos, 2]], atol=1e-6)


def test_every_view_runs_on_tiny_qwen3_with_think_segments(tiny_run):
    """Qwen3 readiness: lens, insights, segments and the row view from ids and the model alone."""
    model, res = tiny_run
    t = len(res.ids)
    texts = ["<|im_start|>", "assistant", "\n", "<think>", "\n"] + ["x"] * (res.num_prompt - 5)
    texts += ["a", "</think>"] + ["b"] * (t - res.num_prompt - 2)
    segs = think_segments(texts, ["template"] * res.num_prompt + ["assistant"] * (t - res.num_prompt))
    assert segs[3] == "think" and segs[res.num_prompt + 1] == "think" and segs[-1] == "assistant"
    stats = attention_stats(model, res.hidden, segs, res.num_prompt)
    think = SEGMENTS.index("think")
    assert (stats.seg_share[:, think] > 0).all()
    assert np.isfinite(stats.seg_entropy[:, think]).all()
    lens = logit_lens(model, res.hidden, res.ids)
    assert ((lens.first_top1 >= -1) & (lens.first_top1 <= model.config.num_hidden_layers)).all()
    assert attention_row_all_layers(model, res.hidden, t - 1).weights.shape[-1] == t
