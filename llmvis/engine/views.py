"""Views that run the model over a stored run: the logit lens, every layer's head statistics,
one query row in every layer, and the KL diff of two runs.

Each takes a model and the run's hidden states (L+1, T, H) (never a tokenizer), so the same
code runs on the default model and on tiny random-weight models built from a config. The
Engine calls them under its model lock and caches their results on the run.

Logit lens: layer l's residual stream goes through the model's final norm and its LM head.
In transformers 5.x hidden_states[L] (the last one) is already after the final norm (the LM
head applied to it gives the logits), while 0..L-1 are pre-norm residual streams, so the norm
is applied only for l < L.

Attention statistics come from each layer's (q, k) through
llmvis.model.capture.layer_attention_reduce, in query-row chunks, so no (Hq, T, T) matrix is
held for more than a chunk of rows.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from llmvis.core.attention import causal_attention_rows
from llmvis.core.errors import BadRequest
from llmvis.core.heads import (
    ATTN_ROW_CHUNK, ROWS_PER_GROUP, AttentionStats, HeadStatsAccumulator, RowAttention, sample_rows,
)
from llmvis.core.lens import LENS_MAX_ELEMS, LENS_TOP_K, LensResult, lens_stats
from llmvis.core.metrics import KL_FLOOR, RowScratch, common_prefix, dense_sampling, kl
from llmvis.core.segments import SEGMENTS
from llmvis.model.capture import layer_attention_reduce, layer_attention_rows
from llmvis.model.introspect import logits_from_hidden, text_config

MAX_ALIGN_CELLS = 16 << 20  # edit alignment table cells (int32): 64 MiB at most


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
    scratch = RowScratch()  # the chunks' full-vocabulary temporaries, reused (core.metrics)
    head_device = model.get_output_embeddings().weight.device
    with torch.inference_mode():
        for layer in range(n_states):
            for a in range(0, len(todo), chunk):
                rows = todo[a : a + chunk]  # (c,)
                h = hidden[layer].index_select(0, rows.to(hidden.device))  # (c, H)
                if layer < last:
                    h = norm(h.to(norm_device))
                logits = logits_from_hidden(model, h, scratch.logits_buffer(len(rows), vocab, head_device))  # (c, V)
                ti, tp, cp, cr, ent = lens_stats(logits, next_ids[rows].to(logits.device), k, scratch)
                r = rows.numpy()
                result.top_ids[layer, r] = ti.cpu().numpy()
                result.top_probs[layer, r] = tp.cpu().numpy()
                result.chosen_prob[layer, r] = cp.cpu().numpy()
                result.chosen_rank[layer, r] = cr.cpu().numpy()
                result.entropy[layer, r] = ent.cpu().numpy()
    result.done[todo.numpy()] = True
    return result


def stats_reducer(acc: HeadStatsAccumulator, chunk: int = ATTN_ROW_CHUNK, rows=None, weights=None):
    """A llmvis.model.capture.layer_attention_reduce reducer that feeds row chunks of attention to `acc`
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


def attention_row_all_layers(model, hidden: torch.Tensor, position: int) -> RowAttention:
    """Query row `position` of every layer's attention, computing only that row's softmax."""
    rows = [position]
    out = [layer_attention_rows(model, hidden[layer], layer, rows)[:, 0, : position + 1]  # (Hq, P+1)
           for layer in range(int(hidden.shape[0]) - 1)]
    return RowAttention(position, torch.stack(out).to(torch.float16))  # (L, Hq, P+1)


