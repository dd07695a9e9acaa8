"""Why the model predicted a token: direct logit attribution to the embedding, every query head
and every MLP; input attribution over the earlier tokens (gradient × input, integrated gradients,
value-norm attention, and the direct part of each source); and the information-flow graph.

Functions of a model and a run's stored states (hidden (L+1, T, H), the final norm's input
(T, H)), like llmvis.engine.views; the Engine calls them under its model lock and caches their
results on the run. The definitions are in docs/EXPLAIN.md.

Each layer's attention is recomputed from its stored input with the layer's own module
(llmvis.model.capture.layer_attention_values gives q, k and v with the architecture's norms,
RoPE, GQA, windows and soft-caps); only the rows asked for are multiplied out, and only
prefixes [0, q] of the states are used (attention is causal).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from llmvis.core.attention import causal_attention_rows
from llmvis.core.attribution import flow_edges, head_outputs, per_head_weight, source_logits, value_norms
from llmvis.core.errors import BadRequest
from llmvis.model.capture import layer_attention_values
from llmvis.model.introspect import device_of, text_config

FLOW_MAX_NODES = 64  # nodes expanded per layer of the flow graph (the heaviest)


# ---- norms held at a fixed scale ---------------------------------------------------------------
def norm_eps(norm: torch.nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        val = getattr(norm, name, None)
        if isinstance(val, (int, float)):
            return float(val)
    return 1e-6


def norm_gain(norm: torch.nn.Module, size: int) -> torch.Tensor:
    """The effective per-dimension weight g of an RMS norm (w, or 1 + w on Gemma): norm(1) · sqrt(1 + eps).

    Read from the module itself, so each architecture's own convention is used."""
    dev = device_of(norm)
    dtype = next((p.dtype for p in norm.parameters()), torch.float32)
    with torch.inference_mode():
        ones = torch.ones(1, size, device=dev, dtype=dtype)
        out = norm(ones).float().reshape(-1).cpu()
    return out * math.sqrt(1.0 + norm_eps(norm))


def rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / sqrt(mean(x²) + eps) of each row: (..., H) -> (..., 1) float32."""
    x = x.float()
    return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def has_post_attention_norm(layer) -> bool:
    """Gemma 2/3 norm the attention output before adding it to the residual (and name the MLP's
    input norm pre_feedforward_layernorm); Llama-style layers call their MLP input norm
    post_attention_layernorm and add the attention output as it is."""
    return isinstance(getattr(layer, "pre_feedforward_layernorm", None), torch.nn.Module)


# ---- the target direction ----------------------------------------------------------------------
@dataclass
class Direction:
    """What one logit (difference) reads from the final residual at row q."""

    w: torch.Tensor          # (H,) float32: u ⊙ g · s, so that logit ≈ w · resid
    readout: torch.Tensor    # (H,) float32: u ⊙ g, the residual direction that raises the logit (difference)
    scale: float             # s = 1 / rms(resid) of the query row, held fixed
    logit: float             # the model's own logit (difference) before any final soft-cap
    softcap: float | None    # the final logits' soft-cap, if the model has one
    bias: float              # the LM head's bias part (0 without a bias)


def target_direction(model, resid_q: torch.Tensor, target: int, contrast: int | None) -> Direction:
    """The fixed-scale readout of logit[target] (- logit[contrast]) from the final residual row."""
    base = model.get_decoder()
    norm = base.norm
    head = model.get_output_embeddings()
    x = resid_q.float().cpu()
    gain = norm_gain(norm, x.shape[-1])
    scale = rms_scale(x, norm_eps(norm))  # (1,)
    w_u = head.weight.detach()
    u = w_u[target].float().cpu()
    if contrast is not None:
        u = u - w_u[contrast].float().cpu()
    with torch.inference_mode():
        raw = head(norm(resid_q.to(device_of(norm)).unsqueeze(0)).to(w_u.device)).float()[0].cpu()  # (V,) pre-cap
    logit = float(raw[target] - (raw[contrast] if contrast is not None else 0.0))
    bias = 0.0
    if getattr(head, "bias", None) is not None:
        b = head.bias.detach().float().cpu()
        bias = float(b[target] - (b[contrast] if contrast is not None else 0.0))
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    return Direction(u * gain * scale, u * gain, float(scale), logit, float(cap) if cap else None, bias)


# ---- one layer, a few query rows ---------------------------------------------------------------
@dataclass
class LayerRows:
    """Layer l's attention at a few query rows, and what it wrote to the residual there."""

    attn: torch.Tensor         # (Hq, R, S) float32, S = last row + 1
    value: torch.Tensor        # (Hkv, S, d) float32
    heads: torch.Tensor        # (Hq, R, H): each head's part of the residual update (post-norm linearised)
    bias: torch.Tensor         # (R, H): the output bias's part (zeros without a bias)
    output: torch.Tensor       # (R, H): the attention part of the residual update, exactly as the layer adds it
    w_heads: torch.Tensor      # (Hq, H, d) o_proj per head
    gain: torch.Tensor | None  # (R, H) the post-attention norm's fixed scale per row (None without one)


