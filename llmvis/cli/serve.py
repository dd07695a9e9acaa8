"""`llmvis serve`: load a model once and serve the page and the v1 API with waitress."""
from __future__ import annotations

import argparse
import json
import logging
import secrets
import socket
from pathlib import Path

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from llmvis.cli.flags import add_bind_flags, add_history_flags, add_model_flags, history_settings, positive_int, stage_bar
from llmvis.core.config import ModelConfig, ServerConfig, default_cache_dir
from llmvis.core.errors import LlmvisError
from llmvis.engine.engine import Engine
from llmvis.engine.store import tune_allocator
from llmvis.keep.history import History
from llmvis.model.loading import load_model
from llmvis.web.app import create_app, mount
from llmvis.web.guard import host_name, is_loopback

log = logging.getLogger("llmvis")
CHANNEL_TIMEOUT_S = 60    # a connection idle (or dribbling a request) this long is closed
CONNECTION_LIMIT = 256    # open connections at once; slow clients cannot take them all


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
    if not 0 < args.port < 65536:
        raise LlmvisError(f"--port must be in 1..65535, got {args.port}")
    token = args.token
    if token is not None and len(token) < 8:
        raise LlmvisError("--token must be at least 8 characters")
    if token is None and not is_loopback(host_name(args.host)):
        token = secrets.token_urlsafe(24)  # exposed to the network: never without a token
    scfg = ServerConfig(
        max_new_tokens=args.max_new_tokens,
        store_budget_bytes=args.store_budget_mb << 20,
        max_body_bytes=args.max_body_kb << 10,
        bind_host=args.host,
        allowed_hosts=tuple(args.allow_host),
        token=token,
        **history_settings(args),
    )
    check_port_free(args.host, args.port)  # said first, before the slow model load
    if scfg.data_dir is not None:
        History(scfg.data_dir, scfg.history_budget_bytes)  # a read-only or blocked folder fails here, in one line
    if not is_loopback(host_name(args.host)):
        log.warning("binding to %s: the app is reachable from the network; every request needs the token", args.host)
    tune_allocator()  # before any worker thread exists
    with stage_bar("Loading model", enabled=getattr(args, "progress", False)):
        lm = load_model(mcfg)
    log.info("loaded %s in %.1f s (%s)", lm.name, lm.load_s, "cache" if lm.from_cache else "converted")
    engine = Engine(lm, scfg)
    app = create_app(engine)
    url_path = args.base_url + (on_engine(engine) if on_engine is not None else "/")
    if token is not None:
        url_path += ("&" if "?" in url_path else "?") + "token=" + token
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"llmvis: serving {lm.name} at http://{host}:{args.port}{url_path}", flush=True)
    server = create_server(mount(app, args.base_url), host=args.host, port=args.port, threads=args.threads, ident="llmvis",
                           channel_timeout=CHANNEL_TIMEOUT_S, connection_limit=CONNECTION_LIMIT,
                           max_request_body_size=max(scfg.max_body_bytes, scfg.max_import_bytes) + (1 << 20))
    server.channel_class = JsonErrorChannel  # waitress's own refusals (an over-cap body) in the error shape
    server.run()
    return 0


def check_port_free(host: str, port: int) -> None:
    """One `Error:` line, before the model loads, when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LlmvisError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class JsonErrorTask(ErrorTask):
    """waitress's error answers (413 over its body cap, 400 malformed requests) as JSON."""

    def execute(self):
        err = self.request.error
        body = json.dumps({"error": f"request: {err.reason}: {err.body}"[:500], "status": err.code}).encode()
        self.status = f"{err.code} {err.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask
