"""Pure tensor functions: distributions, sampling filters, cosine, PCA, attention.

Nothing here touches a model or global state, so every function is unit-tested
against hand-computed values in tests/unit/test_analysis.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of softmax(logits) along the last dim."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    # p * logp is nan where p == 0 and logp == -inf; those terms are 0 by definition
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def entropy_of_probs(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of a probability vector (zeros allowed)."""
    return -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(-1)


def rank_of(probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """1 + the number of entries with strictly higher probability than probs[..., id]."""
    chosen = probs.gather(-1, ids.unsqueeze(-1))  # (..., 1)
    return (probs > chosen).sum(-1) + 1


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

    temperature == 0 means greedy: a point mass on the argmax.
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
        before = torch.cumsum(sorted_q, 0) - sorted_q  # mass strictly before each entry
        keep = before < top_p
        keep[0] = True
        sorted_q, sorted_ids = sorted_q[keep], sorted_ids[keep]
    kept = float(sorted_q.sum().item())
    probs = sorted_q / kept
    return SamplingDist(sorted_ids, probs, max(0.0, 1.0 - kept), float(entropy_of_probs(probs).item()))


def cosine_consecutive(hidden: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarity between layer l and l+1 for every token.

    hidden: (L+1, T, H) -> (L, T). `last` (T, H), when given, stands in for hidden[L] (the last
    layer's output before the final norm, where hidden[L] is after it).
    """
    n = hidden.shape[0] - 1
    out = torch.empty(n, hidden.shape[1], dtype=torch.float32)  # (L, T)
    for layer in range(n):  # one layer pair at a time: temporaries stay (T, H), not (L, T, H)
        upper = last if last is not None and layer + 1 == n else hidden[layer + 1]
        a, b = hidden[layer].float(), upper.float()  # (T, H)
        out[layer] = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8).cpu()
    return out


def pca_2d(x: torch.Tensor, fit_start: int = 0) -> tuple[torch.Tensor, list[float]]:
    """Project rows of x (N, D) onto the first two principal components of x[fit_start:].

    All rows are projected; only rows from fit_start on shape the components (so an outlier such
    as an attention-sink first token, whose norm dwarfs the rest, does not take the whole picture).
    Returns (coords (N, 2), explained variance ratio of each component over the fitted rows).
    Signs are fixed so that the largest-magnitude loading of each component is positive,
    which keeps the picture stable between calls.
    """
    x = x.double()
    n = x.shape[0]
    fit = x[fit_start:] if n - fit_start >= 2 else x  # (M, D)
    if fit.shape[0] < 2:
        return torch.zeros(n, 2), [0.0, 0.0]
    mean = fit.mean(0, keepdim=True)  # (1, D)
    centred = fit - mean  # (M, D)
    if centred.shape[0] > centred.shape[1]:  # many tokens: eigh of the (D, D) scatter matrix is cheaper
        evals, evecs = torch.linalg.eigh(centred.T @ centred)  # ascending: (D,), (D, D)
        var = evals.flip(0).clamp_min(0)  # (D,) = squared singular values
        vh = evecs.flip(1).T  # (D, D), rows are components
    else:
        _, sv, vh = torch.linalg.svd(centred, full_matrices=False)  # sv: (M,), vh: (M, D)
        var = sv**2
    comps = vh[:2]  # (2, D)
    idx = comps.abs().argmax(1)
    signs = torch.sign(comps[torch.arange(comps.shape[0]), idx])
    signs[signs == 0] = 1
    comps = comps * signs.unsqueeze(1)
    coords = (x - mean) @ comps.T  # (N, 2)
    total = float(var.sum().item())
    ratios = [float(v / total) if total > 0 else 0.0 for v in var[:2].tolist()]
    while len(ratios) < 2:
        ratios.append(0.0)
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(n, 2 - coords.shape[1], dtype=coords.dtype)], 1)
    return coords.float(), ratios


def _causal_softmax_chunks(query, key, scaling, softcap, sliding_window, chunk):
    """Yield (start, stop, lo, probs) for query rows [start, stop): probs (Hq, c, stop-lo) float32
    = softmax(q k^T * scaling) over keys [lo, stop) with the causal / sliding-window mask.

    query: (Hq, T, d); key: (Hkv, T, d), Hq a multiple of Hkv (GQA: each key head serves a group).
    Keys after `stop` are never computed: they are all masked for these rows.
    """
    hq, t, _ = query.shape
    groups = hq // key.shape[0]
    k = (key.repeat_interleave(groups, dim=0) if groups > 1 else key).float()  # (Hq, T, d)
    cols = torch.arange(t, device=query.device)
    for start in range(0, t, chunk):
        stop = min(t, start + chunk)
        lo = max(0, start - sliding_window + 1) if sliding_window else 0  # first key any row here can see
        scores = torch.matmul(query[:, start:stop].float(), k[:, lo:stop].transpose(1, 2)) * scaling  # (Hq, c, stop-lo)
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
