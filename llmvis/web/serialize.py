"""The one place that turns runs and views into JSON-able dicts.

The API routes, the streaming events, the share HTML and the Python API all shape their answers
here, from what the Engine returns (runs, tensors, numpy arrays). Field names are the v1 contract
of the design brief; tests/api and tests/api/test_openapi.py hold them in place.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from llmvis.core.attention import kv_groups
from llmvis.core.errors import BadRequest
from llmvis.core.metrics import score_summary
from llmvis.core.segments import SEGMENTS, segment_spans
from llmvis.engine.decode import STAT_NAMES

HEAD_METRICS = ("entropy", "entropy_norm", "sink", "prev")


def float_or_none(x) -> float | None:
    """A float, or None for NaN (JSON has no NaN)."""
    x = float(x)
    return None if math.isnan(x) else x


def float_lists(a: np.ndarray, decimals: int = 6):
    """A float array as nested lists, rounded, with NaN -> None."""
    a = np.round(a.astype(np.float64), decimals)
    return np.where(np.isnan(a), None, a).tolist()


def _ints_or_none(a: np.ndarray):
    return [None if int(v) < 0 else int(v) for v in a]


# ---- tokens and runs -------------------------------------------------------------------------
def token(eng, pos: int, token_id: int, source: str, segment: str, stats: dict) -> dict:
    """One position as `tokens` entries show it, from its scalar statistics."""
    d = eng.texts.describe(token_id)
    rank = int(stats["rank"])
    return {
        "position": pos, "id": int(token_id), "text": d["text"], "source": source,
        "prob": float_or_none(stats["prob"]), "rank": rank if rank > 0 else None,
        "entropy": float_or_none(stats["entropy"]), "sample_prob": float_or_none(stats["sample_prob"]),
        "sample_entropy": float_or_none(stats["sample_entropy"]), "cut_mass": float_or_none(stats["cut_mass"]),
        "special": d["special"], "bytes": d["bytes"], "partial": d["partial"], "segment": segment,
    }


def step_token(eng, pos: int, token_id: int, stats: dict) -> dict:
    """A generated token while it streams, from the live step statistics."""
    return token(eng, pos, token_id, "generated", "assistant", stats)


def prompt_tokens(eng, prompt, rows: list[dict]) -> list[dict]:
    """The prompt's tokens once the prefill is done (rows: each position's statistics)."""
    return [token(eng, i, prompt.ids[i], "prompt", prompt.segments[i], row) for i, row in enumerate(rows)]


def token_dict(eng, run, pos: int) -> dict:
    s = run.result.stats
    stats = {name: getattr(s, name)[pos].item() for name in STAT_NAMES}
    source = "prompt" if pos < run.num_prompt else "generated"
    return token(eng, pos, run.ids[pos], source, run.segments[pos], stats)


def tokens(eng, run) -> list[dict]:
    return [token_dict(eng, run, i) for i in range(run.num_tokens)]


def generated_text(eng, run) -> str:
    return eng.lm.tokenizer.decode(run.ids[run.num_prompt:], skip_special_tokens=True)


def run_dict(eng, run) -> dict:
    """A run as POST /api/generate and GET /api/run answer it."""
    return {
        "run_id": run.id,
        "model": eng.model_info(),
        "params": run.params,
        "tokens": tokens(eng, run),
        "generated_text": generated_text(eng, run),
        "finish_reason": run.finish_reason,
        "status": run.status,
        "kind": run.kind,
        "parent_id": run.links.get("parent_id"),
        "fork_position": run.links.get("fork_position"),
        **({"intervention": run.links.get("intervention")} if run.kind == "intervention" else {}),  # issue 15
        "children": list(run.children),
        "created": run.created,        # unix seconds: orders runs and branches stably
        **({"score": score_summary(run.result.stats)} if run.kind == "score" else {}),
        "timing": run.timing,
        "saved": run.saved,            # null without a history; false with save_error when it could not keep the run
        "save_error": run.save_error,
        "num_prompt_tokens": run.num_prompt,
        "num_tokens": run.num_tokens,
    }


def stream_start(eng, job) -> dict:
    out = {"run_id": job.id, "model": eng.model_info(), "params": job.params.as_dict(),
           "num_prompt_tokens": len(job.prompt.ids), "kind": job.kind}
    if job.kind == "fork":
        out |= {"parent_id": job.parent.id, "fork_position": job.fork_position}
    return out


def candidates(eng, run, position: int, top_n: int) -> list[dict]:
    """The top_n alternatives recorded at `position`, by raw probability."""
    s = run.result.stats
    out = []
    for j in range(min(top_n, s.top_ids.shape[1])):
        tid = int(s.top_ids[position, j])
        if tid < 0:
            break
        d = eng.texts.describe(tid)
        out.append({"id": tid, "text": d["text"], "bytes": d["bytes"], "partial": d["partial"],
                    "special": d["special"], "prob": float_or_none(s.top_probs[position, j]),
                    "sample_prob": float_or_none(s.top_sample[position, j])})
    return out


def token_probs(eng, run, position: int, top_n: int) -> dict:
    """GET /api/token_probs: what the model considered at `position` (1 .. T-1)."""
    run.check_position(position)
    if position == 0:
        raise BadRequest("position", "position 0 has no prediction (nothing precedes it)")
    tok = token_dict(eng, run, position)
    return {"position": position, "token": tok, "entropy": tok["entropy"], "cut_mass": tok["cut_mass"],
            "candidates": candidates(eng, run, position, top_n)}


# ---- views ----------------------------------------------------------------------------------
def attention(eng, run, meta: dict, matrix: torch.Tensor) -> dict:
    return meta | {
        "tokens": eng.token_texts(run),
        "matrix": torch.round(matrix.double(), decimals=6).tolist(),  # float64 so the JSON is short
    }


def diff(eng, run_a, run_b, result: dict) -> dict:
    n = result["aligned_length"]
    return result | {
        "run_a": run_a.id, "run_b": run_b.id,
        "tokens_a": tokens(eng, run_a), "tokens_b": tokens(eng, run_b),
        "params_a": run_a.params, "params_b": run_b.params,
        "same": [run_a.ids[i] == run_b.ids[i] for i in range(n)],
    }


def similarity(eng, run, sim: torch.Tensor) -> dict:
    return {
        "per_layer": sim.mean(1).tolist(),
        "per_token": torch.round(sim.double(), decimals=5).tolist(),  # 5 decimals: half the JSON, same picture
        "num_layers": int(sim.shape[0]),
        "num_tokens": int(sim.shape[1]),
        "tokens": eng.token_texts(run),
    }


def projection(eng, run, layer: int, method: str, coords: torch.Tensor, variance: list[float], fit_start: int) -> dict:
    texts = eng.token_texts(run)
    points = [
        {"position": i, "x": float(coords[i, 0]), "y": float(coords[i, 1]), "text": texts[i],
         "source": "prompt" if i < run.num_prompt else "generated"}
        for i in range(run.num_tokens)
    ]
    return {"layer": layer, "method": method, "points": points, "explained_variance": variance,
            "fit_positions": [fit_start, run.num_tokens]}


def logit_lens(eng, run, lens, start: int, end: int, top_k: int, took: float) -> dict:
    k = min(top_k, lens.top_ids.shape[2])
    cols = slice(start, end)
    top_ids = lens.top_ids[:, cols, :k]  # (L+1, W, k)
    texts = {str(i): eng.texts.describe(int(i))["text"] for i in np.unique(top_ids).tolist()}
    entropy = lens.entropy[:, cols]  # (L+1, W)
    ranks = lens.chosen_rank[:, cols]
    return {
        "num_layers": int(lens.entropy.shape[0]) - 1,
        "num_tokens": run.num_tokens,
        "num_prompt_tokens": run.num_prompt,
        "start": start,
        "end": end,
        "top_k": k,
        "tokens": eng.token_texts(run),
        "next_ids": [int(i) for i in run.ids[1:]] + [None],
        "chosen_prob": float_lists(lens.chosen_prob[:, cols]),
        "chosen_rank": np.where(ranks < 0, None, ranks).tolist(),
        "entropy": float_lists(entropy, 4),
        "mean_entropy": float_lists(entropy.mean(1), 4),  # (L+1,) over the window
        "first_top1": _ints_or_none(lens.first_top1[cols]),
        "settled_top1": _ints_or_none(lens.settled_top1[cols]),
        "top_ids": top_ids.tolist(),
        "top_probs": float_lists(lens.top_probs[:, cols, :k], 5),
        "texts": texts,
        "compute_s": round(took, 4),
    }


def head_insights(eng, run, stats, took: float) -> dict:
    heads = int(stats.entropy.shape[1])
    return {
        "num_layers": int(stats.entropy.shape[0]),
        "num_heads": heads,
        "num_kv_heads": int(eng.lm.num_kv_heads),
        "kv_group": kv_groups(heads, int(eng.lm.num_kv_heads)),
        "metrics": list(HEAD_METRICS),
        "entropy": float_lists(stats.entropy, 5),
        "entropy_norm": float_lists(stats.entropy_norm, 5),
        "sink": float_lists(stats.sink, 5),
        "prev": float_lists(stats.prev, 5),
        "num_tokens": run.num_tokens,
        "query_rows_used": stats.query_rows_used,  # < num_tokens: estimated from a weighted sample of query rows
        "compute_s": round(took, 4),
    }


def attention_row(eng, run, row, head, took: float) -> dict:
    w = row.weights.float()  # (L, Hq, P+1)
    if isinstance(head, str):
        matrix = w.mean(1) if head == "mean" else w.amax(1)  # (L, P+1)
    else:
        matrix = w[:, head]  # (L, P+1)
    return {
        "position": row.position,
        "head": head,
        "num_layers": int(w.shape[0]),
        "num_keys": int(w.shape[2]),
        "tokens": eng.token_texts(run)[: row.position + 1],
        "matrix": float_lists(matrix.numpy(), 5),
        "compute_s": round(took, 4),
    }


def segments(eng, run, segs: list[str], stats=None, took: float = 0.0) -> dict:
    """Chat segments and the mean prediction entropy of each; with head `stats`, how the
    generated tokens' attention splits over them per layer."""
    ent = run.result.stats.entropy  # (T,) prediction entropy of each token
    present = [s for s in SEGMENTS if s in segs]
    token_entropy = {}
    for s in present:
        vals = [float(ent[i]) for i, x in enumerate(segs) if x == s and not math.isnan(float(ent[i]))]
        token_entropy[s] = round(sum(vals) / len(vals), 5) if vals else None
    body = {
        "segments": segs,
        "spans": segment_spans(segs),
        "names": present,
        "counts": {s: segs.count(s) for s in present},
        "num_generated_queries": run.num_tokens - run.num_prompt,
        "token_entropy": token_entropy,
    }
    if stats is None:
        return body
    idx = {s: SEGMENTS.index(s) for s in present}
    return body | {
        "attention_share": {s: float_lists(stats.seg_share[:, i], 5) for s, i in idx.items()},
        "attention_entropy": {s: float_lists(stats.seg_entropy[:, i], 5) for s, i in idx.items()},
        "num_layers": int(stats.seg_share.shape[0]),
        "query_rows_used": stats.query_rows_used,
        "compute_s": round(took, 4),
    }


