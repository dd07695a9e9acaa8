"""Flask app factory and the v1 API blueprint. Thin routes, one error handler."""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path

import torch
from flask import Blueprint, Flask, current_app, g, jsonify, request, send_file
from werkzeug.exceptions import HTTPException

from .errors import BadRequest, Busy, LlmvisError
from .routes_history import history_api
from .routes_insights import insights_api
from .store import tune_allocator
from .validate import parse_bool, parse_head, parse_messages, parse_sampling, query_int, query_str

log = logging.getLogger("llmvis.app")
api = Blueprint("api", __name__, url_prefix="/api")
HERE = Path(__file__).resolve().parent


def engine():
    return current_app.extensions["llmvis.engine"]


def error_response(message: str, status: int):
    resp = jsonify({"error": message, "status": status})
    resp.status_code = status
    return resp


def error_body(exc: LlmvisError) -> dict:
    body = {"error": str(exc), "status": exc.status}
    if getattr(exc, "run_id", None):
        body["run_id"] = exc.run_id
    return body


def json_body() -> dict:
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    return body


def run_from_args():
    run_id = query_str(request.args, "run_id")
    return engine().get_run(run_id)


def parse_generate_body(eng):
    body = json_body()
    messages = parse_messages(body)
    params = parse_sampling(body, eng.config.max_new_tokens)
    return messages, params, parse_bool(body, "use_chat_template", None)


@api.get("/model")
def model():
    eng = engine()
    return jsonify(eng.model_info() | {"limits": eng.limits()})


@api.post("/generate")
def generate():
    eng = engine()
    run = eng.generate(*parse_generate_body(eng))
    return jsonify(eng.run_dict(run))


@api.post("/estimate")
def estimate():
    """Memory a generation with this body would take; nothing is generated."""
    eng = engine()
    return jsonify(eng.estimate(*parse_generate_body(eng)))


def sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@api.post("/generate/stream")
def generate_stream():
    """Server-Sent Events: start, prompt, one token event per step, then done (or error).

    Closing the connection cancels the generation before its next step.
    """
    eng = engine()
    job = eng.prepare(*parse_generate_body(eng))  # bad input still answers a JSON 4xx
    events: queue.Queue = queue.Queue()

    def work():
        try:
            run = eng.execute(job, on_token=lambda tok: events.put(("token", tok)),
                              on_prompt=lambda toks: events.put(("prompt", {"tokens": toks})))
            events.put(("done", eng.run_dict(run)))
        except LlmvisError as exc:
            events.put(("error", error_body(exc)))
        except Exception as exc:  # execute() already logged it
            events.put(("error", {"error": f"internal error: {type(exc).__name__}", "status": 500, "run_id": job.id}))

    threading.Thread(target=work, name=f"llmvis-run-{job.id}", daemon=True).start()

    def stream():
        try:
            yield sse("start", {"run_id": job.id, "model": eng.model_info(), "params": job.params.as_dict(),
                                "num_prompt_tokens": len(job.prompt.ids)})
            while True:
                try:
                    kind, data = events.get(timeout=2.0)
                except queue.Empty:
                    yield ": keep-alive\n\n"  # also how a disconnect is noticed while queued
                    continue
                yield sse(kind, data)
                if kind in ("done", "error"):
                    return
        finally:
            job.cancel.set()  # client went away (or the run is over: then this does nothing)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return current_app.response_class(stream(), mimetype="text/event-stream", headers=headers)


@api.post("/fork")
def fork():
    """Regenerate from `position` of run `run_id` with `token_id` forced there (a new, linked run)."""
    eng = engine()
    body = json_body()
    run_id = body.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise BadRequest("run_id", "is required and must be a string")
    parent = eng.get_run(run_id)
    position = parse_int_field(body, "position")
    token_id = parse_int_field(body, "token_id")
    merged = {k: v for k, v in parent.params.items() if k in ("temperature", "top_k", "top_p", "max_new_tokens")}
    if not merged.get("max_new_tokens"):  # a scored run generated nothing: use the default length
        merged.pop("max_new_tokens", None)
    merged.update({k: body[k] for k in ("temperature", "top_k", "top_p", "max_new_tokens", "seed") if k in body})
    params = parse_sampling(merged, eng.config.max_new_tokens)
    run = eng.execute(eng.prepare_fork(parent, position, token_id, params))
    return jsonify(eng.run_dict(run))


@api.post("/score")
def score():
    """Teacher-forced statistics of any text, with perplexity and GLTR buckets; no generation."""
    eng = engine()
    body = json_body()
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("text", "is required and must be a non-empty string")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise BadRequest("system", "must be a string")
    use_template = parse_bool(body, "use_chat_template", False)
    run = eng.execute(eng.prepare_score(text, use_template, system))
    return jsonify(eng.run_dict(run))


@api.get("/diff")
def diff():
    eng = engine()
    run_a = eng.get_run(query_str(request.args, "run_a"), "run_a")
    run_b = eng.get_run(query_str(request.args, "run_b"), "run_b")
    return jsonify(eng.diff(run_a, run_b))


@api.post("/cancel")
def cancel():
    body = json_body()
    run_id = body.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise BadRequest("run_id", "is required and must be a string")
    return jsonify(engine().cancel(run_id))