def layer_rows(model, hidden_in: torch.Tensor, layer_idx: int, rows: list[int]) -> LayerRows:
    """hidden_in: layer l's input states (T, H); rows: query positions (ascending)."""
    layer = model.get_decoder().layers[layer_idx]
    attn_mod = layer.self_attn
    stop = max(rows) + 1
    rows_t = torch.as_tensor(rows, dtype=torch.long)

    def reducer(q, k, v, scale, softcap, window):
        a = causal_attention_rows(q, k, rows_t, scale, softcap=softcap, sliding_window=window)  # (Hq, R, S)
        return a.float().cpu(), v.float().cpu()

    attn, value = layer_attention_values(model, hidden_in[:stop], layer_idx, reducer, query_rows=rows)
    num_heads = attn.shape[0]
    o_proj = attn_mod.o_proj
    w_heads = per_head_weight(o_proj.weight.detach().cpu(), num_heads)  # (Hq, H, d)
    heads = head_outputs(attn, value, w_heads)  # (Hq, R, H)
    hidden = heads.shape[-1]
    bias = torch.zeros(len(rows), hidden)
    if getattr(o_proj, "bias", None) is not None:
        bias = bias + o_proj.bias.detach().float().cpu()
    raw = heads.sum(0) + bias  # (R, H): o_proj's output at these rows
    gain = None
    if has_post_attention_norm(layer):
        post = layer.post_attention_layernorm
        dtype = next(post.parameters()).dtype
        with torch.inference_mode():
            output = post(raw.to(device_of(post), dtype)).float().cpu()
        gain = norm_gain(post, hidden).unsqueeze(0) * rms_scale(raw, norm_eps(post))  # (R, H)
        heads = heads * gain.unsqueeze(0)
        bias = bias * gain
    else:
        output = raw
    return LayerRows(attn, value, heads, bias, output, w_heads, gain)


def layer_output_row(hidden: torch.Tensor, final_residual: torch.Tensor, layer_idx: int) -> torch.Tensor:
    """Layer l's output states (T, H): the next layer's input, or the final norm's input after the last."""
    return final_residual if layer_idx + 1 >= hidden.shape[0] - 1 else hidden[layer_idx + 1]


# ---- 1. direct logit attribution (and the attention part per source) -----------------------------
@dataclass
class RowAttribution:
    """Everything about one query row q and one target direction, from one pass over the layers."""

    query: int
    target: int
    contrast: int | None
    direction: Direction
    embedding: float
    heads: np.ndarray          # (L, Hq) logit part of each query head
    o_bias: np.ndarray         # (L,)
    attention: np.ndarray      # (L,) the attention output's part (exact; = heads + o_bias up to float error)
    mlp: np.ndarray            # (L,)
    value_norm: np.ndarray     # (L, q+1) Σ_h a_h[q, j] ||W_O^h v_j||, unnormalised
    direct: np.ndarray         # (L, q+1) Σ_h a_h[q, j] (W_O^h v_j) · w
    nbytes: int = field(init=False)

    def __post_init__(self):
        self.nbytes = sum(a.nbytes for a in (self.heads, self.o_bias, self.attention, self.mlp,
                                             self.value_norm, self.direct))

    @property
    def total(self) -> float:
        return float(self.embedding + self.attention.sum() + self.mlp.sum() + self.direction.bias)


