"""Pure analysis functions against hand-computed values."""
import math

import pytest
import torch

from llmvis.core.attention import causal_attention_probs
from llmvis.core.metrics import entropy_from_logits, entropy_of_probs, rank_of, sampling_distribution
from llmvis.core.vectors import cosine_consecutive, pca_2d


def test_entropy_uniform_and_point_mass():
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
    # a -inf logit has p = 0 and contributes nothing (no nan)
    assert entropy_from_logits(torch.tensor([0.0, -math.inf])).item() == pytest.approx(0.0)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert entropy_of_probs(p).item() == pytest.approx(1.5 * math.log(2))


def test_rank_counts_strictly_higher():
    probs = torch.tensor([[0.1, 0.4, 0.4, 0.1]])
    assert rank_of(probs, torch.tensor([1])).item() == 1
    assert rank_of(probs, torch.tensor([2])).item() == 1  # ties share the better rank
    assert rank_of(probs, torch.tensor([0])).item() == 3


def test_greedy_is_point_mass_and_cut_is_rest():
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3]))
    d = sampling_distribution(logits, 0.0, 50, 0.95)
    assert d.ids.tolist() == [1]
    assert d.probs.tolist() == [1.0]
    assert d.cut_mass == pytest.approx(0.4)
    assert d.entropy == 0.0


def test_top_k_keeps_k_and_renormalises():
    logits = torch.log(torch.tensor([0.1, 0.5, 0.3, 0.1]))
    d = sampling_distribution(logits, 1.0, 2, 1.0)
    assert d.ids.tolist() == [1, 2]
    assert d.probs.tolist() == pytest.approx([0.625, 0.375])
    assert d.cut_mass == pytest.approx(0.2)
    assert d.prob_of(torch.tensor([2, 0])).tolist() == pytest.approx([0.375, 0.0])


def test_top_p_keeps_smallest_prefix_reaching_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    d = sampling_distribution(logits, 1.0, 0, 0.8)
    # 0.5 (<0.8 before), 0.3 (0.5 before <0.8) kept; 0.15 has 0.8 before -> cut
    assert d.ids.tolist() == [0, 1]
    assert d.cut_mass == pytest.approx(0.2)
    # top_p smaller than the first token still keeps it
    assert sampling_distribution(logits, 1.0, 0, 0.1).ids.tolist() == [0]


def test_temperature_sharpens():
    logits = torch.log(torch.tensor([0.2, 0.8]))
    d = sampling_distribution(logits, 0.5, 0, 1.0)
    # p ∝ p_i^2: 0.04, 0.64 -> 0.0588, 0.9412
    probs = dict(zip(d.ids.tolist(), d.probs.tolist()))
    assert probs[1] == pytest.approx(0.64 / 0.68)
    assert d.cut_mass == pytest.approx(0.0, abs=1e-6)


def test_cosine_consecutive_shapes_and_values():
    hidden = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 2.0]]])  # (3 states, 1 token, 2)
    sim = cosine_consecutive(hidden)
    assert sim.shape == (2, 1)
    assert sim[:, 0].tolist() == pytest.approx([0.0, 1.0])
    # `last` stands in for the last state (the pre-norm output of the last layer)
    sim = cosine_consecutive(hidden, last=torch.tensor([[1.0, 1.0]]))
    assert sim[:, 0].tolist() == pytest.approx([0.0, 2 ** -0.5])


def test_pca_on_a_line_explains_everything():
    x = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [2.0, 2.0, 1.0], [3.0, 3.0, 1.0]])
    coords, var = pca_2d(x)
    assert var[0] == pytest.approx(1.0)
    assert var[1] == pytest.approx(0.0, abs=1e-9)
    # distances along the line are preserved: step sqrt(2)
    assert (coords[1, 0] - coords[0, 0]).abs().item() == pytest.approx(math.sqrt(2), rel=1e-5)
    assert coords[:, 1].abs().max().item() == pytest.approx(0.0, abs=1e-5)


