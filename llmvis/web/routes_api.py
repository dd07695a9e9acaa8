"""The v1 API blueprint: model info, generation (plain and streamed), forks, scoring, diff,
cancel, and the core views. Thin routes: parse and validate, call the Engine, shape the answer
with llmvis.web.serialize."""
from __future__ import annotations

import json
import queue
import threading

import torch
from flask import Blueprint, current_app, jsonify, request

from llmvis.core.attention import pool_block
from llmvis.core.errors import BadRequest, LlmvisError, PayloadTooLarge
from llmvis.web import serialize
from llmvis.web.context import engine, json_body, query_run
from llmvis.web.errors import error_body
from llmvis.web.openapi import spec
from llmvis.web.validate import (
    parse_bool, parse_head, parse_int_field, parse_messages, parse_run_id, parse_sampling, parse_text_body, query_int,
    query_str,
)

api = Blueprint("api", __name__, url_prefix="/api")
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "max_new_tokens")


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
    return jsonify(serialize.run_dict(eng, run))


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
    return stream_job(eng, eng.prepare(*parse_generate_body(eng)))  # bad input still answers a JSON 4xx


@api.post("/fork/stream")
def fork_stream():
    """A fork (as POST /api/fork) streamed as Server-Sent Events, like /api/generate/stream."""
    eng = engine()
    return stream_job(eng, prepare_fork_from_body(eng, json_body()))


def stream_job(eng, job):
    """Run an admitted job in a worker thread and stream its events; a disconnect cancels it."""
    events: queue.Queue = queue.Queue()

    def work():
        try:
            run = eng.execute(
                job,
                on_token=lambda pos, tid, stats: events.put(("token", serialize.step_token(eng, pos, tid, stats))),
                on_prompt=lambda rows: events.put(("prompt", {"tokens": serialize.prompt_tokens(eng, job.prompt, rows)})),
            )
            events.put(("done", serialize.run_dict(eng, run)))
        except LlmvisError as exc:
            events.put(("error", error_body(exc)))
        except Exception as exc:  # execute() already logged it
            events.put(("error", {"error": f"internal error: {type(exc).__name__}", "status": 500, "run_id": job.id}))

    threading.Thread(target=work, name=f"llmvis-run-{job.id}", daemon=True).start()

    def stream():
        try:
            yield sse("start", serialize.stream_start(eng, job))
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
    run = eng.execute(prepare_fork_from_body(eng, json_body()))
    return jsonify(serialize.run_dict(eng, run))


def prepare_fork_from_body(eng, body: dict):
    """The fork job a body asks for: the parent's sampling settings, overridden by the body's."""
    parent = eng.get_run(parse_run_id(body))
    position = parse_int_field(body, "position")
    token_id = parse_int_field(body, "token_id")
    merged = {k: v for k, v in parent.params.items() if k in SAMPLING_FIELDS}
    if not merged.get("max_new_tokens"):  # a scored run generated nothing: use the default length
        merged.pop("max_new_tokens", None)
    merged.update({k: body[k] for k in (*SAMPLING_FIELDS, "seed") if k in body})
    params = parse_sampling(merged, eng.config.max_new_tokens)
    return eng.prepare_fork(parent, position, token_id, params)


@api.post("/score")
def score():
    """Teacher-forced statistics of any text, with perplexity and GLTR buckets; no generation."""
    eng = engine()
    body = json_body()
    text, system = parse_text_body(body)
    use_template = parse_bool(body, "use_chat_template", False)
    run = eng.execute(eng.prepare_score(text, use_template, system))
    return jsonify(serialize.run_dict(eng, run))


@api.get("/diff")
def diff():
    eng = engine()
    run_a = eng.get_run(query_str(request.args, "run_a"), "run_a")
    run_b = eng.get_run(query_str(request.args, "run_b"), "run_b")
    align = query_str(request.args, "align", required=False, default="position", choices=("position", "edit", "auto"))
    return jsonify(serialize.diff(eng, run_a, run_b, eng.diff(run_a, run_b, align)))


@api.post("/cancel")
def cancel():
    return jsonify(engine().cancel(parse_run_id(json_body())))


@api.get("/openapi.json")
def openapi():
    return jsonify(spec())


@api.get("/run")
def get_run():
    return jsonify(serialize.run_dict(engine(), query_run()))


@api.get("/token_probs")
def token_probs():
    eng = engine()
    run = query_run()
    position = query_int(request.args, "position", lo=0, hi=max(0, run.num_tokens - 1))
    top_n = query_int(request.args, "top_n", default=eng.config.default_top_n, lo=1, hi=eng.config.max_top_n)
    return jsonify(serialize.token_probs(eng, run, position, top_n))


@api.get("/attention")
def attention():
    """JSON by default; format=f16 returns raw little-endian float16 rows with X-Llmvis-* headers.

    pool=N returns at most N x N cells (block max or mean, pool_mode); q_start/q_end/k_start/k_end
    select a window at full resolution.
    """
    eng = engine()
    run = query_run()
    n = run.num_tokens
    layer = query_int(request.args, "layer", lo=0, hi=eng.lm.num_layers - 1)
    head = parse_head(request.args.get("head"), eng.lm.num_heads, allow_all=True)
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
    if fmt == "json":  # refused before any work: a JSON matrix costs ~13 bytes and a Python float per cell
        q0, q1, k0, k1 = window or (0, n, 0, n)
        _, rows, cols = pool_block(max(0, q1 - q0), max(0, k1 - k0), pool)
        cells = rows * cols * (eng.lm.num_heads if head == "all" else 1)
        if cells > eng.config.max_json_cells:
            raise PayloadTooLarge(f"format: a {cells:,}-cell matrix is too large as JSON (limit "
                                  f"{eng.config.max_json_cells:,}); ask for format=f16, pool=N or a window")
    view = eng.attention_view(run, layer, head, window, pool, pool_mode)
    meta = {"layer": layer, "head": head, "num_tokens": n, "rows": view["rows"], "cols": view["cols"],
            "block": view["block"], "q_start": view["q_start"], "k_start": view["k_start"]}
    if head == "all":  # matrix is (heads, rows, cols): f16 rows of head 0, then head 1, ...
        meta["heads"] = view["heads"]
    if fmt == "f16":
        data = view["matrix"].to(torch.float16).contiguous().numpy().astype("<f2").tobytes()
        resp = current_app.response_class(data, mimetype="application/octet-stream")
        for key, value in meta.items():
            resp.headers["X-Llmvis-" + key.replace("_", "-").title()] = str(value)
        return resp
    return jsonify(serialize.attention(eng, run, meta, view["matrix"]))


@api.get("/hidden_similarity")
def hidden_similarity():
    eng = engine()
    run = query_run()
    return jsonify(serialize.similarity(eng, run, eng.similarity(run)))


@api.get("/embedding_projection")
def embedding_projection():
    eng = engine()
    run = query_run()
    layer = query_int(request.args, "layer", default=eng.lm.num_layers, lo=0, hi=eng.lm.num_layers)
    method = query_str(request.args, "method", required=False, default="pca", choices=("pca",))
    include_first = query_str(request.args, "include_first", required=False, default="0", choices=("0", "1")) == "1"
    coords, variance, fit_start = eng.projection(run, layer, include_first)
    return jsonify(serialize.projection(eng, run, layer, method, coords, variance, fit_start))
