"""Attention maths on (q, k): causal / sliding-window softmax in query-row chunks, one head or a
reduction over heads, a few rows only, pooling for overviews, and GQA head groups.

Pure tensor functions (no model): query (Hq, T, d) and key (Hkv, T, d) come from
llmvis.model.capture, which runs a layer's own attention module to produce them.
"""
from __future__ import annotations

import math

import torch


def _causal_softmax_chunks(query, key, scaling, softcap, sliding_window, chunk):
    """Yield (start, stop, lo, probs) for query rows [start, stop): probs (Hq, c, stop-lo) float32
    = softmax(q k^T * scaling) over keys [lo, stop) with the causal / sliding-window mask.

    query: (Hq, T, d); key: (Hkv, T, d), Hq a multiple of Hkv (GQA: each key head serves a group).
    Keys after `stop` are never computed: they are all masked for these rows. Each KV head's keys
    are multiplied once with all the query heads of its group (one batched matmul per chunk, no
    repeated copy of the keys).
    """
    hq, t, d = query.shape
    hkv = key.shape[0]
    groups = hq // hkv
    k = key.float()  # (Hkv, T, d)
    cols = torch.arange(t, device=query.device)
    for start in range(0, t, chunk):
        stop = min(t, start + chunk)
        c = stop - start
        lo = max(0, start - sliding_window + 1) if sliding_window else 0  # first key any row here can see
        q = query[:, start:stop].float().reshape(hkv, groups * c, d)  # (Hkv, G*c, d): heads of a group stacked
        scores = torch.matmul(q, k[:, lo:stop].transpose(1, 2))  # (Hkv, G*c, stop-lo)
        scores = scores.view(hq, c, stop - lo) * scaling  # (Hq, c, stop-lo)
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        rows = torch.arange(start, stop, device=query.device).unsqueeze(1)  # (c, 1)
        if sliding_window:
            keys = cols[lo:stop].unsqueeze(0)  # (1, stop-lo)
            masked = (keys > rows) | (keys <= rows - sliding_window)  # (c, stop-lo)
            scores.masked_fill_(masked.unsqueeze(0), -math.inf)
        else:  # only the diagonal block has future keys; everything left of it is visible
            diag = cols[start:stop].unsqueeze(0) > rows  # (c, c)
            scores[:, :, start - lo :].masked_fill_(diag.unsqueeze(0), -math.inf)
        yield start, stop, lo, torch.softmax(scores, dim=-1)


def causal_attention_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    scaling: float,
    softcap: float | None = None,
    sliding_window: int | None = None,
    chunk: int = 256,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """softmax(q k^T * scaling) with a causal (optionally sliding-window) mask, per query head.

    query: (Hq, T, d); key: (Hkv, T, d) with Hq a multiple of Hkv (GQA) -> (Hq, T, T) out_dtype.
    Rows are computed in chunks so the float32 score buffer stays at Hq x chunk x T.
    """
    hq, t, _ = query.shape
    out = torch.zeros(hq, t, t, dtype=out_dtype, device=query.device)  # (Hq, T, T); future keys stay 0
    for start, stop, lo, probs in _causal_softmax_chunks(query, key, scaling, softcap, sliding_window, chunk):
        out[:, start:stop, lo:stop] = probs
    return out


def causal_attention_view(
    query: torch.Tensor,
    key: torch.Tensor,
    scaling: float,
    head: int | str,
    softcap: float | None = None,
    sliding_window: int | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """One head's attention, or the mean / max over heads, without the (Hq, T, T) tensor.

    query: (Hq, T, d); key: (Hkv, T, d) -> (T, T) float32. A single head computes only that head
    (with its shared KV head); "mean" and "max" reduce each row chunk over heads as it is made.
    """
    if not isinstance(head, str):
        groups = query.shape[0] // key.shape[0]
        h = int(head)
        return causal_attention_probs(query[h : h + 1], key[h // groups : h // groups + 1], scaling,
                                      softcap, sliding_window, chunk)[0]
    t = query.shape[1]
    out = torch.zeros(t, t, dtype=torch.float32, device=query.device)  # (T, T)
    for start, stop, lo, probs in _causal_softmax_chunks(query, key, scaling, softcap, sliding_window, chunk):
        out[start:stop, lo:stop] = probs.mean(0) if head == "mean" else probs.amax(0)
    return out


def pool_block(rows: int, cols: int, pool: int | None) -> tuple[int, int, int]:
    """The tile side that fits a (rows, cols) matrix into at most pool x pool cells (1: no pooling),
    and the pooled shape. Pure. -> (block, pooled rows, pooled cols)"""
    block = max(1, -(-max(rows, cols) // pool)) if pool else 1
    return block, -(-rows // block), -(-cols // block)


def pool_matrix(m: torch.Tensor, block: int, mode: str = "max") -> torch.Tensor:
    """Downsample a (R, C) matrix by non-overlapping block x block tiles.

    Edge tiles are partial; "mean" divides by the number of real cells in each tile.
    (R, C) -> (ceil(R/block), ceil(C/block))
    """
    if block <= 1:
        return m.float()
    r, c = m.shape
    rb, cb = -(-r // block), -(-c // block)
    padded = torch.zeros(rb * block, cb * block, dtype=torch.float32, device=m.device)  # (rb*b, cb*b)
    padded[:r, :c] = m
    tiles = padded.view(rb, block, cb, block)  # (rb, b, cb, b)
    if mode == "max":
        return tiles.amax(dim=(1, 3))  # entries are >= 0, so zero padding never wins wrongly
    counts = torch.zeros_like(padded)
    counts[:r, :c] = 1
    n = counts.view(rb, block, cb, block).sum(dim=(1, 3))  # (rb, cb)
    return tiles.sum(dim=(1, 3)) / n


def causal_attention_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    rows: torch.Tensor,
    scaling: float,
    softcap: float | None = None,
    sliding_window: int | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Only the requested query rows of causal_attention_probs (same mask, softcap and GQA).

    query: (Hq, T, d); key: (Hkv, T, d); rows: (R,) query positions -> (Hq, R, T) out_dtype.
    Costs Hq x R x T instead of Hq x T x T, for views that need a few rows of every layer.
    """
    hq, t, _ = query.shape
    groups = hq // key.shape[0]
    rows = rows.to(device=query.device, dtype=torch.long)
    k = (key.repeat_interleave(groups, dim=0) if groups > 1 else key).float()  # (Hq, T, d)
    scores = torch.matmul(query[:, rows].float(), k.transpose(1, 2)) * scaling  # (Hq, R, T)
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    keys = torch.arange(t, device=query.device).unsqueeze(0)  # (1, T)
    masked = keys > rows.unsqueeze(1)  # (R, T) future keys
    if sliding_window:
        masked |= keys <= rows.unsqueeze(1) - sliding_window
    scores.masked_fill_(masked.unsqueeze(0), -math.inf)
    return torch.softmax(scores, dim=-1).to(out_dtype)


def kv_groups(num_heads: int, num_kv_heads: int) -> list[int]:
    """The KV head each query head reads (GQA): head h uses kv head h // (Hq / Hkv). Pure."""
    size = max(1, num_heads // max(1, num_kv_heads))
    return [h // size for h in range(num_heads)]
