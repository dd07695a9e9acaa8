"""The `llmvis` command line. Errors print `Error: ...` and exit 1, never a traceback."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .cli_keep import COMMANDS, _positive_int, add_commands, add_history_flags, history_settings, stage_bar
from .config import ModelConfig, ServerConfig, default_cache_dir
from .errors import LlmvisError

log = logging.getLogger("llmvis")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmvis",
        description="llmvis: see inside a causal language model while it generates "
        "(attention, token probabilities, entropy, hidden states) in a local web app.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="load a model and serve the web app and the v1 HTTP API",
        description="Load a model once and serve the web page and the v1 HTTP API with a "
        "production WSGI server (waitress). Generation is serialised; all requests share the model.",
    )
    serve.add_argument("--model", default="default",
                       help="'default' (embedded SmolLM2-135M-Instruct), a local Hugging Face model "
                       "folder (Qwen3, Qwen2, Llama, Mistral, Gemma) or a .gguf file. Nothing is downloaded. "
                       "(default: %(default)s)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind; anything but 127.0.0.1 exposes the app to the network "
                       "(default: %(default)s)")
    serve.add_argument("--port", type=int, default=5000, help="TCP port (default: %(default)s)")
    serve.add_argument("--device", default="auto",
                       help="auto (cuda when present, else cpu), cpu, cuda or cuda:N (default: %(default)s)")
    serve.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights dtype; auto = bfloat16 on GPU, float32 on CPU (default: %(default)s)")
    serve.add_argument("--device-map", default=None, choices=["auto"],
                       help="'auto' spreads a model too big for one GPU over several GPUs (accelerate)")
    serve.add_argument("--cache-dir", type=Path, default=None,
                       help=f"where converted GGUF weights are cached (default: $LLMVIS_CACHE_DIR or {default_cache_dir()})")
    serve.add_argument("--store-budget-mb", type=_positive_int, default=ServerConfig.store_budget_bytes >> 20,
                       help="memory budget of the run store in MiB; least recently used runs are evicted "
                       "(default: %(default)s)")
    serve.add_argument("--max-new-tokens", type=_positive_int, default=ServerConfig.max_new_tokens,
                       help="the most new tokens one request may ask for (default: %(default)s)")
    serve.add_argument("--max-body-kb", type=_positive_int, default=ServerConfig.max_body_bytes >> 10,
                       help="largest request body accepted, in KiB (default: %(default)s)")
    serve.add_argument("--threads", type=_positive_int, default=8,
                       help="WSGI worker threads; model work is serialised anyway (default: %(default)s)")
    add_history_flags(serve)  # --data-dir, --no-history, --history-budget-mb, --max-import-mb
    add_commands(sub)         # analyze, show (cli_keep.py)
    return parser


def cmd_serve(args, on_engine=None) -> int:
    """Load the model, build the app and serve it until interrupted.

    on_engine(engine) -> URL path, if given, runs before serving (`llmvis show` imports its run).
    """
    from .app import create_app
    from .models import load_model
    from .service import Engine

    mcfg = ModelConfig(model=args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)
    if args.cache_dir is not None:
        mcfg.cache_dir = args.cache_dir
    scfg = ServerConfig(
        max_new_tokens=args.max_new_tokens,
        store_budget_bytes=args.store_budget_mb << 20,
        max_body_bytes=args.max_body_kb << 10,
        **history_settings(args),
    )
    if not 0 < args.port < 65536:
        raise LlmvisError(f"--port must be in 1..65535, got {args.port}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):  # said first, before the slow model load
        log.warning("binding to %s: the app is reachable from the network and has no authentication", args.host)
    from .store import tune_allocator

    tune_allocator()  # before any worker thread exists
    with stage_bar("Loading model", enabled=getattr(args, "progress", False)):
        lm = load_model(mcfg)
    log.info("loaded %s in %.1f s (%s)", lm.name, lm.load_s, "cache" if lm.from_cache else "converted")
    engine = Engine(lm, scfg)
    app = create_app(engine)
    url_path = on_engine(engine) if on_engine is not None else ""
    from waitress import serve

    print(f"llmvis: serving {lm.name} at http://{args.host}:{args.port}{url_path}", flush=True)
    serve(app, host=args.host, port=args.port, threads=args.threads, ident="llmvis",
          max_request_body_size=max(scfg.max_body_bytes, scfg.max_import_bytes + (64 << 10)) + 1024)
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command in COMMANDS:
            return COMMANDS[args.command](args)
    except LlmvisError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
