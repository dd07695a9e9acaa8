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

import numpy as np
import torch

from llmvis.core.attention import causal_attention_rows
from llmvis.core.heads import (
    ATTN_ROW_CHUNK, ROWS_PER_GROUP, AttentionStats, HeadStatsAccumulator, RowAttention, sample_rows,
)
from llmvis.core.lens import LENS_MAX_ELEMS, LENS_TOP_K, LensResult, lens_stats
from llmvis.core.metrics import common_prefix, dense_sampling, kl
from llmvis.core.segments import SEGMENTS
from llmvis.model.capture import layer_attention_reduce, layer_attention_rows
from llmvis.model.introspect import logits_from_hidden, text_config


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
