"""Run diff and text scoring summaries.

Diff aligns two runs position by position (both start from position 0, so a parent and its
fork, or two samplings of one prompt, share a prefix), marks where they diverge, and gives the
KL divergence between their next-token distributions at every aligned position:
- `kl_raw`: between the raw (temperature 1) distributions; 0 on the common prefix when both runs
  come from the same model, and a measure of how differently they predict after divergence;
- `kl_sampling`: between the distributions each run actually sampled from (after its own
  temperature, top-k and top-p). Where run B gives 0 to a token run A could sample, B's
  probability is floored at 1e-10, so the value stays finite (and large).
Both are recomputed from the cached final hidden states, exactly, not from the top-100 lists.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .analysis import sampling_distribution
from .generation import logits_from_hidden

KL_FLOOR = 1e-10
GLTR_BUCKETS = ((10, "top10"), (100, "top100"), (1000, "top1000"))


def dense_sampling(logits: torch.Tensor, params: dict) -> torch.Tensor:
    """The sampling distribution of one row of logits as a dense (V,) vector."""
    dist = sampling_distribution(logits, float(params["temperature"]), int(params["top_k"]), float(params["top_p"]))
    q = torch.zeros(logits.shape[-1], dtype=torch.float32)
    q[dist.ids] = dist.probs
    return q


def kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p || q) in nats, with q floored at KL_FLOOR where p > 0; float noise below 0 reads as 0."""
    mask = p > 0
    return max(0.0, float((p[mask] * (torch.log(p[mask]) - torch.log(q[mask].clamp_min(KL_FLOOR)))).sum()))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def diff_runs(model, run_a, run_b, chunk: int = 128) -> dict:
    """Align two runs and compute per-position KL divergences (see module docstring)."""
    prefix = common_prefix(run_a.ids, run_b.ids)
    n = min(run_a.num_tokens, run_b.num_tokens)
    divergence = None if prefix == n and run_a.num_tokens == run_b.num_tokens else prefix
    kl_rows = []
    with torch.inference_mode():
        for start in range(1, n, chunk):
            stop = min(n, start + chunk)
            la = logits_from_hidden(model, run_a.hidden[-1][start - 1 : stop - 1]).cpu()  # (c, V)
            lb = logits_from_hidden(model, run_b.hidden[-1][start - 1 : stop - 1]).cpu()  # (c, V)
            pa, pb = torch.softmax(la, -1), torch.softmax(lb, -1)
            for i in range(stop - start):
                pos = start + i
                qa = dense_sampling(la[i], run_a.params)
                qb = dense_sampling(lb[i], run_b.params)
                kl_rows.append({
                    "position": pos,
                    "kl_raw": kl(pa[i], pb[i]),
                    "kl_sampling": kl(qa, qb),
                    "in_common_prefix": pos <= prefix,
                })
    return {"common_prefix": prefix, "divergence_position": divergence, "aligned_length": n, "kl": kl_rows}


def score_summary(stats, start: int = 1) -> dict:
    """Perplexity and GLTR buckets (rank within top 10 / 100 / 1000 / beyond) of positions start.."""
    prob = stats.prob[start:].astype(np.float64)
    rank = stats.rank[start:]
    valid = ~np.isnan(prob)
    prob, rank = prob[valid], rank[valid]
    if prob.size == 0:
        return {"num_scored": 0, "perplexity": None, "mean_nll": None, "gltr": {}}
    nll = -np.log(np.clip(prob, 1e-45, None))
    buckets, lower = {}, 0
    for upper, name in GLTR_BUCKETS:
        buckets[name] = int(((rank > lower) & (rank <= upper)).sum())
        lower = upper
    buckets["beyond"] = int((rank > lower).sum())
    mean = float(nll.mean())
    return {"num_scored": int(prob.size), "perplexity": math.exp(mean), "mean_nll": mean, "gltr": buckets}
