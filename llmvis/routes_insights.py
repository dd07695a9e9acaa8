"""Routes for the views inside the layers: logit lens, attention insights, one row, segments.

Thin routes over llmvis.insights. Each view is computed once per run under the model lock,
cached on the run (run.view_cache, counted in Run.nbytes) and the store re-measures the run.
"""
from __future__ import annotations

import math
import time

import numpy as np
from flask import Blueprint, current_app, jsonify, request

from .errors import BadRequest
from .insights import (
    LENS_TOP_K, SEGMENTS, attention_row_all_layers, attention_stats, kv_groups, logit_lens,
    segment_spans, think_segments,
)
from .validate import parse_head, query_int, query_str

insights_api = Blueprint("insights_api", __name__, url_prefix="/api")
MAX_CACHED_ROWS = 16   # query rows of all-layer attention kept per run
HEAD_METRICS = ("entropy", "entropy_norm", "sink", "prev")


def _engine():
    return current_app.extensions["llmvis.engine"]


def _run():
    return _engine().get_run(query_str(request.args, "run_id"))


def _cached(eng, run, key: str, compute, complete=None):
    """run.view_cache[key], computed under the model lock the first time; the store re-measures.

    A view filled in parts (the lens, by windows of positions) passes complete(hit) -> bool,
    and compute(hit) gets the partial result to extend (None the first time).
    """
    def ready(hit) -> bool:
        return hit is not None and (complete is None or complete(hit))

    hit = run.view_cache.get(key)
    if ready(hit):
        return hit, 0.0
    with eng.lm.lock:
        hit = run.view_cache.get(key)
        if ready(hit):
            return hit, 0.0
        t0 = time.perf_counter()
        hit = compute() if complete is None else compute(hit)
        took = time.perf_counter() - t0
        run.view_cache[key] = hit
        rows = [k for k in run.view_cache if k.startswith("row:")]
        for old in rows[: max(0, len(rows) - MAX_CACHED_ROWS)]:
            run.view_cache.pop(old, None)
    eng.store.resize(run)
    return hit, took


def _list(a: np.ndarray, decimals: int = 6):
    """A float array as nested lists with NaN -> None (JSON has no NaN)."""
    a = np.round(a.astype(np.float64), decimals)
    return np.where(np.isnan(a), None, a).tolist()


def _ints_or_none(a: np.ndarray):
    return [None if int(v) < 0 else int(v) for v in a]


def run_segments(eng, run) -> list[str]:
    """The run's segments with <think> blocks tagged (idempotent)."""
    return think_segments(eng.token_texts(run), list(run.segments))


@insights_api.get("/logit_lens")
def logit_lens_view():
    """Each layer's prediction at each position: final norm + LM head on that layer's state.

    `start`/`end` (default: every position) limit the columns: only those are computed (once
    per run) and returned; per-position arrays then cover [start, end), `tokens` and `next_ids`
    stay whole.
    """
    eng = _engine()
    run = _run()
    top_k = query_int(request.args, "top_k", default=5, lo=1, hi=LENS_TOP_K)
    t = run.num_tokens
    start = query_int(request.args, "start", default=0, lo=0, hi=t - 1)
    end = query_int(request.args, "end", default=t, lo=1, hi=t)
    if end <= start:
        raise BadRequest("end", f"must be greater than start ({start}), got {end}")
    lens, took = _cached(  # only positions [start, end) are computed, each once per run
        eng, run, "lens",
        lambda done: logit_lens(eng.lm.model, run.hidden, run.ids, LENS_TOP_K, start=start, end=end, into=done),
        complete=lambda lens: not len(lens.missing(start, end)))
    k = min(top_k, lens.top_ids.shape[2])
    cols = slice(start, end)
    top_ids = lens.top_ids[:, cols, :k]  # (L+1, W, k)
    texts = {str(i): eng.texts.describe(int(i))["text"] for i in np.unique(top_ids).tolist()}
    entropy = lens.entropy[:, cols]  # (L+1, W)
    ranks = lens.chosen_rank[:, cols]
    return jsonify({
        "num_layers": int(lens.entropy.shape[0]) - 1,
        "num_tokens": t,
        "num_prompt_tokens": run.num_prompt,
        "start": start,
        "end": end,
        "top_k": k,
        "tokens": eng.token_texts(run),
        "next_ids": [int(i) for i in run.ids[1:]] + [None],
        "chosen_prob": _list(lens.chosen_prob[:, cols]),
        "chosen_rank": np.where(ranks < 0, None, ranks).tolist(),
        "entropy": _list(entropy, 4),
        "mean_entropy": _list(entropy.mean(1), 4),  # (L+1,) over the window
        "first_top1": _ints_or_none(lens.first_top1[cols]),
        "settled_top1": _ints_or_none(lens.settled_top1[cols]),
        "top_ids": top_ids.tolist(),
        "top_probs": _list(lens.top_probs[:, cols, :k], 5),
        "texts": texts,
        "compute_s": round(took, 4),
    })