def history_row(eng, row: dict) -> dict:
    """One entry of GET /api/history from a History row."""
    return {
        "run_id": row["id"], "title": row["title"], "created": row["created"], "model": row["model"],
        "kind": row["kind"], "num_tokens": row["num_tokens"], "num_prompt": row["num_prompt"],
        "finish_reason": row["finish_reason"], "nbytes": row["nbytes"],
        "parent_id": row.get("parent_id"), "fork_position": row.get("fork_position"),  # forks: where they branch
        "same_model": row["model"] == eng.lm.name,
    }


# ---- explain (docs/EXPLAIN.md) ----------------------------------------------------------------
def _token_ref(eng, token_id: int | None) -> dict | None:
    if token_id is None:
        return None
    return {"id": int(token_id), "text": eng.texts.texts([int(token_id)])[0]}


def _explain_head(eng, run, position: int, query: int, target: int, contrast: int | None) -> dict:
    return {"run_id": run.id, "position": position, "query_position": query,
            "target": _token_ref(eng, target), "contrast": _token_ref(eng, contrast)}


def explain_logit(eng, run, position: int, attr, took: float) -> dict:
    """GET /api/explain/logit: the direct logit attribution of one token."""
    d = attr.direction
    total = attr.total
    heads = int(attr.heads.shape[1])
    return _explain_head(eng, run, position, attr.query, attr.target, attr.contrast) | {
        "logit": d.logit, "softcap": d.softcap, "lm_bias": d.bias,
        "embedding": round(attr.embedding, 7),
        "heads": float_lists(attr.heads, 7), "o_bias": float_lists(attr.o_bias, 7),
        "attention": float_lists(attr.attention, 7), "mlp": float_lists(attr.mlp, 7),
        "num_layers": int(attr.heads.shape[0]), "num_heads": heads,
        "kv_group": kv_groups(heads, int(eng.lm.num_kv_heads)),
        "total": total, "gap": abs(total - d.logit),
        "norm": "final norm scale of the query row held fixed (no centring: RMS norm)",
        # part(c) = norm_scale * direction . c; direction is what a steering vector would add along
        "direction": [float(f"{v:.6g}") for v in d.readout.tolist()], "norm_scale": d.scale,
        "compute_s": round(took, 4),
    }