def row_attribution(model, hidden: torch.Tensor, final_residual: torch.Tensor, query: int,
                    target: int, contrast: int | None, should_stop: Callable[[], bool] | None = None) -> RowAttribution:
    """Direct logit attribution of logit[target] (- logit[contrast]) at row `query`, layer by layer."""
    num_layers = hidden.shape[0] - 1
    direction = target_direction(model, final_residual[query], target, contrast)
    w = direction.w
    heads, o_bias, attn_part, mlp_part, vnorm, direct = [], [], [], [], [], []
    for layer in range(num_layers):
        if should_stop is not None and should_stop():
            raise InterruptedError
        rows = layer_rows(model, hidden[layer], layer, [query])
        heads.append((rows.heads[:, 0] @ w).numpy())
        o_bias.append(float(rows.bias[0] @ w))
        out = rows.output[0]
        attn_part.append(float(out @ w))
        delta = layer_output_row(hidden, final_residual, layer)[query].float().cpu() - hidden[layer][query].float().cpu()
        mlp_part.append(float((delta - out) @ w))
        post_gain = rows.gain[0] if rows.gain is not None else None
        vn = value_norms(rows.value, rows.w_heads, post_gain)  # (Hq, S)
        vnorm.append((rows.attn[:, 0] * vn).sum(0).numpy())
        w_src = w * post_gain if post_gain is not None else w
        direct.append(source_logits(rows.attn[:, 0], rows.value, rows.w_heads, w_src).sum(0).numpy())
    embedding = float(hidden[0][query].float().cpu() @ w)
    return RowAttribution(query, target, contrast, direction, embedding, np.stack(heads), np.array(o_bias), np.array(attn_part),
                          np.array(mlp_part), np.stack(vnorm), np.stack(direct))


# ---- 2. gradient methods -----------------------------------------------------------------------
@dataclass
class GradientAttribution:
    method: str
    query: int
    target: int
    contrast: int | None
    scores: np.ndarray          # (q+1,) per input token
    steps: int
    value: float                # f(x): the target logit (difference) at row q, after any soft-cap
    baseline_value: float | None = None  # f(b) for integrated gradients
    baseline_id: int | None = None       # b: this token's embedding at every position
    nbytes: int = field(init=False)

    def __post_init__(self):
        self.nbytes = self.scores.nbytes


def target_score(model, embeds: torch.Tensor, target: int, contrast: int | None) -> torch.Tensor:
    """f(embeds): the last row's logit[target] (- logit[contrast]), as the model outputs it."""
    out = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1)
    logits = out.logits[0, -1].float()
    return logits[target] - (logits[contrast] if contrast is not None else 0.0)


def input_embeddings(model, ids: list[int]) -> torch.Tensor:
    emb = model.get_input_embeddings()
    with torch.inference_mode():
        x = emb(torch.tensor([ids], device=emb.weight.device))
    return x.clone()  # (1, T, H), a normal tensor (not an inference tensor) so autograd may use it


def gradient_at(model, point: torch.Tensor, target: int, contrast: int | None) -> tuple[torch.Tensor, float]:
    """(∇f at the input embeddings `point` (1, T, H), as (T, H) float32; f(point))."""
    e = point.detach().requires_grad_(True)
    with torch.enable_grad():
        f = target_score(model, e, target, contrast)
        (grad,) = torch.autograd.grad(f, e)
    return grad[0].float().cpu(), float(f.detach())


