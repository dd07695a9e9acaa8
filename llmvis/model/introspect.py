"""What the rest of llmvis asks of a loaded model: its text config, its logits from final states,
the device of a module, its end-of-sequence ids, and the input of its final norm.

Every function takes a transformers causal LM (the default model or a tiny random one).
"""
from __future__ import annotations

import contextlib

import torch


def text_config(model):
    """The language model's config: the config itself, or the text part of a multimodal
    checkpoint (Gemma 3 4B and up, Mistral 3) loaded for text generation."""
    return model.config.get_text_config(decoder=True)


def logits_from_hidden(model, final_hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The causal LM head applied to final (already normed) hidden states. (..., H) -> (..., V)

    `out`, a float32 (c, V) buffer for 2-D input (c, H), is written instead of a new tensor when
    the head is a bias-free float32 Linear (the same matmul, so the same bits: tested); otherwise
    it is ignored. Chunked full-vocabulary work reuses one buffer this way (core.metrics.RowScratch).
    """
    head = model.get_output_embeddings()
    h = final_hidden.to(head.weight.device)  # the head may sit on another GPU
    if (out is not None and h.dim() == 2 and type(head) is torch.nn.Linear and head.bias is None
            and head.weight.dtype == h.dtype == out.dtype == torch.float32 and out.device == h.device
            and out.shape == (h.shape[0], head.weight.shape[0])):
        logits = torch.mm(h, head.weight.t(), out=out)
    else:
        logits = head(h).float()
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    if cap:
        logits = logits.div_(cap).tanh_().mul_(cap) if logits is out else torch.tanh(logits / cap) * cap
    return logits


@contextlib.contextmanager
def final_norm_input(base):
    """Collect the input of the decoder's final norm (the last layer's output) on each forward.

    Yields a list that each forward appends one (1, S, H) tensor to; nothing is collected for a
    decoder without a `norm` module. The hook is removed on exit, also on error.
    """
    norm = getattr(base, "norm", None)
    seen: list[torch.Tensor] = []
    if not isinstance(norm, torch.nn.Module):
        yield seen
        return
    handle = norm.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


def eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), model.config, tokenizer):
        val = getattr(src, "eos_token_id", None)
        if isinstance(val, int):
            ids.add(val)
        elif isinstance(val, (list, tuple)):
            ids.update(int(v) for v in val)
    return ids


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a module's weights live. With --device-map auto the layers of one model sit on
    several GPUs, and the submodules called here directly have no accelerate hook to move inputs."""
    for param in module.parameters():
        return param.device
    return torch.device("cpu")