def _stats(eng, run):
    segs = run_segments(eng, run)
    return _cached(eng, run, "attn_stats",
                   lambda: attention_stats(eng.lm.model, run.hidden, segs, run.num_prompt))


@insights_api.get("/attention_insights")
def attention_insights():
    """Per layer and query head: attention entropy, sink share, previous-token share; KV groups."""
    eng = _engine()
    run = _run()
    stats, took = _stats(eng, run)
    lm = eng.lm
    return jsonify({
        "num_layers": int(stats.entropy.shape[0]),
        "num_heads": int(stats.entropy.shape[1]),
        "num_kv_heads": int(lm.num_kv_heads),
        "kv_group": kv_groups(int(stats.entropy.shape[1]), int(lm.num_kv_heads)),
        "metrics": list(HEAD_METRICS),
        "entropy": _list(stats.entropy, 5),
        "entropy_norm": _list(stats.entropy_norm, 5),
        "sink": _list(stats.sink, 5),
        "prev": _list(stats.prev, 5),
        "num_tokens": run.num_tokens,
        "query_rows_used": stats.query_rows_used,  # < num_tokens: estimated from a weighted sample of query rows
        "compute_s": round(took, 4),
    })


@insights_api.get("/attention_row")
def attention_row():
    """Which earlier tokens one query position attends to, in every layer (mean, max or one head)."""
    eng = _engine()
    run = _run()
    position = query_int(request.args, "position", lo=0, hi=run.num_tokens - 1)
    head = parse_head(request.args.get("head"), int(eng.lm.num_heads))
    row, took = _cached(eng, run, f"row:{position}",
                        lambda: attention_row_all_layers(eng.lm.model, run.hidden, position))
    w = row.weights.float()  # (L, Hq, P+1)
    if isinstance(head, str):
        matrix = w.mean(1) if head == "mean" else w.amax(1)  # (L, P+1)
    else:
        matrix = w[:, head]  # (L, P+1)
    return jsonify({
        "position": position,
        "head": head,
        "num_layers": int(w.shape[0]),
        "num_keys": int(w.shape[2]),
        "tokens": eng.token_texts(run)[: position + 1],
        "matrix": _list(matrix.numpy(), 5),
        "compute_s": round(took, 4),
    })


@insights_api.get("/segments")
def segments():
    """Chat segments (think blocks included) and how attention and entropy split over them.

    attention=0 answers the segments alone, without computing every layer's attention.
    """
    eng = _engine()
    run = _run()
    with_attention = query_str(request.args, "attention", required=False, default="1", choices=("0", "1")) == "1"
    segs = run_segments(eng, run)
    ent = run.result.stats.entropy  # (T,) prediction entropy of each token
    present = [s for s in SEGMENTS if s in segs]
    counts = {s: segs.count(s) for s in present}
    token_entropy = {}
    for s in present:
        vals = [float(ent[i]) for i, x in enumerate(segs) if x == s and not math.isnan(float(ent[i]))]
        token_entropy[s] = round(sum(vals) / len(vals), 5) if vals else None
    body = {
        "segments": segs,
        "spans": segment_spans(segs),
        "names": present,
        "counts": counts,
        "num_generated_queries": run.num_tokens - run.num_prompt,
        "token_entropy": token_entropy,
    }
    if not with_attention:  # labels only: no attention is computed
        return jsonify(body)
    stats, took = _stats(eng, run)
    idx = {s: SEGMENTS.index(s) for s in present}
    return jsonify(body | {
        "attention_share": {s: _list(stats.seg_share[:, i], 5) for s, i in idx.items()},
        "attention_entropy": {s: _list(stats.seg_entropy[:, i], 5) for s, i in idx.items()},
        "num_layers": int(stats.seg_share.shape[0]),
        "query_rows_used": stats.query_rows_used,
        "compute_s": round(took, 4),
    })
