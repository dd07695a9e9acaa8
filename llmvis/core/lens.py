"""Logit lens results: what each layer predicts at each position, kept as top-k and a few
scalars (never an (L, T, V) tensor). Pure; llmvis.engine.views runs the model to fill them.

Layer index 0 = embeddings, L = the model's output. Position p's lens predicts token p+1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from llmvis.core.metrics import RowScratch

LENS_TOP_K = 20            # top tokens kept per (layer, position); the API's top_k is at most this
LENS_MAX_ELEMS = 1 << 23   # rows x vocab of float32 logits handled at once (32 MiB)


# ---- logit lens -------------------------------------------------------------------------------
@dataclass
class LensResult:
    """Logit lens of one run. Layer index 0 = embeddings, L = the model's output."""

    top_ids: np.ndarray      # (L+1, T, K) int32 top-K token ids of each layer's prediction at each position
    top_probs: np.ndarray    # (L+1, T, K) float32 their probabilities
    chosen_prob: np.ndarray  # (L+1, T) float32 probability of the actual next token (NaN at the last position)
    chosen_rank: np.ndarray  # (L+1, T) int32 its 1-based rank (-1 at the last position)
    entropy: np.ndarray      # (L+1, T) float32 entropy (nats) of each layer's prediction
    done: np.ndarray | None = None  # (T,) bool: positions computed so far (None: all of them)

    @classmethod
    def empty(cls, n_states: int, t: int, k: int) -> "LensResult":
        """A result with no position computed yet; logit_lens(into=...) fills windows of it."""
        return cls(np.zeros((n_states, t, k), np.int32), np.zeros((n_states, t, k), np.float32),
                   np.full((n_states, t), np.nan, np.float32), np.full((n_states, t), -1, np.int32),
                   np.zeros((n_states, t), np.float32), np.zeros(t, bool))

    def missing(self, start: int, end: int) -> np.ndarray:
        """Positions in [start, end) not computed yet."""
        if self.done is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(~self.done[start:end]) + start

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.top_ids, self.top_probs, self.chosen_prob, self.chosen_rank, self.entropy))

    @property
    def first_top1(self) -> np.ndarray:
        """(T,) first layer whose top-1 is the actual next token; -1 if none (or no next token)."""
        return first_true(self.chosen_rank == 1)

    @property
    def settled_top1(self) -> np.ndarray:
        """(T,) first layer from which the actual next token stays top-1 up to the output; -1 if never."""
        top1 = self.chosen_rank == 1  # (L+1, T)
        stays = np.flip(np.logical_and.accumulate(np.flip(top1, 0), axis=0), 0)  # (L+1, T) top-1 from l to L
        return first_true(stays)


def first_true(mask: np.ndarray) -> np.ndarray:
    """(L, T) bool -> (T,) index of the first True along axis 0, -1 where a column has none."""
    any_ = mask.any(0)
    return np.where(any_, mask.argmax(0), -1).astype(np.int32)


def lens_stats(logits: torch.Tensor, next_ids: torch.Tensor, k: int, scratch: RowScratch | None = None):
    """Top-k, the next token's prob and rank, and entropy of rows of logits. Pure.

    logits: (c, V); next_ids: (c,) with -1 where there is no next token; `scratch` reuses its
    full-vocabulary buffers across chunks (the same numbers, bit for bit)
    -> top_ids (c, k), top_probs (c, k), chosen_prob (c,), chosen_rank (c,), entropy (c,)
    """
    scratch = RowScratch() if scratch is None else scratch
    logp = scratch.log_softmax(logits)  # (c, V)
    entropy = scratch.entropy(logp)  # (c,)
    top_l, top_i = torch.topk(logp, k, dim=-1)  # (c, k)
    valid = next_ids >= 0
    safe_ids = next_ids.clamp(min=0)  # (c,)
    chosen = logp.gather(1, safe_ids.unsqueeze(1))  # (c, 1)
    rank = scratch.rank(logp, safe_ids)  # (c,)
    chosen_prob = torch.where(valid, chosen.squeeze(1).exp(), torch.full_like(entropy, math.nan))
    chosen_rank = torch.where(valid, rank, torch.full_like(rank, -1))
    return top_i, top_l.exp(), chosen_prob, chosen_rank, entropy
