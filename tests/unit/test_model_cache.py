"""The converted-model cache: a corrupt cache is detected and rebuilt, not crashed on."""
import shutil

import pytest
import torch

from llmvis.config import ModelConfig
from llmvis.models import _cache_is_complete, load_model

pytestmark = pytest.mark.model


def cached_folder(cache_dir):
    found = [p for p in (cache_dir / "gguf").iterdir() if p.is_dir() and not p.name.startswith(".tmp")]
    assert len(found) == 1
    return found[0]


def test_corrupt_cache_is_rebuilt(default_lm, tmp_path):
    # start from a copy of the real cache (made when default_lm loaded), then break its weights
    source = ModelConfig().cache_dir / "gguf"
    shutil.copytree(source, tmp_path / "gguf")
    folder = cached_folder(tmp_path)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:  # same size, garbage header: the manifest check passes, loading fails
        fh.write(b"\xff" * 64)
    assert _cache_is_complete(folder)
    lm = load_model(ModelConfig(cache_dir=tmp_path))
    assert not lm.from_cache  # it converted the GGUF again
    folder = cached_folder(tmp_path)
    assert _cache_is_complete(folder) and (folder / "model.safetensors").stat().st_size == size
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, default_lm.model(ids).logits, atol=1e-4)
    # and the rebuilt cache now loads as a cache
    assert load_model(ModelConfig(cache_dir=tmp_path)).from_cache


def test_truncated_cache_is_incomplete(default_lm, tmp_path):
    shutil.copytree(ModelConfig().cache_dir / "gguf", tmp_path / "gguf")
    folder = cached_folder(tmp_path)
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)
    assert not _cache_is_complete(folder)
