"""Attribution maths on one layer's (attention, values, output projection): pure tensor functions.

Used by llmvis.engine.explain, which runs each layer's own attention module to get (q, k, v).
Notation: Hq query heads of size d, Hkv key/value heads (GQA: query head h reads KV head
h // (Hq / Hkv)), H the hidden size, R query rows, S source positions.

- `head_outputs`: each head's output written to the residual stream, `W_O^h (Σ_j a_hj v_j)`;
  their sum plus the output bias is the layer's attention output (before any post-norm).
- `value_norms`: `||W_O^h v_j||` for every head and source from the (d, d) Gram matrix
  `W_O^hᵀ W_O^h`, so no (Hq, S, H) tensor is built (Kobayashi et al. 2020).
- `source_logits`: the signed part of each source token in a direction `w` of the residual stream,
  `Σ_h a_hj (W_O^h v_j) · w`, again without any (Hq, S, H) tensor.
- `flow_edges`: the normalised incoming weights of one receiving node of the information-flow graph.
"""
from __future__ import annotations

import torch


def per_head_weight(o_weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """An o_proj weight (H, Hq*d) as (Hq, H, d): head h's columns."""
    hidden, inner = o_weight.shape
    return o_weight.float().reshape(hidden, num_heads, inner // num_heads).permute(1, 0, 2)


def grouped(value: torch.Tensor, num_heads: int) -> torch.Tensor:
    """KV heads (Hkv, S, d) repeated to the query heads that read them: (Hq, S, d)."""
    groups = num_heads // value.shape[0]
    return value.repeat_interleave(groups, dim=0) if groups > 1 else value


def head_outputs(attn: torch.Tensor, value: torch.Tensor, w_heads: torch.Tensor) -> torch.Tensor:
    """attn (Hq, R, S), value (Hkv, S, d), w_heads (Hq, H, d) -> (Hq, R, H): what each head adds."""
    z = torch.matmul(attn.float(), grouped(value.float(), attn.shape[0]))  # (Hq, R, d)
    return torch.matmul(z, w_heads.transpose(1, 2))  # (Hq, R, H)


def value_norms(value: torch.Tensor, w_heads: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
    """||gain ⊙ W_O^h v_j|| for each query head h and source j: (Hkv, S, d), (Hq, H, d) -> (Hq, S).

    gain (H,) is an optional fixed per-dimension scale after the projection (a post-attention
    norm held at a fixed scale). Computed as sqrt(v_jᵀ G_h v_j) with G_h = W_hᵀ diag(gain²) W_h.
    """
    w = w_heads if gain is None else w_heads * gain.float().view(1, -1, 1)
    gram = torch.matmul(w.transpose(1, 2), w)  # (Hq, d, d)
    v = grouped(value.float(), w_heads.shape[0])  # (Hq, S, d)
    sq = (torch.matmul(v, gram) * v).sum(-1)  # (Hq, S)
    return sq.clamp_min(0).sqrt()


def source_logits(attn_row: torch.Tensor, value: torch.Tensor, w_heads: torch.Tensor,
                  direction: torch.Tensor) -> torch.Tensor:
    """attn_row (Hq, S), value (Hkv, S, d), w_heads (Hq, H, d), direction (H,) -> (Hq, S):
    a_hj (W_O^h v_j) · direction. Summed over j it is head h's output read along `direction`."""
    r = torch.matmul(w_heads.transpose(1, 2), direction.float())  # (Hq, d): W_hᵀ w
    v = grouped(value.float(), w_heads.shape[0])  # (Hq, S, d)
    return attn_row.float() * torch.matmul(v, r.unsqueeze(-1)).squeeze(-1)  # (Hq, S)


def flow_edges(attn_row: torch.Tensor, vnorm: torch.Tensor, residual_norm: float, mlp_norm: float):
    """The incoming weights of one node (l+1, i) of the information-flow graph.

    attn_row (Hq, S) the attention of row i, vnorm (Hq, S) the value norms; the residual and the
    MLP enter as the norms of their vectors. Returns (attention (S,), residual, mlp, top head
    per source (S,), that head's share of the source's weight (S,)), normalised so that the
    attention weights, the residual and the MLP sum to 1.
    """
    per_head = attn_row.float() * vnorm.float()  # (Hq, S)
    attn = per_head.sum(0)  # (S,)
    total = float(attn.sum()) + residual_norm + mlp_norm
    total = total if total > 0 else 1.0
    top = per_head.argmax(0)  # (S,)
    share = per_head.max(0).values / attn.clamp_min(1e-30)
    return attn / total, residual_norm / total, mlp_norm / total, top, share
