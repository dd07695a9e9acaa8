"""The converted-model cache: a corrupt cache is detected and rebuilt, not crashed on; the key
follows the GGUF file's content, and stale entries do not pile up."""
import os
import shutil

import pytest
import torch

from llmvis.core.config import ModelConfig
from llmvis.model.loading import _cache_is_complete, cache_folder, default_gguf, load_model

pytestmark = pytest.mark.model


def copy_real_cache(tmp_path):
    """Copy the cache entry made when default_lm loaded (only the current one) into tmp_path."""
    source = cache_folder(ModelConfig().cache_dir, default_gguf())
    assert _cache_is_complete(source)
    target = cache_folder(tmp_path, default_gguf())
    shutil.copytree(source, target)
    return target


def test_corrupt_cache_is_rebuilt(default_lm, tmp_path):
    folder = copy_real_cache(tmp_path)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:  # same size, garbage header: the manifest check passes, loading fails
        fh.write(b"\xff" * 64)
    assert _cache_is_complete(folder)
    lm = load_model(ModelConfig(cache_dir=tmp_path))
    assert not lm.from_cache  # it converted the GGUF again
    assert _cache_is_complete(folder) and (folder / "model.safetensors").stat().st_size == size
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, default_lm.model(ids).logits, atol=1e-4)
    # and the rebuilt cache now loads as a cache
    assert load_model(ModelConfig(cache_dir=tmp_path)).from_cache


def test_truncated_cache_is_incomplete(default_lm, tmp_path):
    folder = copy_real_cache(tmp_path)
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)
    assert not _cache_is_complete(folder)


def test_cache_key_follows_content_not_path_or_mtime(tmp_path):
    gguf = default_gguf()
    moved = tmp_path / "elsewhere" / gguf.name
    moved.parent.mkdir()
    shutil.copyfile(gguf, moved)
    os.utime(moved, (1_000_000, 1_000_000))
    # a fresh virtualenv reinstalls the same file at another path with another mtime: same entry
    assert cache_folder(tmp_path, moved) == cache_folder(tmp_path, gguf)
    with open(moved, "r+b") as fh:  # a different file (one byte of the header) gets another entry
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert cache_folder(tmp_path, moved) != cache_folder(tmp_path, gguf)


def test_writing_a_new_entry_removes_stale_ones(default_lm, tmp_path):
    gguf_dir = tmp_path / "gguf"
    stale = gguf_dir / f"{default_gguf().stem}-0123456789abcdef"
    other_model = gguf_dir / "Other-Model.Q8_0-0123456789abcdef"
    for folder in (stale, other_model):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    lm = load_model(ModelConfig(cache_dir=tmp_path))
    assert not lm.from_cache
    current = cache_folder(tmp_path, default_gguf())
    assert _cache_is_complete(current)
    assert not stale.exists()  # same file name, older key: nothing would ever load it again
    assert other_model.exists()  # another model's cache is left alone
