"""Inside the layers: logit lens, per-head attention statistics (GQA-aware), chat segments.

Every function takes a model, hidden states (L+1, T, H) and token ids, never a tokenizer, so
the same code runs on the default model and on a tiny random-weight Qwen3 built from a config.

Logit lens: layer l's residual stream goes through the model's final norm and its LM head.
In transformers 5.x hidden_states[L] (the last one) is already after the final norm (the LM
head applied to it gives the logits), while 0..L-1 are pre-norm residual streams, so the norm
is applied only for l < L. Position p's lens predicts token p+1. Results keep only top-k ids
and probabilities, the actual next token's rank and probability, and the entropy, per layer and
position: never an (L, T, V) tensor.

Attention statistics come from each layer's (q, k) through trace.layer_attention_reduce, in
query-row chunks, so no (Hq, T, T) matrix is held for more than a chunk of rows.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from .analysis import causal_attention_rows
from .generation import logits_from_hidden, text_config

LENS_TOP_K = 20            # top tokens kept per (layer, position); the API's top_k is at most this
LENS_MAX_ELEMS = 1 << 23   # rows x vocab of float32 logits handled at once (32 MiB)
ATTN_ROW_CHUNK = 256       # query rows of attention probabilities computed at once
ROWS_PER_GROUP = 256       # head statistics: query rows used per (segment, prompt/generated) group
SEGMENTS = ("system", "user", "assistant", "think", "template")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


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


def lens_stats(logits: torch.Tensor, next_ids: torch.Tensor, k: int):
    """Top-k, the next token's prob and rank, and entropy of rows of logits. Pure.

    logits: (c, V); next_ids: (c,) with -1 where there is no next token
    -> top_ids (c, k), top_probs (c, k), chosen_prob (c,), chosen_rank (c,), entropy (c,)
    """
    logp = torch.log_softmax(logits.float(), -1)  # (c, V)
    p = logp.exp()
    entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)  # (c,)
    top_l, top_i = torch.topk(logp, k, dim=-1)  # (c, k)
    valid = next_ids >= 0
    chosen = logp.gather(1, next_ids.clamp(min=0).unsqueeze(1))  # (c, 1)
    rank = (logp > chosen).sum(-1) + 1  # (c,)
    chosen_prob = torch.where(valid, chosen.squeeze(1).exp(), torch.full_like(entropy, math.nan))
    chosen_rank = torch.where(valid, rank, torch.full_like(rank, -1))
    return top_i, top_l.exp(), chosen_prob, chosen_rank, entropy


def logit_lens(model, hidden: torch.Tensor, ids: list[int], top_k: int = LENS_TOP_K,
               max_elems: int = LENS_MAX_ELEMS, start: int = 0, end: int | None = None,
               into: LensResult | None = None) -> LensResult:
    """Apply the final norm (layers < L) and the LM head to every layer's states, in row chunks.

    hidden: (L+1, T, H) with hidden[L] already normed (transformers 5.x) -> LensResult
    Only positions [start, end) are computed, and of those only the ones `into` lacks: the lens
    costs T·(L+1) full-vocabulary rows (35 s at T = 1,024 on the default model on 2 CPU cores),
    so the page asks for the columns it shows and later windows reuse what is done.
    """
    n_states, t, _ = hidden.shape
    end = t if end is None else end
    last = n_states - 1
    norm = model.get_decoder().norm
    norm_device = next((p.device for p in norm.parameters()), hidden.device)  # another GPU under --device-map
    vocab = int(model.get_output_embeddings().weight.shape[0])
    k = min(top_k, vocab)
    result = into if into is not None else LensResult.empty(n_states, t, k)
    todo = torch.from_numpy(result.missing(start, end))  # (M,) positions to compute
    if result.done is None or not len(todo):
        return result
    chunk = max(1, min(len(todo), max_elems // vocab))
    next_ids = torch.tensor(list(ids[1:]) + [-1], dtype=torch.long)  # (T,) token each position predicts
    with torch.inference_mode():
        for layer in range(n_states):
            for a in range(0, len(todo), chunk):
                rows = todo[a : a + chunk]  # (c,)
                h = hidden[layer].index_select(0, rows.to(hidden.device))  # (c, H)
                if layer < last:
                    h = norm(h.to(norm_device))
                logits = logits_from_hidden(model, h)  # (c, V)
                ti, tp, cp, cr, ent = lens_stats(logits, next_ids[rows].to(logits.device), k)
                r = rows.numpy()
                result.top_ids[layer, r] = ti.cpu().numpy()
                result.top_probs[layer, r] = tp.cpu().numpy()
                result.chosen_prob[layer, r] = cp.cpu().numpy()
                result.chosen_rank[layer, r] = cr.cpu().numpy()
                result.entropy[layer, r] = ent.cpu().numpy()
    result.done[todo.numpy()] = True
    return result


# ---- chat segments ----------------------------------------------------------------------------
def think_segments(texts: list[str], segments: list[str]) -> list[str]:
    """Tag tokens of a <think>...</think> block (markers included) as "think". Pure.

    texts: each token's text; segments: each token's segment (system|user|assistant|template).
    A block opens at "<think>" in a template or assistant token (so a user who types the tag does
    not open one) and closes after "</think>"; an unclosed block runs to the end. The tags may be
    split over several tokens. Tokens of system and user messages are never re-tagged.
    """
    out = list(segments)
    starts, pos = [], 0
    for text in texts:
        starts.append(pos)
        pos += len(text)
    joined = "".join(texts)
    open_at = None
    blocks: list[tuple[int, int]] = []
    for m in re.finditer(re.escape(THINK_OPEN) + "|" + re.escape(THINK_CLOSE), joined):
        tok = _token_at(starts, m.start())
        if m.group(0) == THINK_OPEN:
            if open_at is None and segments[tok] in ("assistant", "template"):
                open_at = m.start()
        elif open_at is not None:
            blocks.append((open_at, m.end()))
            open_at = None
    if open_at is not None:
        blocks.append((open_at, len(joined)))
    for a, b in blocks:
        for i in range(_token_at(starts, a), len(texts)):
            if starts[i] >= b:
                break
            if out[i] not in ("system", "user"):
                out[i] = "think"
    return out


def _token_at(starts: list[int], char: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:  # last token whose start <= char
        mid = (lo + hi + 1) // 2
        if starts[mid] <= char:
            lo = mid
        else:
            hi = mid - 1
    return lo


def segment_spans(segments: list[str]) -> list[dict]:
    """Runs of equal segments: [{"segment", "start", "end"}] with end exclusive. Pure."""
    spans: list[dict] = []
    for i, s in enumerate(segments):
        if spans and spans[-1]["segment"] == s:
            spans[-1]["end"] = i + 1
        else:
            spans.append({"segment": s, "start": i, "end": i + 1})
    return spans


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
        row_ent = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(-1)  # (Hq, R)
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


def stats_reducer(acc: HeadStatsAccumulator, chunk: int = ATTN_ROW_CHUNK, rows=None, weights=None):
    """A trace.layer_attention_reduce reducer that feeds row chunks of attention to `acc`
    (every query row, or the given `rows` with their `weights`)."""

    def reduce(query, key, scaling, softcap, window):
        t = query.shape[1]
        acc.window = window
        todo = torch.arange(t) if rows is None else rows  # (R,)
        for a in range(0, int(todo.numel()), chunk):
            part = todo[a : a + chunk]  # (r,)
            probs = causal_attention_rows(query, key, part, scaling, softcap=softcap, sliding_window=window)  # (Hq, r, T)
            acc.add(probs.cpu(), part, None if weights is None else weights[a : a + chunk])
        return acc

    return reduce


def attention_stats(model, hidden: torch.Tensor, segments: list[str], num_prompt: int,
                    chunk: int = ATTN_ROW_CHUNK, per_group: int | None = None) -> AttentionStats:
    """Every layer's attention, reduced to per-head and per-segment statistics as it is computed.

    hidden: (L+1, T, H); the attention of layer l is recomputed from hidden[l] (its input).
    Long runs use a weighted sample of query rows (`sample_rows`): the cost is every layer's
    attention for those rows, about 40 s at 4,096 tokens on the default model on 2 CPU cores
    when every row is computed.
    """
    from .runs import layer_attention_reduce

    n_layers = int(hidden.shape[0]) - 1
    t = int(hidden.shape[1])
    num_heads = int(text_config(model).num_attention_heads)
    seg_index = torch.tensor([SEGMENTS.index(s) if s in SEGMENTS else SEGMENTS.index("template") for s in segments])
    gen_rows = torch.arange(t) >= num_prompt  # (T,)
    rows, weights = sample_rows(seg_index, gen_rows, ROWS_PER_GROUP if per_group is None else per_group)
    if rows.numel() == t:
        rows = weights = None  # every row, weight 1: exact
    per_layer = []
    for layer in range(n_layers):
        acc = HeadStatsAccumulator(num_heads, seg_index, len(SEGMENTS), gen_rows)
        layer_attention_reduce(model, hidden[layer], layer, stats_reducer(acc, chunk, rows, weights))
        per_layer.append(acc.result())

    def stack(name):
        return np.stack([r[name] for r in per_layer]).astype(np.float32)  # (L, ...)

    return AttentionStats(stack("entropy"), stack("entropy_norm"), stack("sink"), stack("prev"),
                          stack("seg_share"), stack("seg_entropy"), SEGMENTS, int(gen_rows.sum()),
                          t if rows is None else int(rows.numel()))


def kv_groups(num_heads: int, num_kv_heads: int) -> list[int]:
    """The KV head each query head reads (GQA): head h uses kv head h // (Hq / Hkv). Pure."""
    size = max(1, num_heads // max(1, num_kv_heads))
    return [h // size for h in range(num_heads)]


@dataclass
class RowAttention:
    """One query row's attention in every layer and head."""

    position: int
    weights: torch.Tensor    # (L, Hq, position+1) float16; keys after the query are 0 and dropped

    @property
    def nbytes(self) -> int:
        return self.weights.numel() * self.weights.element_size()


def attention_row_all_layers(model, hidden: torch.Tensor, position: int) -> RowAttention:
    """Query row `position` of every layer's attention, computing only that row's softmax."""
    from .runs import layer_attention_rows

    rows = [position]
    out = [layer_attention_rows(model, hidden[layer], layer, rows)[:, 0, : position + 1]  # (Hq, P+1)
           for layer in range(int(hidden.shape[0]) - 1)]
    return RowAttention(position, torch.stack(out).to(torch.float16))  # (L, Hq, P+1)
