"""Per-head attention statistics (GQA-aware) and per-segment aggregates, accumulated from chunks
of attention rows; the weighted row sample used on long runs; one query row of every layer.
Pure (no model): llmvis.engine.views feeds them rows computed by llmvis.model.capture.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from llmvis.core.metrics import entropy_of_probs

ATTN_ROW_CHUNK = 256       # query rows of attention probabilities computed at once
ROWS_PER_GROUP = 256       # head statistics: query rows used per (segment, prompt/generated) group


# ---- attention statistics -----------------------------------------------------------------------
@dataclass
class AttentionStats:
    """Per layer and query head statistics of attention, and per-segment aggregates."""

    entropy: np.ndarray        # (L, Hq) mean over query rows 1.. of the row's entropy (nats)
    entropy_norm: np.ndarray   # (L, Hq) same, each row divided by ln(number of keys it can see)
    sink: np.ndarray           # (L, Hq) mean over query rows 1.. of attention to position 0
    prev: np.ndarray           # (L, Hq) mean over query rows 1.. of attention to the previous token
    seg_share: np.ndarray      # (L, S) share of attention that generated queries pay to each segment
    seg_entropy: np.ndarray    # (L, S) mean attention entropy (over heads) of query rows in each segment
    segments: tuple[str, ...]  # the S segment names
    num_gen_queries: int       # how many generated query rows seg_share averages over
    query_rows_used: int = 0   # query rows actually computed (all of them unless the run is long)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.entropy, self.entropy_norm, self.sink, self.prev,
                                      self.seg_share, self.seg_entropy)) + 256


class HeadStatsAccumulator:
    """Accumulates one layer's statistics from chunks of attention rows. Pure (no model)."""

    def __init__(self, num_heads: int, seg_index: torch.Tensor, num_segments: int, gen_rows: torch.Tensor,
                 sliding_window: int | None = None):
        self.seg_index = seg_index.long()            # (T,) segment index of each position
        self.onehot = torch.nn.functional.one_hot(self.seg_index, num_segments).float()  # (T, S)
        self.gen_rows = gen_rows.bool()              # (T,) whether a query row is generated
        self.window = sliding_window
        self.t = int(seg_index.shape[0])
        self.num_segments = num_segments
        self.ent = torch.zeros(num_heads, dtype=torch.float64)
        self.ent_norm = torch.zeros(num_heads, dtype=torch.float64)
        self.sink = torch.zeros(num_heads, dtype=torch.float64)
        self.prev = torch.zeros(num_heads, dtype=torch.float64)
        self.rows = 0.0        # weighted count of the rows in the per-head means
        self.gen_weight = 0.0  # weighted count of generated rows in seg_share
        self.seg_share = torch.zeros(num_segments, dtype=torch.float64)
        self.seg_ent = torch.zeros(num_segments, dtype=torch.float64)
        self.seg_rows = torch.zeros(num_segments, dtype=torch.float64)

    def add(self, probs: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """probs: (Hq, R, T) attention of query rows `rows` (R,); each row counts `weights` (R,)
        times (1 when every row is computed; more when the rows are a sample of their group)."""
        probs = probs.float()
        p = probs
        w = torch.ones(rows.shape[0], dtype=torch.float64) if weights is None else weights.double()  # (R,)
        row_ent = entropy_of_probs(p)  # (Hq, R)
        seg_of_row = self.seg_index[rows]  # (R,)
        mean_ent = row_ent.mean(0).double()  # (R,)
        self.seg_ent.index_add_(0, seg_of_row, mean_ent * w)
        self.seg_rows.index_add_(0, seg_of_row, w)
        gen = self.gen_rows[rows]  # (R,)
        if gen.any():
            share = torch.matmul(probs[:, gen], self.onehot)  # (Hq, G, S)
            self.seg_share += (share.mean(0).double() * w[gen, None]).sum(0)
            self.gen_weight += float(w[gen].sum())
        keep = rows > 0  # row 0 sees only itself: entropy 0, sink 1; it would only dilute the means
        if self.t == 1:
            keep = torch.ones_like(keep)
        if not keep.any():
            return
        r, wk = rows[keep], w[keep]
        pk = probs[:, keep]  # (Hq, R', T)
        visible = (r + 1).double()
        if self.window:
            visible = visible.clamp(max=self.window)
        log_vis = torch.log(visible).clamp(min=1e-12)  # (R',); rows with one visible key have entropy 0
        self.ent += (row_ent[:, keep].double() * wk).sum(1)
        self.ent_norm += (row_ent[:, keep].double() / log_vis * wk).sum(1)
        self.sink += (pk[:, :, 0].double() * wk).sum(1)
        prev_idx = (r - 1).clamp(min=0)  # (R',)
        prev = pk.gather(2, prev_idx.view(1, -1, 1).expand(pk.shape[0], -1, 1)).squeeze(2).double()  # (Hq, R')
        self.prev += (prev * wk).sum(1)
        self.rows += float(wk.sum())

    def result(self) -> dict:
        n = max(1.0, self.rows)
        n_gen = self.gen_weight
        seg_ent = torch.where(self.seg_rows > 0, self.seg_ent / self.seg_rows.clamp(min=1),
                              torch.full_like(self.seg_ent, math.nan))
        return {
            "entropy": (self.ent / n).float().numpy(),
            "entropy_norm": (self.ent_norm / n).float().numpy(),
            "sink": (self.sink / n).float().numpy(),
            "prev": (self.prev / n).float().numpy(),
            "seg_share": (self.seg_share / n_gen).float().numpy() if n_gen else
            np.full(self.num_segments, np.nan, np.float32),
            "seg_entropy": seg_ent.float().numpy(),
        }


def sample_rows(seg_index: torch.Tensor, gen_rows: torch.Tensor, per_group: int = ROWS_PER_GROUP):
    """Query rows for the head statistics, and the weight of each. Pure.

    Rows are grouped by (segment, prompt or generated). A group of at most `per_group` rows is
    taken whole (weight 1); a larger one by `per_group` evenly spaced rows, each weighing
    group size / rows taken, so every weighted mean estimates the mean over all rows without
    bias and short segments (a system prompt, the answer) are never left out. Short runs are
    exact. seg_index, gen_rows: (T,) -> rows (R,) ascending, weights (R,) float64
    """
    key = seg_index.long() * 2 + gen_rows.long()  # (T,)
    rows, weights = [], []
    for k in torch.unique(key).tolist():
        members = torch.nonzero(key == k).flatten()  # (c,)
        c = int(members.numel())
        if c <= per_group:
            take = members
        else:
            take = members[torch.linspace(0, c - 1, per_group).round().long().unique()]
        rows.append(take)
        weights.append(torch.full((take.numel(),), c / take.numel(), dtype=torch.float64))
    rows_t, w_t = torch.cat(rows), torch.cat(weights)
    order = torch.argsort(rows_t)
    return rows_t[order], w_t[order]


@dataclass
class RowAttention:
    """One query row's attention in every layer and head."""

    position: int
    weights: torch.Tensor    # (L, Hq, position+1) float16; keys after the query are 0 and dropped

    @property
    def nbytes(self) -> int:
        return self.weights.numel() * self.weights.element_size()
