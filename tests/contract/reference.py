"""Independent reference numbers for the contract tests: the tiny model's own forward pass
(eager attention, `output_attentions=True, output_hidden_states=True`) and plain torch maths.

Nothing here imports llmvis: every value an endpoint answers is checked against what this
module computes from the token ids alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass
class Forward:
    logits: torch.Tensor      # (T, V) float64, row i predicts token i+1
    attentions: torch.Tensor  # (L, Hq, T, T) float64
    hidden: torch.Tensor      # (L+1, T, H) float64; hidden[L] is after the final norm (transformers 5.x)
    pre_norm: torch.Tensor    # (T, H) float64, the last layer's output before the final norm
    probs: torch.Tensor       # (T, V) float64, softmax of logits at temperature 1


def entropy(p: torch.Tensor) -> torch.Tensor:
    """-sum p ln p along the last dim (0 ln 0 = 0), in nats."""
    return -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(-1)


def rank(p: torch.Tensor, token_id: int) -> int:
    """1 + the number of ids with a strictly higher probability."""
    return int((p > p[token_id]).sum()) + 1


class Reference:
    """The tiny model (its own copy of the weights), run the plain transformers way."""

    def __init__(self, model):
        self.model = model.eval()
        self._forward = lru_cache(maxsize=64)(self._run)

    def forward(self, ids) -> Forward:
        return self._forward(tuple(int(i) for i in ids))

    def _run(self, ids: tuple) -> Forward:
        seen = []
        norm = self.model.model.norm
        handle = norm.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        try:
            with torch.no_grad():
                out = self.model(torch.tensor([list(ids)]), output_attentions=True, output_hidden_states=True)
        finally:
            handle.remove()
        assert len(seen) == 1
        logits = out.logits[0].double()
        return Forward(
            logits=logits,
            probs=torch.softmax(logits, -1),
            attentions=torch.stack([a[0] for a in out.attentions]).double(),
            hidden=torch.stack([h[0] for h in out.hidden_states]).double(),
            pre_norm=seen[0][0].double(),
        )

    def norm(self, h: torch.Tensor) -> torch.Tensor:
        """The model's final norm on float states (T, H)."""
        with torch.no_grad():
            return self.model.model.norm(h.float()).double()

    def lm_head(self, h: torch.Tensor) -> torch.Tensor:
        """The LM head on final (normed) states (T, H) -> logits (T, V) float64."""
        with torch.no_grad():
            return self.model.lm_head(h.float()).double()

    def position_stats(self, ids, position: int) -> dict:
        """prob, rank, entropy of token `position` under softmax(logits at position-1), T = 1."""
        p = self.forward(ids).probs[position - 1]
        tid = int(ids[position])
        return {"prob": float(p[tid]), "rank": rank(p, tid), "entropy": float(entropy(p)), "max_prob": float(p.max()),
                "dist": p}


def hf_sampling_distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The distribution transformers' own warpers sample from (temperature, top-k, top-p), as (V,)."""
    from transformers.generation.logits_process import (
        LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
    )

    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    scores = warpers(torch.zeros(1, 1, dtype=torch.long), logits.float().unsqueeze(0))  # (1, V)
    return torch.softmax(scores[0].double(), -1)


def tempered_cut_mass(logits: torch.Tensor, temperature: float, kept: torch.Tensor) -> float:
    """Mass of softmax(logits / T) outside the kept support (before renormalisation)."""
    q = torch.softmax(logits.double() / temperature, -1)
    return float(1.0 - q[kept].sum())


def kl(p: torch.Tensor, q: torch.Tensor, floor: float = 1e-10) -> float:
    """KL(p || q) in nats over p's support, q floored (the documented convention)."""
    m = p > 0
    return max(0.0, float((p[m] * (torch.log(p[m]) - torch.log(q[m].clamp_min(floor)))).sum()))


def pca_2d(x: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """The first two principal directions (rows, unit norm) of x (N, D) and their variance ratios."""
    centred = x.double() - x.double().mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    var = s**2
    return vh[:2], [float(v / var.sum()) for v in var[:2]]


def isclose(a, b, rel=1e-4, abs_=1e-6) -> bool:
    return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)
