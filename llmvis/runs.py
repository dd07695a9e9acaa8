"""Run: the unit of everything. Tokens with their statistics, cached hidden states, lazy views.

Attention is never materialised for all layers. For layer L it is recomputed from the
cached input to layer L (hidden_states[L]): input norm, q/k projections (with any q/k
norm and RoPE the architecture applies, because we call the model's own attention
module) and a softmax of q k^T, through a capture-only attention function registered
with transformers. The result is cached per layer on the run.
"""
from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from .analysis import causal_attention_probs, causal_attention_rows, causal_attention_view, cosine_consecutive, pca_2d
from .errors import BadRequest
from .generation import DecodeResult, text_config

CAPTURE_KEY = "llmvis_capture"
_capture = threading.local()


def _capture_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention 'implementation' that records softmax(q k^T) and skips the value product.

    query: (1, Hq, T, d), key: (1, Hkv, T, d). The output is zeros, because only the
    weights are wanted and the layer's output is discarded by the caller.
    """
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    softcap = kwargs.get("softcap") or getattr(getattr(module, "config", None), "attn_logit_softcapping", None)
    out_dtype = getattr(_capture, "out_dtype", torch.float32)
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
    from transformers import AttentionInterface

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


def _device_of(module: torch.nn.Module) -> torch.device:
    """Where a module's weights live. With --device-map auto the layers of one model sit on
    several GPUs, and the submodules called here directly have no accelerate hook to move inputs."""
    for param in module.parameters():
        return param.device
    return torch.device("cpu")


def layer_attention(model, hidden_in: torch.Tensor, layer_idx: int, out_dtype=torch.float32) -> torch.Tensor:
    """Attention probabilities of one layer, from that layer's input hidden states.

    hidden_in: (T, H) -> (Hq, T, T) out_dtype on CPU
    """
    base = model.get_decoder()
    layer = base.layers[layer_idx]
    x = hidden_in.to(_device_of(layer)).unsqueeze(0)  # (1, T, H)
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
    x = hidden_in.to(_device_of(layer)).unsqueeze(0)  # (1, T, H)
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


@dataclass
class Run:
    """One generation (or scored text) and everything derived from it."""

    id: str
    model_name: str
    params: dict
    ids: list[int]
    num_prompt: int
    segments: list[str]
    result: DecodeResult
    finish_reason: str
    timing: dict
    created: float = field(default_factory=time.time)
    status: str = "done"                                  # done | cancelled
    kind: str = "generate"                                # generate | fork | score
    links: dict = field(default_factory=dict)             # fork: parent_id, fork_position, forced_token_id
    children: list = field(default_factory=list)          # ids of runs forked from this one
    attention_cache: OrderedDict = field(default_factory=OrderedDict)  # (layer, head) -> (T, T) float32, LRU
    attention_budget: int = 512 << 20                     # bytes of attention this run may cache
    similarity_cache: torch.Tensor | None = None          # (L, T)
    view_cache: dict = field(default_factory=dict)        # name -> cached view result with .nbytes (insights)

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    @property
    def hidden(self) -> torch.Tensor:
        return self.result.hidden  # (L+1, T, H)

    @property
    def nbytes(self) -> int:
        """Bytes this run holds, as counted against the run store's budget."""
        total = self.hidden.numel() * self.hidden.element_size() + self.result.stats.nbytes
        residual = self.result.final_residual
        if residual is not None:
            total += residual.numel() * residual.element_size()
        total += self._attention_bytes()
        total += sum(int(getattr(v, "nbytes", 0)) for v in list(self.view_cache.values()))
        total += 64 * len(self.ids)
        return total

    # ---- views -------------------------------------------------------------------
    def check_position(self, position: int, field_name: str = "position") -> None:
        if not 0 <= position < self.num_tokens:
            raise BadRequest(field_name, f"must be in [0, {self.num_tokens - 1}], got {position}")

    def attention_matrix(self, model, layer: int, head: int | str) -> torch.Tensor:
        """(T, T) attention of one head, or the mean / max over heads, of `layer`; cached per
        (layer, head) within the run's attention budget, least recently viewed dropped first."""
        key = (layer, head)
        cached = self.attention_cache.get(key)
        if cached is None:
            cached = layer_attention_reduce(
                model, self.hidden[layer], layer,
                lambda q, k, scale, softcap, window: causal_attention_view(q, k, scale, head, softcap, window),
            ).cpu()
            self.attention_cache[key] = cached
            while len(self.attention_cache) > 1 and self._attention_bytes() > self.attention_budget:
                self.attention_cache.popitem(last=False)
        self.attention_cache.move_to_end(key)
        return cached

    def _attention_bytes(self) -> int:
        return sum(a.numel() * a.element_size() for a in self.attention_cache.values())

    def similarity(self) -> torch.Tensor:
        """(L, T) cosine similarity of each token's state between consecutive layers."""
        if self.similarity_cache is None:
            self.similarity_cache = cosine_consecutive(self.hidden, self.result.final_residual).cpu()
        return self.similarity_cache

    def projection(self, layer: int, fit_start: int = 1) -> tuple[torch.Tensor, list[float]]:
        return pca_2d(self.hidden[layer].cpu(), fit_start=fit_start)


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def float_or_none(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x