def kl_logp(logp: torch.Tensor, logq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(p || q) in nats per row from log-probabilities (c, V), exact in log space (no floor is
    needed where q is tiny but not zero). Where q is exactly 0 (-inf) and p is not, KL is
    infinite: the row's value uses q floored at KL_FLOOR and is flagged `floored` (a lower bound).
    -> (kl (c,), floored (c,) bool)"""
    p = logp.exp()
    live = p > 0
    floored = (live & torch.isinf(logq)).any(-1)
    diff = logp - logq.clamp_min(math.log(KL_FLOOR))
    terms = torch.where(live, p * diff, torch.zeros_like(p))
    return terms.sum(-1).clamp_min(0.0), floored


def kl_dense(p: torch.Tensor, q: torch.Tensor) -> tuple[float, bool]:
    """KL(p || q) of two dense distributions with q floored at KL_FLOOR (core.metrics.kl), and
    whether the floor raised q where p has more mass (q < KL_FLOOR and q < p: exactly 0 where
    top-k / top-p cut a token the other distribution keeps, so the true KL is infinite); the value
    is then only a lower bound."""
    return kl(p, q), bool(((p > 0) & (q < KL_FLOOR) & (p > q)).any())


def kl_summary(values: list[float], floored: list[bool]) -> dict:
    """Mean and max of the measured values only; floored ones are counted and bounded, never averaged."""
    measured = [v for v, f in zip(values, floored) if not f]
    bounds = [v for v, f in zip(values, floored) if f]
    return {
        "num_measured": len(measured), "num_floored": len(bounds),
        "mean": sum(measured) / len(measured) if measured else None,
        "max": max(measured) if measured else None,
        "floored_lower_bound": min(bounds) if bounds else None,
    }


def edit_alignment(a: list[int], b: list[int]) -> list[tuple[int | None, int | None]]:
    """A minimal token edit-distance (Levenshtein) alignment of two id sequences: pairs (i, j) of
    matches or substitutions, (i, None) deletions, (None, j) insertions, in order.

    One row of the distance table at a time in numpy; the insertion run within a row is a
    cumulative minimum (row[j] = min over k <= j of cand[k] + j - k). The table (len(a)+1) x
    (len(b)+1) int32 is kept for the backtrace.
    """
    n, m = len(a), len(b)
    if n * m > MAX_ALIGN_CELLS:
        raise BadRequest("align", f"edit alignment of {n} x {m} tokens is too large (limit {MAX_ALIGN_CELLS:,} cells)")
    bb = np.asarray(b, dtype=np.int64)
    table = np.zeros((n + 1, m + 1), dtype=np.int32)
    table[0] = np.arange(m + 1)
    cols = np.arange(m + 1)
    for i in range(1, n + 1):
        prev = table[i - 1]
        cand = np.empty(m + 1, dtype=np.int64)
        cand[0] = i
        cand[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bb != a[i - 1]))
        table[i] = np.minimum.accumulate(cand - cols) + cols
    pairs = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and table[i, j] == table[i - 1, j - 1] + (a[i - 1] != b[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and table[i, j] == table[i - 1, j] + 1:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def align_runs(ids_a: list[int], ids_b: list[int], align: str) -> tuple[str, list[tuple[int | None, int | None]]]:
    """(the alignment used, its pairs). "position": (i, i) up to the shorter length; "edit": the
    common prefix position by position, then edit_alignment of the rest; "auto": position when
    one id list is a prefix of the other (teacher-forced or identical runs), else edit."""
    prefix = common_prefix(ids_a, ids_b)
    n = min(len(ids_a), len(ids_b))
    if align == "auto":
        align = "position" if prefix == n else "edit"
    if align == "position":
        return align, [(i, i) for i in range(n)]
    tail = edit_alignment(list(ids_a[prefix:]), list(ids_b[prefix:]))
    return align, [(i, i) for i in range(prefix)] + [
        (None if i is None else i + prefix, None if j is None else j + prefix) for i, j in tail]


def aligned_logits(model, run_a, run_b, rows: list[tuple[int, int]], chunk: int = 128):
    """For aligned pairs (i, j) of positions, yield (pairs, la, lb) a chunk at a time: the raw
    logits (c, V) that predicted token i of run_a and token j of run_b, from each run's final
    states (row i - 1 and j - 1). Every i and j must be >= 1. Call under inference mode."""
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        ia = torch.tensor([i - 1 for i, _ in part])
        ib = torch.tensor([j - 1 for _, j in part])
        la = logits_from_hidden(model, run_a.hidden[-1].index_select(0, ia.to(run_a.hidden.device))).cpu()  # (c, V)
        lb = logits_from_hidden(model, run_b.hidden[-1].index_select(0, ib.to(run_b.hidden.device))).cpu()  # (c, V)
        yield part, la, lb


def diff_runs(model, run_a, run_b, chunk: int = 128, align: str = "position") -> dict:
    """Align two runs and compute KL divergences of their next-token distributions at aligned
    positions.

    align="position" compares position i with position i (right for identical or teacher-forced
    token sequences; after the divergence point it compares different contexts, and the rows say
    so with `after_divergence`); "edit" aligns the continuations after the common prefix by token
    edit distance and compares only aligned pairs; "auto" picks (see align_runs). kl_raw is exact
    in log space; kl_sampling, and any KL where the second distribution has no mass where the
    first has, is marked floored (a lower bound), and the summary never averages those.
    """
    prefix = common_prefix(run_a.ids, run_b.ids)
    n = min(run_a.num_tokens, run_b.num_tokens)
    divergence = None if prefix == n and run_a.num_tokens == run_b.num_tokens else prefix
    used, pairs = align_runs(run_a.ids, run_b.ids, align)
    rows = [(i, j) for i, j in pairs if i is not None and j is not None and i >= 1 and j >= 1]
    kl_rows = []
    with torch.inference_mode():
        for part, la, lb in aligned_logits(model, run_a, run_b, rows, chunk):
            raw, raw_floored = kl_logp(torch.log_softmax(la, -1), torch.log_softmax(lb, -1))
            for r, (i, j) in enumerate(part):
                qa = dense_sampling(la[r], run_a.params)
                qb = dense_sampling(lb[r], run_b.params)
                ks, ks_floored = kl_dense(qa, qb)
                kl_rows.append({
                    "position": i,
                    "position_b": j,
                    "kl_raw": float(raw[r]),
                    "kl_sampling": ks,
                    "kl_raw_floored": bool(raw_floored[r]),
                    "kl_sampling_floored": ks_floored,
                    "in_common_prefix": i <= prefix,
                    "after_divergence": divergence is not None and i > prefix,
                    "same_token": run_a.ids[i] == run_b.ids[j],
                })
    summary = {name: kl_summary([r[name] for r in kl_rows], [r[name + "_floored"] for r in kl_rows])
               for name in ("kl_raw", "kl_sampling")}
    return {"common_prefix": prefix, "divergence_position": divergence, "aligned_length": n, "align": used,
            "pairs": [list(p) for p in pairs], "kl": kl_rows, "summary": summary}