def explain_inputs(eng, run, position: int, method: str, attr, took: float) -> dict:
    """GET /api/explain/inputs: scores of the tokens 0..q for one prediction."""
    q = attr.query
    out = _explain_head(eng, run, position, q, attr.target, attr.contrast) | {
        "method": method, "tokens": eng.token_texts(run)[: q + 1], "compute_s": round(took, 4),
    }
    if method in ("value_norm", "direct"):
        layers = attr.value_norm if method == "value_norm" else attr.direct  # (L, q+1)
        if method == "value_norm":
            sums = layers.sum(1, keepdims=True)
            layers = layers / np.where(sums > 0, sums, 1.0)  # each layer sums to 1
            scores = layers.mean(0)
        else:
            scores = layers.sum(0)  # sums to the heads' part of the direct logit attribution
        return out | {"scores": float_lists(scores, 7), "layers": float_lists(layers, 6), "steps": None}
    out |= {"scores": float_lists(attr.scores, 7), "steps": attr.steps, "value": attr.value}
    if method == "integrated_gradients":
        s = float(attr.scores.sum())
        expected = attr.value - attr.baseline_value
        out["completeness"] = {"sum": s, "expected": expected, "gap": abs(s - expected),
                               "baseline": _token_ref(eng, attr.baseline_id)}
    return out


