"""`llmvis serve`: load a model once and serve the page and the v1 API with waitress."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from waitress import serve

from llmvis.cli.flags import add_bind_flags, add_history_flags, add_model_flags, history_settings, positive_int, stage_bar
from llmvis.core.config import ModelConfig, ServerConfig, default_cache_dir
from llmvis.core.errors import LlmvisError
from llmvis.engine.engine import Engine
from llmvis.engine.store import tune_allocator
from llmvis.model.loading import load_model
from llmvis.web.app import create_app

log = logging.getLogger("llmvis")


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of `serve` (`show` starts a server from the same defaults)."""
    add_model_flags(p)
    add_bind_flags(p)
    p.add_argument("--device-map", default=None, choices=["auto"],
                   help="'auto' spreads a model too big for one GPU over several GPUs (accelerate)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"where converted GGUF weights are cached (default: $LLMVIS_CACHE_DIR or {default_cache_dir()})")
    p.add_argument("--store-budget-mb", type=positive_int, default=ServerConfig.store_budget_bytes >> 20,
                   help="memory budget of the run store in MiB; least recently used runs are evicted "
                   "(default: %(default)s)")
    p.add_argument("--max-new-tokens", type=positive_int, default=ServerConfig.max_new_tokens,
                   help="the most new tokens one request may ask for (default: %(default)s)")
    p.add_argument("--max-body-kb", type=positive_int, default=ServerConfig.max_body_bytes >> 10,
                   help="largest request body accepted, in KiB (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=8,
                   help="WSGI worker threads; model work is serialised anyway (default: %(default)s)")
    add_history_flags(p)  # --data-dir, --no-history, --history-budget-mb, --max-import-mb


def add_command(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="load a model and serve the web app and the v1 HTTP API",
        description="Load a model once and serve the web page and the v1 HTTP API with a "
        "production WSGI server (waitress). Generation is serialised; all requests share the model.",
    )
    add_serve_flags(p)


def serve_defaults() -> argparse.Namespace:
    """The flags of `serve` at their defaults."""
    p = argparse.ArgumentParser(add_help=False)
    add_serve_flags(p)
    return p.parse_args([])


def cmd_serve(args, on_engine=None) -> int:
    """Load the model, build the app and serve it until interrupted.

    on_engine(engine) -> URL path, if given, runs before serving (`llmvis show` imports its run).
    """
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
    tune_allocator()  # before any worker thread exists
    with stage_bar("Loading model", enabled=getattr(args, "progress", False)):
        lm = load_model(mcfg)
    log.info("loaded %s in %.1f s (%s)", lm.name, lm.load_s, "cache" if lm.from_cache else "converted")
    engine = Engine(lm, scfg)
    app = create_app(engine)
    url_path = on_engine(engine) if on_engine is not None else ""
    print(f"llmvis: serving {lm.name} at http://{args.host}:{args.port}{url_path}", flush=True)
    serve(app, host=args.host, port=args.port, threads=args.threads, ident="llmvis",
          max_request_body_size=max(scfg.max_body_bytes, scfg.max_import_bytes + (64 << 10)) + 1024)
    return 0
