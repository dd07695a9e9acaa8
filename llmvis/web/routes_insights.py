"""Routes for the views inside the layers: logit lens, attention insights, one row, segments.

Thin routes: the Engine computes each view once per run under its model lock and caches it on
the run; llmvis.web.serialize shapes the answer.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from llmvis.core.errors import BadRequest
from llmvis.core.lens import LENS_TOP_K
from llmvis.keep.bundle import check_run_id
from llmvis.web import serialize
from llmvis.web.context import engine, query_run
from llmvis.web.validate import parse_head, query_int, query_str

insights_api = Blueprint("insights_api", __name__, url_prefix="/api")


@insights_api.get("/logit_lens")
def logit_lens_view():
    """Each layer's prediction at each position: final norm + LM head on that layer's state.

    `start`/`end` (default: every position) limit the columns: only those are computed (once
    per run) and returned; per-position arrays then cover [start, end), `tokens` and `next_ids`
    stay whole.
    """
    eng = engine()
    run = query_run()
    top_k = query_int(request.args, "top_k", default=5, lo=1, hi=LENS_TOP_K)
    t = run.num_tokens
    start = query_int(request.args, "start", default=0, lo=0, hi=t - 1)
    end = query_int(request.args, "end", default=t, lo=1, hi=t)
    if end <= start:
        raise BadRequest("end", f"must be greater than start ({start}), got {end}")
    job_id = request.args.get("job_id")
    if job_id is not None:
        check_run_id(job_id, "job_id")
    lens, took = eng.logit_lens(run, start, end, job_id)  # only positions [start, end) are computed, each once per run
    return jsonify(serialize.logit_lens(eng, run, lens, start, end, top_k, took))


@insights_api.get("/jobs/<job_id>")
def read_job(job_id: str):
    """How far a named view job (GET /api/logit_lens?job_id=...) has got; POST /api/cancel stops it."""
    return jsonify(engine().read_job(check_run_id(job_id, "job_id")))


@insights_api.get("/attention_insights")
def attention_insights():
    """Per layer and query head: attention entropy, sink share, previous-token share; KV groups."""
    eng = engine()
    run = query_run()
    stats, took = eng.head_stats(run)
    return jsonify(serialize.head_insights(eng, run, stats, took))


@insights_api.get("/attention_row")
def attention_row():
    """Which earlier tokens one query position attends to, in every layer (mean, max or one head)."""
    eng = engine()
    run = query_run()
    position = query_int(request.args, "position", lo=0, hi=run.num_tokens - 1)
    head = parse_head(request.args.get("head"), int(eng.lm.num_heads))
    row, took = eng.attention_row(run, position)
    return jsonify(serialize.attention_row(eng, run, row, head, took))


@insights_api.get("/segments")
def segments():
    """Chat segments (think blocks included) and how attention and entropy split over them.

    attention=0 answers the segments alone, without computing every layer's attention.
    """
    eng = engine()
    run = query_run()
    with_attention = query_str(request.args, "attention", required=False, default="1", choices=("0", "1")) == "1"
    segs = eng.segments(run)
    if not with_attention:  # labels only: no attention is computed
        return jsonify(serialize.segments(eng, run, segs))
    stats, took = eng.head_stats(run)
    return jsonify(serialize.segments(eng, run, segs, stats, took))
