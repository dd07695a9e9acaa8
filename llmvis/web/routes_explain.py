"""Routes that explain one prediction: direct logit attribution, input attribution and the
information-flow graph (definitions in docs/EXPLAIN.md).

Thin routes: the Engine validates against the run and the model, computes each answer once per
run (cached on it) under the model lock; llmvis.web.serialize shapes it.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from llmvis.engine.engine import MAX_IG_STEPS
from llmvis.keep.bundle import check_run_id
from llmvis.web import serialize
from llmvis.web.context import engine, query_run
from llmvis.web.validate import query_float, query_int, query_str

explain_api = Blueprint("explain_api", __name__, url_prefix="/api/explain")
INPUT_METHODS = ("grad_x_input", "integrated_gradients", "value_norm", "direct")


def _target_args(run):
    position = query_int(request.args, "position", lo=1, hi=max(1, run.num_tokens - 1))
    vocab = int(engine().lm.config.vocab_size)
    target = contrast = None
    if request.args.get("target", "") != "":
        target = query_int(request.args, "target", lo=0, hi=vocab - 1)
    if request.args.get("contrast", "") != "":
        contrast = query_int(request.args, "contrast", lo=0, hi=vocab - 1)
    return position, target, contrast


@explain_api.get("/logit")
def explain_logit():
    """The target's logit (minus the contrast's) split into the embedding, each query head, each
    output bias and each MLP, read through the final norm at a fixed scale."""
    eng = engine()
    run = query_run()
    position, target, contrast = _target_args(run)
    attr, took = eng.explain_logit(run, position, target, contrast)
    return jsonify(serialize.explain_logit(eng, run, position, attr, took))


@explain_api.get("/inputs")
def explain_inputs():
    """Scores of the earlier tokens for one prediction: gradient × input, integrated gradients
    (with job_id: progress at /api/jobs/<job_id>, stop with /api/cancel), value-norm attention or
    the direct logit part of each source."""
    eng = engine()
    run = query_run()
    position, target, contrast = _target_args(run)
    method = query_str(request.args, "method", default="grad_x_input", choices=INPUT_METHODS)
    steps = query_int(request.args, "steps", default=16, lo=1, hi=MAX_IG_STEPS)
    job_id = request.args.get("job_id")
    if job_id is not None:
        check_run_id(job_id, "job_id")
    if method in ("value_norm", "direct"):
        attr, took = eng.explain_logit(run, position, target, contrast)
    else:
        attr, took = eng.explain_gradients(run, position, target, contrast, method, steps, job_id)
    return jsonify(serialize.explain_inputs(eng, run, position, method, attr, took))


@explain_api.get("/flow")
def explain_flow():
    """The information-flow graph of one prediction, pruned at `threshold`."""
    eng = engine()
    run = query_run()
    position = query_int(request.args, "position", lo=1, hi=max(1, run.num_tokens - 1))
    threshold = query_float(request.args, "threshold", default=0.05, lo=0.0, hi=1.0)
    graph, took = eng.explain_flow(run, position, threshold)
    return jsonify(serialize.explain_flow(eng, run, position, graph, took))
