"""Attention capture: run one layer's own attention module on its cached input states and
take (q, k) from it, so q/k norms, RoPE variants, GQA, sliding windows and soft-capping are
exactly the architecture's. A capture-only attention function is registered with transformers
and switched on only inside `capture_mode`, which always restores the model (also on error).

Nothing here keeps results: llmvis.engine caches what it computes (attention per
(layer, head), statistics, rows) on the run.
"""
from __future__ import annotations

import contextlib
import threading

import torch
from transformers import AttentionInterface

from llmvis.core.attention import causal_attention_probs, causal_attention_rows
from llmvis.model.introspect import device_of, text_config

CAPTURE_KEY = "llmvis_capture"


_capture = threading.local()


class _Captured(Exception):
    """Raised by the capture function once it has what it needs, so the layer skips its output
    projection over every row (caught in layer_attention_values, never seen outside)."""


def _capture_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention 'implementation' that records softmax(q k^T) and skips the value product.

    query: (1, Hq, T, d), key: (1, Hkv, T, d). The output is zeros, because only the
    weights are wanted and the layer's output is discarded by the caller.
    """
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    softcap = kwargs.get("softcap") or getattr(getattr(module, "config", None), "attn_logit_softcapping", None)
    out_dtype = getattr(_capture, "out_dtype", torch.float32)
    value_reducer = getattr(_capture, "value_reducer", None)
    if value_reducer is not None:  # (q, k, v) wanted; the layer's output projection is skipped
        _capture.weights = value_reducer(query[0], key[0], value[0], scale, softcap, window)
        raise _Captured
    reducer = getattr(_capture, "reducer", None)
    if reducer is not None:  # a caller that wants less than the full (Hq, T, T) matrix
        _capture.weights = reducer(query[0], key[0], scale, softcap, window)
    else:
        _capture.weights = causal_attention_probs(
            query[0], key[0], scale, softcap=softcap, sliding_window=window, out_dtype=out_dtype
        )
    out = torch.zeros(query.shape[0], query.shape[2], query.shape[1], query.shape[3], dtype=query.dtype, device=query.device)
    return out, None  # (1, T, Hq, d) as the attention functions return


def _register_capture() -> None:
    AttentionInterface.register(CAPTURE_KEY, _capture_attention)


@contextlib.contextmanager
def capture_mode(model):
    """Route attention through the capture function; always restored, even on error."""
    _register_capture()
    cfg = text_config(model)  # the language model's attention only, never a vision tower's
    previous = cfg._attn_implementation
    cfg._attn_implementation = CAPTURE_KEY
    try:
        yield
    finally:
        cfg._attn_implementation = previous
        _capture.weights = None
        _capture.out_dtype = torch.float32
        _capture.reducer = None
        _capture.value_reducer = None


def _rotary_for_layer(base, layer_idx: int, x: torch.Tensor, position_ids: torch.Tensor):
    """(cos, sin) for one layer; models with per-layer-type rotary embeddings are handled."""
    cfg = base.config
    layer_types = getattr(cfg, "layer_types", None)
    rotary = base.rotary_emb
    if layer_types and hasattr(base, "rotary_emb_local") and layer_types[layer_idx] == "sliding_attention":
        rotary = base.rotary_emb_local
    try:
        return rotary(x, position_ids)
    except TypeError:  # rotary embeddings keyed by layer type
        return rotary(x, position_ids, layer_types[layer_idx])


def layer_attention(model, hidden_in: torch.Tensor, layer_idx: int, out_dtype=torch.float32) -> torch.Tensor:
    """Attention probabilities of one layer, from that layer's input hidden states.

    hidden_in: (T, H) -> (Hq, T, T) out_dtype on CPU
    """
    base = model.get_decoder()
    layer = base.layers[layer_idx]
    x = hidden_in.to(device_of(layer)).unsqueeze(0)  # (1, T, H)
    t = x.shape[1]
    position_ids = torch.arange(t, device=x.device).unsqueeze(0)  # (1, T)
    with torch.inference_mode(), capture_mode(model):
        _capture.out_dtype = out_dtype
        cos_sin = _rotary_for_layer(base, layer_idx, x, position_ids)
        normed = layer.input_layernorm(x)
        layer.self_attn(hidden_states=normed, position_embeddings=cos_sin, attention_mask=None, position_ids=position_ids)
        weights = _capture.weights
    return weights.cpu()


def layer_attention_reduce(model, hidden_in: torch.Tensor, layer_idx: int, reducer):
    """Run one layer's attention from its input states and hand (q, k) to `reducer` instead.

    reducer(query (Hq, T, d), key (Hkv, T, d), scaling, softcap, sliding_window) -> anything;
    its result is returned. Lets a view reduce attention in row chunks (stats, a few rows)
    without materialising the (Hq, T, T) matrix.
    """
    base = model.get_decoder()
    layer = base.layers[layer_idx]
    x = hidden_in.to(device_of(layer)).unsqueeze(0)  # (1, T, H)
    position_ids = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    with torch.inference_mode(), capture_mode(model):
        _capture.reducer = reducer
        cos_sin = _rotary_for_layer(base, layer_idx, x, position_ids)
        normed = layer.input_layernorm(x)
        layer.self_attn(hidden_states=normed, position_embeddings=cos_sin, attention_mask=None, position_ids=position_ids)
        return _capture.weights


def layer_attention_rows(model, hidden_in: torch.Tensor, layer_idx: int, rows, out_dtype=torch.float32) -> torch.Tensor:
    """Only the given query rows of layer_attention. hidden_in: (T, H), rows: (R,) -> (Hq, R, T) on CPU"""
    rows_t = torch.as_tensor(rows, dtype=torch.long)

    def reducer(q, k, scale, softcap, window):
        return causal_attention_rows(q, k, rows_t, scale, softcap=softcap, sliding_window=window, out_dtype=out_dtype)

    return layer_attention_reduce(model, hidden_in, layer_idx, reducer).cpu()


class _QueryRows(torch.nn.Module):
    """Stands in for a layer's q_proj while only some query rows are wanted: those rows are
    projected, the others are left zero (a zero row stays zero through q norms and RoPE)."""

    def __init__(self, proj: torch.nn.Module, rows: torch.Tensor):
        super().__init__()
        self.proj = proj
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, T, H)
        picked = self.proj(x[:, self.rows])  # (1, R, Hq*d)
        out = picked.new_zeros(x.shape[0], x.shape[1], picked.shape[-1])
        out[:, self.rows] = picked
        return out


@contextlib.contextmanager
def _only_query_rows(attn: torch.nn.Module, rows):
    """Project only `rows` of the queries inside `attn` (restored on exit, also on error)."""
    proj = getattr(attn, "q_proj", None)
    if rows is None or not isinstance(proj, torch.nn.Linear):
        yield
        return
    attn.q_proj = _QueryRows(proj, torch.as_tensor(rows, dtype=torch.long, device=proj.weight.device))
    try:
        yield
    finally:
        attn.q_proj = proj


def layer_attention_values(model, hidden_in: torch.Tensor, layer_idx: int, reducer, query_rows=None):
    """Run one layer's attention from its input states and hand (q, k, v) to `reducer`.

    reducer(query (Hq, T, d), key (Hkv, T, d), value (Hkv, T, d), scaling, softcap, sliding_window)
    -> anything; its result is returned. The layer stops right after its attention function:
    its output projection is not applied to the T rows (llmvis.engine.explain applies it to the
    rows it needs, head by head). With query_rows, only those rows of the query are projected
    (the others are zero): the reducer must read only them.
    """
    base = model.get_decoder()
    layer = base.layers[layer_idx]
    x = hidden_in.to(device_of(layer)).unsqueeze(0)  # (1, T, H)
    position_ids = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    with torch.inference_mode(), capture_mode(model), _only_query_rows(layer.self_attn, query_rows):
        _capture.value_reducer = reducer
        cos_sin = _rotary_for_layer(base, layer_idx, x, position_ids)
        normed = layer.input_layernorm(x)
        try:
            layer.self_attn(hidden_states=normed, position_embeddings=cos_sin, attention_mask=None,
                            position_ids=position_ids)
        except _Captured:
            return _capture.weights
    raise RuntimeError(f"layer {layer_idx}'s attention did not call its attention function")