@api.get("/openapi.json")
def openapi():
    from .openapi import spec

    return jsonify(spec())


@api.get("/run")
def get_run():
    eng = engine()
    return jsonify(eng.run_dict(run_from_args()))


@api.get("/token_probs")
def token_probs():
    eng = engine()
    run = run_from_args()
    position = query_int(request.args, "position", lo=0, hi=max(0, run.num_tokens - 1))
    top_n = query_int(request.args, "top_n", default=eng.config.default_top_n, lo=1, hi=eng.config.max_top_n)
    return jsonify(eng.token_probs(run, position, top_n))


def parse_int_field(body: dict, name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(name, "is required and must be an integer")
    return value


@api.get("/attention")
def attention():
    """JSON by default; format=f16 returns raw little-endian float16 rows with X-Llmvis-* headers.

    pool=N returns at most N x N cells (block max or mean, pool_mode); q_start/q_end/k_start/k_end
    select a window at full resolution.
    """
    eng = engine()
    run = run_from_args()
    n = run.num_tokens
    layer = query_int(request.args, "layer", lo=0, hi=eng.lm.num_layers - 1)
    head = parse_head(request.args.get("head"), eng.lm.num_heads)
    fmt = query_str(request.args, "format", required=False, default="json", choices=("json", "f16"))
    pool = query_int(request.args, "pool", default=0, lo=0, hi=8192) or None
    if pool is not None and pool < 16:
        raise BadRequest("pool", f"must be >= 16 (or 0 for no pooling), got {pool}")
    pool_mode = query_str(request.args, "pool_mode", required=False, default="max", choices=("max", "mean"))
    window = None
    if any(request.args.get(k) for k in ("q_start", "q_end", "k_start", "k_end")):
        window = (
            query_int(request.args, "q_start", default=0, lo=0, hi=n),
            query_int(request.args, "q_end", default=n, lo=0, hi=n),
            query_int(request.args, "k_start", default=0, lo=0, hi=n),
            query_int(request.args, "k_end", default=n, lo=0, hi=n),
        )
    view = eng.attention_view(run, layer, head, window, pool, pool_mode)
    meta = {"layer": layer, "head": head, "num_tokens": n, "rows": view["rows"], "cols": view["cols"],
            "block": view["block"], "q_start": view["q_start"], "k_start": view["k_start"]}
    if fmt == "f16":
        data = view["matrix"].to(torch.float16).contiguous().numpy().astype("<f2").tobytes()
        resp = current_app.response_class(data, mimetype="application/octet-stream")
        for key, value in meta.items():
            resp.headers["X-Llmvis-" + key.replace("_", "-").title()] = str(value)
        return resp
    return jsonify(meta | {
        "tokens": eng.token_texts(run),
        "matrix": torch.round(view["matrix"].double(), decimals=6).tolist(),  # float64 so the JSON is short
    })


@api.get("/hidden_similarity")
def hidden_similarity():
    return jsonify(engine().hidden_similarity(run_from_args()))


@api.get("/embedding_projection")
def embedding_projection():
    eng = engine()
    run = run_from_args()
    layer = query_int(request.args, "layer", default=eng.lm.num_layers, lo=0, hi=eng.lm.num_layers)
    method = query_str(request.args, "method", required=False, default="pca", choices=("pca",))
    include_first = query_str(request.args, "include_first", required=False, default="0", choices=("0", "1")) == "1"
    return jsonify(eng.projection(run, layer, method, include_first))


def register_errors(app: Flask) -> None:
    @app.errorhandler(LlmvisError)
    def on_llmvis_error(exc: LlmvisError):
        resp = jsonify(error_body(exc))
        resp.status_code = exc.status
        if isinstance(exc, Busy):
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException):
        messages = {
            404: f"no such endpoint: {request.path[:200]}",
            405: f"method {request.method} is not allowed on {request.path[:200]}",
            413: f"body: request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes",
        }
        return error_response(messages.get(exc.code, exc.description or exc.name), exc.code or 500)

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(f"internal error: {type(exc).__name__}", 500)


def echarts_path() -> Path | None:
    """ECharts from the npm package installed beside the project (never a CDN)."""
    for root in (HERE.parent, Path.cwd()):
        p = root / "node_modules" / "echarts" / "dist" / "echarts.min.js"
        if p.is_file():
            return p
    return None


def create_app(engine_obj, config=None) -> Flask:
    """Build the Flask app around an Engine (one loaded model shared by all requests)."""
    tune_allocator()  # requests run in server threads (see store.tune_allocator); not for llmvis.trace
    app = Flask(__name__, static_folder=str(HERE / "web" / "static"), template_folder=str(HERE / "web" / "templates"))
    cfg = config or engine_obj.config
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.json.sort_keys = False
    app.extensions["llmvis.engine"] = engine_obj
    app.register_blueprint(api)
    app.register_blueprint(insights_api)  # logit lens, attention insights, segments
    app.register_blueprint(history_api)  # history, export/share, import (routes_history.py)
    register_errors(app)

    @app.get("/")
    def index():
        return send_file(HERE / "web" / "templates" / "index.html", mimetype="text/html")

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
            "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'",
        )
        return resp

    return app