def score_at(model, point: torch.Tensor, target: int, contrast: int | None) -> float:
    """f(point) without gradients."""
    with torch.inference_mode():
        return float(target_score(model, point, target, contrast))


def check_target(vocab: int, name: str, value: int | None) -> None:
    if value is not None and not 0 <= value < vocab:
        raise BadRequest(name, f"must be a token id in [0, {vocab - 1}], got {value}")


# ---- 3. information flow -----------------------------------------------------------------------
@dataclass
class FlowGraph:
    query: int
    threshold: float
    nodes: list[tuple[int, int]]                 # (layer, position), layer 0..L
    edges: list[dict]                            # source, target, kind, weight, head, head_weight
    nbytes: int = 0


def flow_graph(model, hidden: torch.Tensor, final_residual: torch.Tensor, query: int, threshold: float,
               max_nodes: int = FLOW_MAX_NODES, should_stop: Callable[[], bool] | None = None) -> FlowGraph:
    """The information-flow graph of row `query`, from the final residual down to the embeddings.

    Node (l+1, i) receives from (l, j) by attention, Σ_h a_h[i, j] ||W_O^h v_j||, from (l, i) by the
    residual (||h_l[i]||) and by the MLP (||mlp_l[i]||), normalised to sum 1 (llmvis.core.attribution.flow_edges).
    Only edges of weight >= threshold are kept and only their sources expanded (the heaviest
    max_nodes per layer).
    """
    num_layers = hidden.shape[0] - 1
    keep = {num_layers: [query]}
    nodes = {(num_layers, query)}
    edges: list[dict] = []
    for layer in range(num_layers - 1, -1, -1):
        if should_stop is not None and should_stop():
            raise InterruptedError
        receivers = sorted(keep[layer + 1])
        rows = layer_rows(model, hidden[layer], layer, receivers)
        post_gain = rows.gain
        after = layer_output_row(hidden, final_residual, layer)
        incoming: dict[int, float] = {}
        shared = value_norms(rows.value, rows.w_heads) if post_gain is None else None  # (Hq, S)
        for r, i in enumerate(receivers):
            if shared is not None:
                vn = shared[:, : i + 1]
            else:  # the post-attention norm's fixed scale differs per receiving row
                vn = value_norms(rows.value[:, : i + 1], rows.w_heads, post_gain[r])  # (Hq, i+1)
            h_in = hidden[layer][i].float().cpu()
            mlp_vec = after[i].float().cpu() - h_in - rows.output[r]
            attn_w, res_w, mlp_w, top, share = flow_edges(rows.attn[:, r, : i + 1], vn,
                                                          float(h_in.norm()), float(mlp_vec.norm()))
            for kind, weight in (("residual", res_w), ("mlp", mlp_w)):
                if weight >= threshold:
                    edges.append({"source": [layer, i], "target": [layer + 1, i], "kind": kind,
                                  "weight": float(weight), "head": None, "head_weight": None})
                    if kind == "residual":
                        incoming[i] = incoming.get(i, 0.0) + float(weight)
            for j in torch.nonzero(attn_w >= threshold).flatten().tolist():
                edges.append({"source": [layer, j], "target": [layer + 1, i], "kind": "attention",
                              "weight": float(attn_w[j]), "head": int(top[j]), "head_weight": float(share[j])})
                incoming[j] = incoming.get(j, 0.0) + float(attn_w[j])
            if mlp_w >= threshold and i not in incoming:  # the MLP reads its own position's residual
                incoming[i] = float(mlp_w)
        chosen = sorted(incoming, key=lambda j: -incoming[j])[:max_nodes]
        kept = set(chosen)
        edges = [e for e in edges if e["source"][0] != layer or e["source"][1] in kept]
        keep[layer] = sorted(kept) if kept else []
        nodes.update((layer, j) for j in kept)
        if not kept:
            break
    return FlowGraph(query, threshold, sorted(nodes), edges)