def test_pca_single_point():
    coords, var = pca_2d(torch.ones(1, 5))
    assert coords.shape == (1, 2) and var == [0.0, 0.0]


def test_attention_view_reduces_heads_without_the_full_tensor():
    from llmvis.core.attention import causal_attention_view

    torch.manual_seed(1)
    q, k = torch.randn(4, 9, 8), torch.randn(2, 9, 8)  # GQA: heads 0,1 -> kv 0; heads 2,3 -> kv 1
    full = causal_attention_probs(q, k, 0.4)  # (4, 9, 9)
    assert torch.allclose(causal_attention_view(q, k, 0.4, "mean", chunk=4), full.mean(0), atol=1e-6)
    assert torch.allclose(causal_attention_view(q, k, 0.4, "max", chunk=4), full.amax(0), atol=1e-6)
    assert torch.allclose(causal_attention_view(q, k, 0.4, 3, chunk=4), full[3], atol=1e-6)
    assert torch.allclose(causal_attention_view(q, k, 0.4, 1, sliding_window=3), causal_attention_probs(q, k, 0.4, sliding_window=3)[1], atol=1e-6)


def test_causal_attention_by_hand():
    # one head, 2 tokens, d=1: q=[1,1], k=[0, ln 3] -> row 1: softmax([0, ln3]) = [0.25, 0.75]
    q = torch.tensor([[[1.0], [1.0]]])
    k = torch.tensor([[[0.0], [math.log(3)]]])
    a = causal_attention_probs(q, k, scaling=1.0)
    assert torch.allclose(a[0], torch.tensor([[1.0, 0.0], [0.25, 0.75]]))


def test_causal_attention_gqa_chunks_and_window():
    torch.manual_seed(0)
    q = torch.randn(4, 10, 8)
    k = torch.randn(2, 10, 8)
    full = causal_attention_probs(q, k, 0.3, chunk=512)
    chunked = causal_attention_probs(q, k, 0.3, chunk=3)
    assert torch.allclose(full, chunked, atol=1e-6)
    # heads 0,1 share kv head 0; heads 2,3 share kv head 1
    manual = torch.softmax((q[3] @ k[1].T * 0.3).masked_fill(torch.triu(torch.ones(10, 10, dtype=torch.bool), 1), -math.inf), -1)
    assert torch.allclose(full[3], manual, atol=1e-6)
    assert torch.allclose(full.sum(-1), torch.ones(4, 10), atol=1e-5)
    win = causal_attention_probs(q, k, 0.3, sliding_window=2)
    assert win[0, 5, :4].abs().max().item() == 0.0 and win[0, 5, 4:6].sum().item() == pytest.approx(1.0)


def test_pool_matrix_max_and_mean_with_partial_edge_tiles():
    from llmvis.core.attention import pool_matrix

    m = torch.arange(25, dtype=torch.float32).view(5, 5)
    mx = pool_matrix(m, 2, "max")
    assert mx.shape == (3, 3)
    assert mx[0, 0].item() == 6 and mx[2, 2].item() == 24 and mx[0, 2].item() == 9
    mean = pool_matrix(m, 2, "mean")
    assert mean[0, 0].item() == pytest.approx((0 + 1 + 5 + 6) / 4)
    assert mean[2, 2].item() == 24  # a 1x1 edge tile is its own mean
    assert mean[0, 2].item() == pytest.approx((4 + 9) / 2)
    assert torch.equal(pool_matrix(m, 1), m)


def test_pca_fit_start_ignores_an_outlier_but_projects_it():
    x = torch.tensor([[1000.0, -1000.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [2.0, 0.0, 1.0], [3.0, 0.1, 1.0]])
    coords_all, var_all = pca_2d(x)
    coords, var = pca_2d(x, fit_start=1)
    assert var_all[0] > 0.999  # the outlier takes everything
    assert var[0] > 0.99 and coords.shape == (5, 2)
    # the remaining points spread along the first component, one unit apart
    assert (coords[2, 0] - coords[1, 0]).abs().item() == pytest.approx(1.0, rel=1e-2)
