"""Distributions: entropy, rank, the sampling filters, KL divergence, perplexity and GLTR buckets.

Each quantity is written once, here, and used by the decode loop, the logit lens, the head
statistics, the diff and the scorer. Pure tensor/numpy functions: nothing touches a model or
global state, and tests/unit/test_analysis.py checks them against hand-computed values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

KL_FLOOR = 1e-10
GLTR_BUCKETS = ((10, "top10"), (100, "top100"), (1000, "top1000"))


def entropy_of_logp(logp: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats along the last dim, from log-probabilities (-inf allowed)."""
    terms = logp.exp() * logp  # p * ln p; NaN exactly where p == 0 (0 * -inf): those terms are 0
    return -terms.nan_to_num_(0.0).sum(-1)  # in place: ~1.8x faster than where() on a (256, V) chunk


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of softmax(logits) along the last dim."""
    return entropy_of_logp(torch.log_softmax(logits.float(), dim=-1))


class RowScratch:
    """Reusable (rows, V) buffers for log-softmax statistics of row chunks: the same numbers as
    `torch.log_softmax`, `rank_of` and `entropy_of_logp`, bit for bit (the same ops, with `out=`).

    A 256-row chunk of float32 over a 49k vocabulary is 50 MB. That is above glibc's largest
    dynamic mmap threshold (32 MiB), so each full-vocabulary temporary was a fresh mmap that was
    page-faulted in and unmapped again, about 270 minor faults per row. Scoring and the logit
    lens write into these three buffers chunk after chunk instead. The statistics of 2,048 rows
    went from 1.98 to 1.57 s (docs/PERFORMANCE.md). The buffers grow to the largest chunk seen
    and are dropped with the object.
    """

    def __init__(self) -> None:
        self._logp = self._work = self._mask = self._logits = None

    def _grown(self, name: str, rows: int, vocab: int, dtype, device) -> torch.Tensor:
        """The (rows, vocab) head of buffer `name`, reallocated only when it is too small or elsewhere."""
        buf = getattr(self, name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != vocab or buf.device != torch.device(device):
            buf = torch.empty(rows, vocab, dtype=dtype, device=device)
            setattr(self, name, buf)
        return buf[:rows]

    def logits_buffer(self, rows: int, vocab: int, device) -> torch.Tensor:
        """A float32 (rows, vocab) buffer for a chunk's logits, reused like the others (pass it as
        `out` to llmvis.model.introspect.logits_from_hidden); valid until the next call."""
        return self._grown("_logits", rows, vocab, torch.float32, device)

    def _views(self, like: torch.Tensor):
        c, v = like.shape
        return (self._grown("_logp", c, v, torch.float32, like.device),
                self._grown("_work", c, v, torch.float32, like.device),
                self._grown("_mask", c, v, torch.bool, like.device))

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """log_softmax(logits.float()) along the last dim, (c, V), in a reused buffer: valid
        until the next call."""
        logp, _, _ = self._views(logits)
        return torch.log_softmax(logits.float(), -1, out=logp)

    def rank(self, logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """rank_of(logp, ids) for logp (c, V) and ids (c,)."""
        _, _, mask = self._views(logp)
        chosen = logp.gather(-1, ids.unsqueeze(-1))  # (c, 1)
        return torch.gt(logp, chosen, out=mask).sum(-1) + 1

    def entropy(self, logp: torch.Tensor) -> torch.Tensor:
        """entropy_of_logp(logp) for logp (c, V)."""
        _, work, _ = self._views(logp)
        terms = torch.exp(logp, out=work).mul_(logp)  # p * ln p; NaN where p == 0: those terms are 0
        return -terms.nan_to_num_(0.0).sum(-1)


def entropy_of_probs(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of a probability vector (zeros allowed)."""
    return entropy_of_logp(torch.log(p))


def rank_of(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """1 + the number of entries scoring strictly higher than scores[..., id].

    scores are probabilities or log-probabilities (any monotone transform gives the same rank).
    scores: (..., V), ids: (...) -> (...)
    """
    chosen = scores.gather(-1, ids.unsqueeze(-1))  # (..., 1)
    return (scores > chosen).sum(-1) + 1

@dataclass
class SamplingDist:
    """The distribution actually sampled from, kept sparse (support only)."""

    ids: torch.Tensor     # (S,) token ids with non-zero sampling probability, by descending prob
    probs: torch.Tensor   # (S,) their renormalised probabilities, summing to 1
    cut_mass: float       # mass of the tempered distribution removed by top-k/top-p (greedy: 1 - max raw prob)
    entropy: float        # entropy in nats of the sampling distribution

    def prob_of(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Sampling probability of each id in token_ids (0 outside the support)."""
        match = token_ids.unsqueeze(-1) == self.ids.unsqueeze(0)  # (N, S)
        return (match.float() * self.probs.unsqueeze(0)).sum(-1)


def sampling_distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> SamplingDist:
    """Apply temperature, then top-k, then top-p (the order HF uses) to one row of logits.

    temperature == 0 means greedy: a point mass on the argmax. As in transformers, top-p reads
    the distribution that top-k left, renormalised (so it still cuts when the top-k tokens hold
    less than top_p of the tempered mass); cut_mass is the tempered mass that was not kept.
    """
    logits = logits.float()
    if temperature == 0:
        raw = torch.softmax(logits, -1)
        top = torch.argmax(logits).reshape(1)
        return SamplingDist(top, torch.ones(1), float(1.0 - raw[top].item()), 0.0)
    q = torch.softmax(logits / temperature, -1)  # (V,)
    vocab = q.shape[-1]
    if 0 < top_k < vocab:
        sorted_q, sorted_ids = torch.topk(q, top_k)  # (k,), already descending
    elif top_p < 1.0:
        sorted_q, sorted_ids = torch.sort(q, descending=True)  # (V,)
    else:
        sorted_q, sorted_ids = q, torch.arange(vocab)  # nothing is cut; order is irrelevant
    if top_p < 1.0:
        renorm = sorted_q / sorted_q.sum()  # what top-p sees: the survivors of top-k, summing to 1
        before = torch.cumsum(renorm, 0) - renorm  # mass strictly before each entry
        keep = before < top_p
        keep[0] = True
        sorted_q, sorted_ids = sorted_q[keep], sorted_ids[keep]
    kept = float(sorted_q.sum().item())
    probs = sorted_q / kept
    return SamplingDist(sorted_ids, probs, max(0.0, 1.0 - kept), float(entropy_of_probs(probs).item()))


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
