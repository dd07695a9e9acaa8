"""Shared fixtures: the real default model (loaded once per session) and tiny random models."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Servers and CLIs started by tests keep their run history in a throwaway folder, never in the
# user's ~/.local/share/llmvis (the load and CLI tests used to leave ~1 GB of runs there).
_TEST_DATA_DIR = tempfile.mkdtemp(prefix="llmvis-test-data-")
os.environ["LLMVIS_DATA_DIR"] = _TEST_DATA_DIR
atexit.register(shutil.rmtree, _TEST_DATA_DIR, True)


@pytest.fixture(scope="session")
def default_lm():
    """The embedded SmolLM2-135M-Instruct, loaded through the real code path."""
    from llmvis.core.config import ModelConfig
    from llmvis.model.loading import load_model

    return load_model(ModelConfig())


TINY_KINDS = ("qwen3", "llama", "qwen2", "mistral", "gemma", "gemma2", "gemma3", "gemma3_mm")
TINY_WINDOW = 5  # sliding window of the tiny Mistral / Gemma 2 / Gemma 3, shorter than the tests' sequences


def _tiny_config(kind: str = "qwen3", layers: int = 2, vocab_size: int = 211):
    """A config for a tiny model of one of the supported layouts (GQA: 4 query heads, 2 KV heads).

    Mistral, Gemma 2 and Gemma 3 get a sliding window shorter than the test sequences, Gemma 2
    attention and final logit soft-capping, and Gemma 2/3 a query_pre_attn_scalar that is not
    head_dim, so every one of those code paths in the attention recomputation is exercised.
    "gemma3_mm" is a multimodal Gemma 3 checkpoint (text model + a tiny vision tower), the layout of
    Gemma 3 4B and up, which AutoModelForCausalLM loads as Gemma3ForConditionalGeneration.
    """
    import transformers as tf

    common = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        eos_token_id=3, bos_token_id=1, pad_token_id=0,
    )
    if kind == "qwen3":
        return tf.Qwen3Config(**common)
    if kind == "llama":
        return tf.LlamaConfig(**common)
    if kind == "qwen2":
        return tf.Qwen2Config(**common)
    if kind == "mistral":
        return tf.MistralConfig(**common, sliding_window=TINY_WINDOW)
    if kind == "gemma":
        return tf.GemmaConfig(**common)
    if kind == "gemma2":
        return tf.Gemma2Config(**common, sliding_window=TINY_WINDOW, attn_logit_softcapping=5.0,
                               final_logit_softcapping=3.0, query_pre_attn_scalar=20)
    if kind == "gemma3":
        return tf.Gemma3TextConfig(**common, sliding_window=TINY_WINDOW, sliding_window_pattern=2,
                                   query_pre_attn_scalar=20)
    if kind == "gemma3_mm":
        text = {k: v for k, v in common.items() if not k.endswith("token_id")}
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=28, patch_size=14)
        return tf.Gemma3Config(
            text_config=dict(text, sliding_window=TINY_WINDOW, sliding_window_pattern=2, query_pre_attn_scalar=20),
            vision_config=vision, mm_tokens_per_image=4, image_token_index=vocab_size - 1,
            boi_token_index=vocab_size - 3, eoi_token_index=vocab_size - 2,
            eos_token_id=3, bos_token_id=1, pad_token_id=0,
        )
    raise ValueError(f"unknown tiny model kind: {kind}")


def _tiny_model(kind: str = "qwen3", layers: int = 2, seed: int = 0, vocab_size: int = 211):
    """A random-weight causal LM built from a config (no download), in eval mode, fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    attn = "eager" if kind == "gemma2" else "sdpa"  # Gemma 2 refuses sdpa in transformers 5.x
    model = AutoModelForCausalLM.from_config(_tiny_config(kind, layers, vocab_size), attn_implementation=attn,
                                             dtype=torch.float32)
    return model.eval()


def _assert_error(resp, status: int, field: str | None = None):
    """Every error answer has the one error shape, the status, and names the field."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:500])
    assert resp.is_json, resp.get_data(as_text=True)[:200]
    body = resp.get_json()
    assert {"error", "status"} <= set(body) <= {"error", "status", "run_id"}, body
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert field in body["error"], body
    return body


@pytest.fixture(scope="session")
def make_tiny():
    return _tiny_model


@pytest.fixture(scope="session")
def assert_error():
    return _assert_error
