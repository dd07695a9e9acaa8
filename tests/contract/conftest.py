"""The tiny-model fixture of the contract tests: no real model, no GGUF, nothing downloaded.

A random-weight Llama from tests/conftest.py (2 layers, GQA: 4 query heads over 2 KV heads,
hidden size 64) and a byte-level BPE tokenizer trained in-process on a fixed corpus, wrapped in
transformers' PreTrainedTokenizerFast with a ChatML chat template, go into llmvis' own
LoadedModel -> Engine -> create_app, and every test talks to the app through the Flask test client.

`ref` is a second copy of the same model (same seed, same weights) switched to eager attention,
so that tests compute every number they check independently, with the model's own forward pass
(`output_attentions=True, output_hidden_states=True`) and plain torch.

While a test of this folder runs, llmvis.model.loading.load_model / resolve_source /
default_gguf raise: a test that reached for the real default model would fail loudly.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from . import reference as R
from .support import LAYERS, MAX_NEW, SEED, VOCAB, build_tokenizer, ok

_LOAD_CALLS: list[str] = []


def _refuse_real_model(*args, **kwargs):
    _LOAD_CALLS.append(repr(args)[:200])
    raise AssertionError("a contract test tried to load a real model (llmvis.model.loading)")


@contextlib.contextmanager
def no_real_model():
    """load_model, resolve_source and default_gguf raise while the block runs."""
    import llmvis.model.loading as loading

    with pytest.MonkeyPatch.context() as mp:
        for name in ("load_model", "resolve_source", "default_gguf"):
            mp.setattr(loading, name, _refuse_real_model)
        yield


@pytest.fixture(autouse=True)
def _guard_real_model():
    with no_real_model():
        yield
    assert not _LOAD_CALLS, _LOAD_CALLS


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(make_tiny, tiny_tokenizer, tmp_path_factory):
    """llmvis' LoadedModel around the tiny Llama and the in-process tokenizer."""
    from llmvis.model.loading import LoadedModel, ModelSource

    folder = tmp_path_factory.mktemp("tiny-llama")
    model = make_tiny("llama", layers=LAYERS, seed=SEED, vocab_size=VOCAB)
    return LoadedModel(model=model, tokenizer=tiny_tokenizer, name="tiny-llama",
                       source=ModelSource("folder", Path(folder), "tiny-llama"))


@pytest.fixture(scope="session")
def ref(make_tiny):
    """An independent copy of the same weights in eager attention, for the reference numbers."""
    model = make_tiny("llama", layers=LAYERS, seed=SEED, vocab_size=VOCAB)
    model.set_attn_implementation("eager")
    return R.Reference(model)


@pytest.fixture(scope="session")
def make_server(tiny_lm):
    """make_server(**ServerConfig fields) -> (engine, Flask test client) on the tiny model."""
    from llmvis.core.config import ServerConfig
    from llmvis.engine.engine import Engine
    from llmvis.web.app import create_app

    def make(**config):
        config.setdefault("max_new_tokens", MAX_NEW)
        with no_real_model():
            eng = Engine(tiny_lm, ServerConfig(**config))
            app = create_app(eng)
        return eng, app.test_client()

    return make


@pytest.fixture(scope="module")
def server(make_server):
    return make_server()


@pytest.fixture(scope="module")
def engine(server):
    return server[0]


@pytest.fixture(scope="module")
def client(server):
    return server[1]


@pytest.fixture(scope="module")
def greedy_run(client):
    """One greedy run that stops by length (checked), shared by the view tests of a module."""
    body = {"system": "You are terse.", "prompt": "Why is the sky blue?", "temperature": 0, "max_new_tokens": 8}
    run = ok(client.post("/api/generate", json=body))
    assert run["finish_reason"] == "length", run["finish_reason"]
    return run