def explain_flow(eng, run, position: int, graph, took: float) -> dict:
    """GET /api/explain/flow: the pruned information-flow graph of one prediction."""
    return {"run_id": run.id, "position": position, "query_position": graph.query, "threshold": graph.threshold,
            "num_layers": int(eng.lm.num_layers),
            "nodes": [{"layer": layer, "position": pos} for layer, pos in graph.nodes],
            "edges": [e | {"weight": round(e["weight"], 6),
                           "head_weight": None if e["head_weight"] is None else round(e["head_weight"], 4)}
                      for e in graph.edges],
            "tokens": eng.token_texts(run)[: graph.query + 1], "compute_s": round(took, 4)}


# ---- interventions (issue 15; docs/INTERVENE.md) ------------------------------------------------
def tokenized(eng, prompt) -> dict:
    """POST /api/tokenize."""
    toks = []
    for i, tid in enumerate(prompt.ids):
        d = eng.texts.describe(tid)
        toks.append({"position": i, "id": int(tid), "text": d["text"], "special": d["special"]})
    return {"ids": [int(i) for i in prompt.ids], "tokens": toks, "count": len(prompt.ids),
            "use_chat_template": bool(prompt.chat)}


def effects(eng, eff: dict) -> dict:
    """GET /api/intervene/effects: the effect rows with their token texts."""
    def row(r):
        return r | {"text": eng.texts.describe(r["token_id"])["text"]}

    summary = eff["summary"] | {"top": [row(r) for r in eff["summary"]["top"]]}
    return eff | {"positions": [row(r) for r in eff["positions"]], "summary": summary}


def intervention(eng, run, eff: dict) -> dict:
    """POST /api/intervene/ablate: the new linked run and its effects."""
    return {"run": run_dict(eng, run), "effects": effects(eng, eff)}


def steering(eng, vector: dict, runs: list, effs: list) -> dict:
    """POST /api/intervene/steer: the vector's summary and one result per alpha."""
    return {"vector": {k: vector[k] for k in ("source", "layer", "norm", "normalize")},
            "results": [{"alpha": run.links["intervention"]["alpha"], "run": run_dict(eng, run), "effects": effects(eng, e)}
                        for run, e in zip(runs, effs)]}


def patching(eng, out: dict, sweep: str, clean_ids: list[int], corrupted_ids: list[int], job_id) -> dict:
    """POST /api/intervene/patch: raw and normalised sweep values (1 = clean, 0 = corrupted)."""
    values = out["values"]
    clean, corrupted = out["clean_metric"], out["corrupted_metric"]
    span = clean - corrupted
    metric = dict(out["metric"])
    names = [k for k in ("token_a", "token_b", "token") if metric.get(k) is not None]
    metric["texts"] = {k: eng.texts.describe(metric[k])["text"] for k in names}
    body = {
        "sweep": sweep, "metric": metric, "clean_metric": clean, "corrupted_metric": corrupted,
        "num_layers": int(values.shape[0]), "num_tokens": len(clean_ids), "num_heads": int(eng.lm.num_heads),
        "head_position": out["head_position"], "rows": "layer", "cols": "position" if sweep == "residual" else "head",
        "values": float_lists(values), "normalized": None,
        "tokens_clean": eng.texts.texts(clean_ids), "tokens_corrupted": eng.texts.texts(corrupted_ids),
        "job_id": job_id, "compute_s": round(out["compute_s"], 4),
    }
    if span == 0 or not math.isfinite(span):
        body["normalized"] = [[None] * values.shape[1] for _ in range(values.shape[0])]
        body["note"] = "clean and corrupted give the same metric: nothing to normalise"
    else:
        body["normalized"] = float_lists((values - corrupted) / span)
    return body
