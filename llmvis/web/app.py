"""The Flask app factory: one Engine shared by every request, the blueprints, one error
handler, the page and its assets, and the security headers."""
from __future__ import annotations

import json
import re
import time

from flask import Flask, g, send_file

from llmvis.engine.store import tune_allocator
from llmvis.keep.library import attach_history
from llmvis.web.assets import STATIC_DIR, TEMPLATES_DIR, echarts_path
from llmvis.web.context import ENGINE_KEY
from llmvis.web.errors import error_response, register_errors
from llmvis.web.guard import install_guard
from llmvis.web.routes_api import api
from llmvis.web.routes_explain import explain_api
from llmvis.web.routes_history import history_api
from llmvis.web.routes_insights import insights_api
from llmvis.web.routes_intervene import intervene_api


def create_app(engine_obj, config=None) -> Flask:
    """Build the Flask app around an Engine (one loaded model shared by all requests).

    When the engine's config names a data folder and no history is attached yet, the run
    history is opened there (llmvis.keep.library.attach_history).
    """
    tune_allocator()  # requests run in server threads (see engine.store.tune_allocator); not for llmvis.trace
    cfg = config or engine_obj.config
    if engine_obj.config.data_dir is not None and engine_obj.history is None:
        attach_history(engine_obj)
    app = Flask(__name__, static_folder=str(STATIC_DIR), template_folder=str(TEMPLATES_DIR))
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.json.sort_keys = False
    app.extensions[ENGINE_KEY] = engine_obj
    install_guard(app, cfg.bind_host, tuple(cfg.allowed_hosts), cfg.token)  # Host, Origin, token: before any route
    app.register_blueprint(api)           # generation, forks, scoring, diff, core views (routes_api.py)
    app.register_blueprint(insights_api)  # logit lens, attention insights, segments (routes_insights.py)
    app.register_blueprint(history_api)   # history, export/share, import (routes_history.py)
    app.register_blueprint(explain_api)   # logit attribution, input attribution, information flow (routes_explain.py)
    app.register_blueprint(intervene_api)  # tokenize, ablate, steer, effects, patching sweeps (routes_intervene.py)
    register_errors(app)

    @app.get("/")
    def index():
        return send_file(TEMPLATES_DIR / "index.html", mimetype="text/html")

    @app.get("/vendor/echarts.min.js")
    def echarts():
        path = echarts_path()
        if path is None:
            return error_response("echarts is not installed: run `npm ci` in the project folder", 404)
        return send_file(path, mimetype="text/javascript", max_age=3600)

    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def security_headers(resp):
        if "started" in g:  # time spent in the app, visible in the browser's resource timing
            resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.started) * 1000:.1f}"
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'; form-action 'self'",
        )
        resp.headers.setdefault("X-Frame-Options", "DENY")  # no framing (clickjacking), also for old browsers
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return resp

    return app


_BASE_URL = re.compile(r"^(/[A-Za-z0-9._~-]+)+/?$")


def parse_base_url(text: str) -> str:
    """--base-url: "/llmvis/" -> "/llmvis" (no trailing slash); "" or "/" -> "" (the root).
    Path segments of letters, digits and . _ ~ - only; "." and ".." segments are refused."""
    text = (text or "").strip()
    if text in ("", "/"):
        return ""
    if not _BASE_URL.match(text) or any(seg in (".", "..") for seg in text.strip("/").split("/")):
        raise ValueError(f"must be a path such as /llmvis/ (segments of letters, digits, . _ ~ -), got {text[:80]!r}")
    return text.rstrip("/")


class BaseUrl:
    """The app served under a path prefix (`llmvis serve --base-url /llmvis/`), for a reverse proxy
    (JupyterHub's server proxy, nginx) that passes the full path on. `/llmvis/...` reaches the app
    with SCRIPT_NAME=/llmvis; `/llmvis` redirects to `/llmvis/`; every other path is a JSON 404.
    The page's own URLs are all relative, so it works under any prefix (and behind a proxy that
    strips the prefix, with no --base-url at all)."""

    def __init__(self, app, prefix: str):
        self.app = app
        self.prefix = prefix

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path.startswith(self.prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
            environ["PATH_INFO"] = path[len(self.prefix):]
            return self.app(environ, start_response)
        if path == self.prefix:
            query = environ.get("QUERY_STRING", "")
            query = query if all(32 < ord(c) < 127 for c in query) else ""  # nothing odd into a header
            start_response("308 Permanent Redirect", [("Location", self.prefix + "/" + ("?" + query if query else "")),
                                                      ("Content-Length", "0")])
            return [b""]
        body = json.dumps({"error": f"no such endpoint: {path[:200]} (this server serves under {self.prefix}/)",
                           "status": 404}).encode()
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                         ("X-Content-Type-Options", "nosniff")])
        return [body]


def mount(app, base_url: str):
    """The WSGI callable to serve: `app` itself at the root, else under `base_url` (parse_base_url's form)."""
    return BaseUrl(app, base_url) if base_url else app
