"""Interventions on a loaded model as context managers: every hook they register is removed on
exit, also on error or cancel, so the model after the block is the model before it.

What they reach, in every supported layout (Llama, Qwen 2/3, Mistral, Gemma 1/2/3):
- a query head's output before the output projection: its `head_dim` slice of the input of
  `layers[l].self_attn.o_proj` (a forward pre-hook);
- a layer's MLP output (`layers[l].mlp`) and attention output (`layers[l].self_attn`, its
  first return value) (forward hooks);
- the residual stream at layer l: the input of decoder layer l (a forward pre-hook; position
  ids from the layer's keyword arguments, so decode steps with a KV cache know where they are).

Nothing here keeps results; llmvis.engine.intervene decides what to replace and with what.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from llmvis.model.introspect import text_config


def decoder_layers(model):
    return model.get_decoder().layers


def head_dim_of(model) -> int:
    cfg = text_config(model)
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def _positions(kwargs: dict, seq_len: int, device) -> torch.Tensor:
    """(S,) absolute positions of the rows a decoder layer is called with."""
    pos = kwargs.get("position_ids")
    if pos is None:
        pos = kwargs.get("cache_position")
    if pos is None:
        raise RuntimeError("this model's decoder layers get no position_ids; steering needs them")
    pos = pos.reshape(-1)[-seq_len:] if pos.dim() > 1 else pos[-seq_len:]
    return pos.to(device)


@contextlib.contextmanager
def hooks(model, specs: list[tuple[str, int, Callable]]):
    """Register hooks and always remove them.

    specs: (site, layer, fn) with site one of
      "o_proj_in"  fn(x (B, S, Hq*d)) -> x'          (pre-hook on self_attn.o_proj)
      "mlp_out"    fn(y (B, S, H)) -> y'              (hook on mlp)
      "attn_out"   fn(y (B, S, H)) -> y'              (hook on self_attn, first output)
      "resid_in"   fn(x (B, S, H), positions (S,)) -> x'   (pre-hook on the decoder layer)
    """
    layers = decoder_layers(model)
    handles = []
    try:
        for site, layer, fn in specs:
            block = layers[layer]
            if site == "o_proj_in":
                handles.append(block.self_attn.o_proj.register_forward_pre_hook(
                    lambda mod, args, fn=fn: (fn(args[0]), *args[1:])))
            elif site == "mlp_out":
                handles.append(block.mlp.register_forward_hook(lambda mod, args, out, fn=fn: fn(out)))
            elif site == "attn_out":
                def attn_hook(mod, args, out, fn=fn):
                    if isinstance(out, tuple):
                        return (fn(out[0]), *out[1:])
                    return fn(out)
                handles.append(block.self_attn.register_forward_hook(attn_hook))
            elif site == "resid_in":
                def resid_hook(mod, args, kwargs, fn=fn):
                    if args:
                        x = args[0]
                        pos = _positions(kwargs, x.shape[1], x.device)
                        return (fn(x, pos), *args[1:]), kwargs
                    x = kwargs["hidden_states"]
                    pos = _positions(kwargs, x.shape[1], x.device)
                    return args, dict(kwargs, hidden_states=fn(x, pos))
                handles.append(block.register_forward_pre_hook(resid_hook, with_kwargs=True))
            else:
                raise ValueError(f"unknown hook site {site!r}")
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def recording(model, sites: list[tuple[str, int]]):
    """Record what flows through sites ("o_proj_in", "mlp_out", "attn_out", "resid_in") on each
    forward: yields a dict (site, layer) -> list of (S, ...) tensors (batch 0), one per forward."""
    seen: dict[tuple[str, int], list[torch.Tensor]] = {key: [] for key in sites}

    def keep(key):
        def fn(x, *rest):
            seen[key].append(x[0].detach())
            return x
        return fn

    with hooks(model, [(site, layer, keep((site, layer))) for site, layer in sites]):
        yield seen


def replace_heads(values: dict[int, torch.Tensor | None], head_dim: int, first_row_only: bool = False):
    """An o_proj_in fn that puts values[h] in head h's slice: None = 0, a (d,) vector at every row,
    or an (S, d) block matching the call's rows. first_row_only: only the call's first row (a
    forward that starts at the patched position)."""
    def fn(x):
        x = x.clone()
        rows = slice(0, 1) if first_row_only else slice(None)
        for h, v in values.items():
            sl = slice(h * head_dim, (h + 1) * head_dim)
            x[:, rows, sl] = 0.0 if v is None else v.to(device=x.device, dtype=x.dtype)
        return x
    return fn


def replace_output(value: torch.Tensor | None):
    """An mlp_out / attn_out fn: the output becomes 0 or `value` ((H,), broadcast over rows)."""
    def fn(y):
        if value is None:
            return torch.zeros_like(y)
        return value.to(y.dtype).expand_as(y).clone()
    return fn


def add_direction(vector: torch.Tensor, alpha: float, from_position: int):
    """A resid_in fn adding alpha * vector at every absolute position >= from_position."""
    def fn(x, positions):
        delta = (alpha * vector).to(device=x.device, dtype=x.dtype)  # (H,)
        mask = (positions >= from_position).to(x.dtype).unsqueeze(-1)  # (S, 1)
        return x + mask * delta
    return fn


def set_rows(values: torch.Tensor, start: int):
    """A resid_in fn putting values (N, H), rows for absolute positions start .. start+N-1, in
    place of the stream at those positions (the rows of this call that fall in that range)."""
    def fn(x, positions):
        x = x.clone()
        idx = positions - start
        sel = (idx >= 0) & (idx < values.shape[0])
        if bool(sel.any()):
            x[0, sel] = values[idx[sel]].to(x.dtype)
        return x
    return fn
