"""Server configuration: one dataclass, one comment per field."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_cache_dir() -> Path:
    """Where converted model weights are cached; LLMVIS_CACHE_DIR overrides it."""
    env = os.environ.get("LLMVIS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llmvis"


@dataclass
class ModelConfig:
    model: str = "default"          # "default" (embedded SmolLM2), a HF model folder, or a .gguf file
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    dtype: str = "auto"             # auto | float32 | bfloat16 | float16
    device_map: str | None = None   # "auto" spreads a big model over several GPUs via accelerate
    cache_dir: Path = field(default_factory=default_cache_dir)  # converted-weights cache


@dataclass
class ServerConfig:
    max_new_tokens: int = 1024          # upper bound a request may ask for
    max_context: int = 8192             # prompt + generated tokens; also capped by the model's own context
    max_body_bytes: int = 1 << 20       # request bodies above this answer 413
    store_budget_bytes: int = 2 << 30   # run store bound; least recently used runs are evicted first
    attention_cache_bytes: int = 512 << 20  # per run: cached attention layers beyond this are dropped, oldest first
    max_queue: int = 4                  # generations waiting or running; more answer 503 + Retry-After
    max_heavy_reads: int = 4            # views computing at once (attention, lens, head stats, rows, diff); more answer 503
    max_json_cells: int = 1 << 21       # attention matrices above this many cells are refused as JSON (use f16 or pool)
    default_top_n: int = 10             # /api/token_probs default
    max_top_n: int = 100                # alternatives recorded per step and the most top_n may be
    data_dir: Path | None = None        # run history folder (SQLite + one bundle per run); None = no history
    history_budget_bytes: int = 1 << 30  # history folder bound; oldest runs are evicted first
    max_import_bytes: int = 256 << 20   # POST /api/import body cap (bundles hold hidden states)
    bind_host: str = "127.0.0.1"        # the address served on; its name is an allowed Host
    allowed_hosts: tuple[str, ...] = ()  # more Host names to serve (--allow-host); "*" allows any
    token: str | None = None            # when set, every request must carry it (cookie, Bearer or ?token=)
