"""Flags that several commands share, declared once: the model (--model, --device, --dtype),
the run history (--data-dir, --no-history, --history-budget-mb, --max-import-mb), and the
progress bar for work that reports no progress of its own."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from llmvis.core.config import ServerConfig
from llmvis.keep.history import default_data_dir
from llmvis.web.app import parse_base_url

DTYPES = ["auto", "float32", "bfloat16", "float16"]
MODEL_HELP = ("'default' (embedded SmolLM2-135M-Instruct), a local Hugging Face model folder (Qwen3, Qwen2, "
              "Llama, Mistral, Gemma) or a .gguf file. Nothing is downloaded.")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value}")
    return value


def base_url(text: str) -> str:
    try:
        return parse_base_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_flags(p: argparse.ArgumentParser, model_default: str | None = "default",
                    model_help: str = MODEL_HELP + " (default: %(default)s)") -> None:
    """--model, --device and --dtype."""
    p.add_argument("--model", default=model_default, help=model_help)
    p.add_argument("--device", default="auto",
                   help="auto (cuda when present, else cpu), cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="weights dtype; auto = bfloat16 on GPU, float32 on CPU (default: %(default)s)")


def add_bind_flags(p: argparse.ArgumentParser) -> None:
    """--host and --port."""
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but 127.0.0.1 exposes the app to the network "
                   "(default: %(default)s)")
    p.add_argument("--port", type=int, default=5000, help="TCP port (default: %(default)s)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also serve requests whose Host is NAME (repeatable; '*' for any). The loopback names "
                   "and --host are always served; other Hosts get 403, which stops DNS rebinding")
    p.add_argument("--token", default=None,
                   help="require this token on every request (the page's cookie from ?token=, or "
                   "Authorization: Bearer). Default: none on 127.0.0.1; a random one, printed in the URL, "
                   "when --host is any other address")
    p.add_argument("--base-url", type=base_url, default="", metavar="PATH",
                   help="serve the app under this path prefix, e.g. /llmvis/ behind JupyterHub's server proxy "
                   "or nginx when they pass the full path on; requests outside it get 404. The page's URLs are "
                   "relative, so a proxy that strips the prefix needs no flag (default: the root)")


def add_history_flags(p: argparse.ArgumentParser) -> None:
    """--data-dir, --no-history, --history-budget-mb, --max-import-mb (serve and show)."""
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder of the run history (SQLite index + one .llmvis file per run); several servers "
                   f"may share it (default: $LLMVIS_DATA_DIR or {default_data_dir()})")
    p.add_argument("--no-history", action="store_true",
                   help="keep runs in memory only; nothing is written to disk and the history list is empty")
    p.add_argument("--history-budget-mb", type=positive_int, default=ServerConfig.history_budget_bytes >> 20,
                   help="disk budget of the history folder in MiB; the oldest runs are evicted first "
                   "(default: %(default)s)")
    p.add_argument("--max-import-mb", type=positive_int, default=ServerConfig.max_import_bytes >> 20,
                   help="largest .llmvis bundle POST /api/import accepts, in MiB; other requests keep "
                   "--max-body-kb (default: %(default)s)")


def history_settings(args) -> dict:
    """ServerConfig fields from the history flags (none when the command has no such flags)."""
    if not hasattr(args, "no_history"):
        return {}
    data_dir = None if args.no_history else (args.data_dir or default_data_dir())
    return {"data_dir": data_dir, "history_budget_bytes": args.history_budget_mb << 20,
            "max_import_bytes": args.max_import_mb << 20}


@contextlib.contextmanager
def stage_bar(desc: str, enabled: bool = True):
    """A one-step progress bar on stderr for work that reports no progress of its own."""
    if not enabled:
        yield
        return
    from tqdm import tqdm  # optional: only the CLI's progress bars need it

    with tqdm(total=1, desc=desc, file=sys.stderr, bar_format="{desc}: {bar} {elapsed}", leave=True) as bar:
        yield
        bar.update(1)
