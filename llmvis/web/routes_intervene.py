"""Routes for interventions (issue 15; the contract is docs/INTERVENE.md): tokenize, ablation and
steering runs, their effects, and activation patching sweeps. Thin routes: validate, call the
Engine (which runs llmvis.engine.intervene under its model lock), shape with llmvis.web.serialize."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from llmvis.core.errors import BadRequest
from llmvis.keep.bundle import check_run_id
from llmvis.web import serialize
from llmvis.web.context import engine, json_body, query_run
from llmvis.web.validate import (
    parse_alphas, parse_bool, parse_optional_int, parse_pair_side, parse_run_id, parse_text_body, query_int, query_str,
)

intervene_api = Blueprint("intervene_api", __name__, url_prefix="/api")
ALIGNS = ("auto", "position", "edit")


@intervene_api.post("/tokenize")
def tokenize():
    """The token ids and texts of a text (as the patching texts are tokenized), and their count."""
    eng = engine()
    body = json_body()
    text, system = parse_text_body(body)
    prompt = eng.tokenize(text, parse_bool(body, "use_chat_template", False), system)
    return jsonify(serialize.tokenized(eng, prompt))


@intervene_api.post("/intervene/ablate")
def ablate():
    """Re-run a run with heads, KV groups, MLPs or attention layers ablated (a linked run)."""
    eng = engine()
    body = json_body()
    parent = eng.get_run(parse_run_id(body))
    if "targets" not in body:
        raise BadRequest("targets", "is required: a list of {kind, layer, head | group}")
    mode = body.get("mode", "zero")
    run = eng.ablate(parent, body["targets"], mode, parse_bool(body, "free", False))
    return jsonify(serialize.intervention(eng, run, eng.intervention_effects(run)))


@intervene_api.post("/intervene/steer")
def steer():
    """Generate with alpha * v added to the residual stream at a layer; one linked run per alpha."""
    eng = engine()
    body = json_body()
    parent = eng.get_run(parse_run_id(body))
    if "layer" not in body:
        raise BadRequest("layer", "is required")
    alphas = parse_alphas(body)
    vector = body.get("vector")
    if not isinstance(vector, dict):
        raise BadRequest("vector", "is required and must be an object {source, ...}")
    summary, runs = eng.steer(parent, body["layer"], vector, alphas, parse_optional_int(body, "from_position"),
                              parse_bool(body, "free", True), parse_bool(body, "normalize", False))
    return jsonify(serialize.steering(eng, summary, runs, [eng.intervention_effects(r) for r in runs]))


@intervene_api.get("/intervene/effects")
def effects():
    """Per position: the parent token's log-prob change and KL(parent || intervened)."""
    eng = engine()
    run = query_run()
    align = query_str(request.args, "align", required=False, default="auto", choices=ALIGNS)
    top = query_int(request.args, "top", default=10, lo=1, hi=100)
    return jsonify(serialize.effects(eng, eng.intervention_effects(run, align, top)))


def _side_ids(eng, side: dict, name: str, chat: bool) -> tuple[list[int], str]:
    if "run_id" in side:
        run = eng.get_run(side["run_id"], f"{name}.run_id")
        return list(run.ids), run.id
    try:
        return list(eng.tokenize(side["text"], chat).ids), ""
    except BadRequest as exc:
        raise BadRequest(f"{name}.text", str(exc)) from None


@intervene_api.post("/intervene/patch")
def patch():
    """An activation patching sweep over (layer, position) or (layer, head); a job when job_id is given."""
    eng = engine()
    body = json_body()
    chat = parse_bool(body, "use_chat_template", False)
    clean, corrupted = parse_pair_side(body, "clean"), parse_pair_side(body, "corrupted")
    sweep = body.get("sweep", "residual")
    head_position = body.get("head_position", "all")
    job_id = body.get("job_id")
    if job_id is not None:
        check_run_id(job_id, "job_id")
    if "metric" not in body:
        raise BadRequest("metric", "is required: {type: logit_diff | logprob, ...}")
    clean_ids, owner = _side_ids(eng, clean, "clean", chat)
    corrupted_ids, _ = _side_ids(eng, corrupted, "corrupted", chat)
    out = eng.patch(clean_ids, corrupted_ids, body["metric"], sweep, head_position, job_id, owner)
    return jsonify(serialize.patching(eng, out, sweep, clean_ids, corrupted_ids, job_id))
