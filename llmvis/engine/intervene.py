"""Interventions (issue 15): ablation and steering runs, their effects, activation patching sweeps.

An intervention run re-runs a parent run's prompt with the parent's settings and seed while hooks
(llmvis.model.intervene, always removed on exit) change the model: by default every generated
token of the parent is teacher-forced in one forward pass, so every position is comparable; with
`free`, generation is free (it follows the parent until the first token the intervention
changes). The run is an ordinary Run of kind "intervention", linked to its parent by
`links = {"parent_id", "intervention": spec}`; the spec is validated strictly here (also when a
bundle is imported) and records exactly what was changed.

Patching sweeps read a metric (a logit difference or a log-prob at one position) from the
corrupted tokens with one clean activation put in: the residual stream at (layer, position), or
one query head's output (its slice of the o_proj input) per (layer, head). Positions before the
patched one are never recomputed: each patched forward starts from a copy of the KV cache of the
corrupted prefix.

Everything here runs under the Engine's model lock (taken by the caller or, for the sweeps, per
step here) and returns tensors, numpy arrays and plain values; llmvis.web.serialize shapes JSON.
"""
from __future__ import annotations

import copy
import math
import secrets
import time

import numpy as np
import torch

from llmvis.core.errors import BadRequest, Cancelled, GenerationFailed
from llmvis.core.segments import think_segments
from llmvis.core.tokens import Prompt, build_prompt
from llmvis.engine.decode import PROMPT_CHUNK, DecodeResult, GenerationParams, _Recorder, decode
from llmvis.engine.jobs import FailedRun, Job
from llmvis.engine.run import Run, new_run_id
from llmvis.engine.store import release_freed_memory
from llmvis.engine.views import align_runs, aligned_logits, kl_logp, kl_summary
from llmvis.model.intervene import (
    add_direction, decoder_layers, head_dim_of, hooks, recording, replace_heads, replace_output, set_rows,
)
from llmvis.model.introspect import final_norm_input, logits_from_hidden, text_config

ABLATE_MODES = ("zero", "mean")
TARGET_KINDS = ("head", "kv_group", "mlp", "attention")
VECTOR_SOURCES = ("mean_diff", "token", "raw")
METRIC_TYPES = ("logit_diff", "logprob")
SWEEPS = ("residual", "heads")
ALIGNS = ("auto", "position", "edit")
MAX_TARGETS = 64
MAX_ALPHAS = 8
MAX_ALPHA = 1e4
MAX_PROMPTS = 16
MAX_PROMPT_TOKENS = 256
MAX_VECTOR_VALUE = 1e6
MAX_PATCH_TOKENS = 512  # tokens of a patching pair (the sweep is layers x positions forwards)
PATCH_BATCH_TOKENS = 2048  # patched forwards batched together, in tokens (batch x sequence)
PATCH_MAX_BATCH = 64


# ---- validation of specs (API bodies, the Python API and bundles) ------------------------------
def _int(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
            value = int(value)
        else:
            raise BadRequest(name, f"must be an integer in [{lo}, {hi}], got {type(value).__name__}")
    if not lo <= value <= hi:
        raise BadRequest(name, f"must be in [{lo}, {hi}], got {value}")
    return value


def _float(value, name: str, bound: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(name, f"must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or abs(value) > bound:
        raise BadRequest(name, f"must be a finite number with |value| <= {bound:g}")
    return value


def _bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(name, f"must be true or false, got {type(value).__name__}")
    return value


def _keys(obj, name: str, allowed: set, required: set = frozenset()) -> dict:
    if not isinstance(obj, dict):
        raise BadRequest(name, "must be an object")
    extra = sorted(set(obj) - allowed)
    if extra:
        raise BadRequest(name, f"has unknown fields {', '.join(map(str, extra))[:120]}")
    missing = sorted(required - set(obj))
    if missing:
        raise BadRequest(f"{name}.{missing[0]}" if name else missing[0], "is required")
    return obj


def check_targets(raw, dims: dict, name: str = "targets") -> list[dict]:
    """The ablation targets, each {"kind", "layer", and "head" or "group"}, ranges checked."""
    if not isinstance(raw, list) or not raw:
        raise BadRequest(name, f"must be a non-empty list of at most {MAX_TARGETS} targets")
    if len(raw) > MAX_TARGETS:
        raise BadRequest(name, f"must hold at most {MAX_TARGETS} targets, got {len(raw)}")
    layers, heads, kv = int(dims["num_layers"]), int(dims["num_heads"]), int(dims["num_kv_heads"])
    out = []
    for i, t in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(t, dict):
            raise BadRequest(where, "must be an object {kind, layer, head | group}")
        kind = t.get("kind")
        if kind not in TARGET_KINDS:
            raise BadRequest(f"{where}.kind", f"must be one of {', '.join(TARGET_KINDS)}, got {str(kind)[:40]!r}")
        extra = {"head": {"head"}, "kv_group": {"group"}}.get(kind, set())
        _keys(t, where, {"kind", "layer"} | extra, {"layer"} | extra)
        target = {"kind": kind, "layer": _int(t["layer"], f"{where}.layer", 0, layers - 1)}
        if kind == "head":
            target["head"] = _int(t["head"], f"{where}.head", 0, heads - 1)
        elif kind == "kv_group":
            target["group"] = _int(t["group"], f"{where}.group", 0, kv - 1)
        out.append(target)
    return out


def check_ablation(spec, dims: dict, name: str = "") -> dict:
    """A whole ablation spec {"type": "ablate", "mode", "free", "targets"} (strict)."""
    _keys(spec, name, {"type", "mode", "free", "targets"}, {"type", "mode", "targets"})
    p = f"{name}." if name else ""
    if spec["type"] != "ablate":
        raise BadRequest(f"{p}type", "must be ablate")
    if spec["mode"] not in ABLATE_MODES:
        raise BadRequest(f"{p}mode", f"must be one of {', '.join(ABLATE_MODES)}, got {str(spec['mode'])[:40]!r}")
    return {"type": "ablate", "mode": spec["mode"], "free": _bool(spec.get("free", False), f"{p}free"),
            "targets": check_targets(spec["targets"], dims, f"{p}targets")}


def check_values(values, dims: dict, name: str) -> list[float]:
    size = int(dims["hidden_size"])
    if not isinstance(values, list) or len(values) != size:
        raise BadRequest(name, f"must be a list of {size} numbers (the hidden size)")
    return [_float(v, f"{name}[{i}]", MAX_VECTOR_VALUE) for i, v in enumerate(values)]


def check_prompts(raw, name: str) -> list[str]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PROMPTS:
        raise BadRequest(name, f"must be a list of 1 to {MAX_PROMPTS} prompts")
    for i, s in enumerate(raw):
        if not isinstance(s, str) or not s.strip():
            raise BadRequest(f"{name}[{i}]", "must be a non-empty string")
    return list(raw)


def check_steering(spec, dims: dict, name: str = "") -> dict:
    """A recorded steering spec (strict): layer, alpha, from_position, free, and the vector with
    the values actually added (before alpha)."""
    _keys(spec, name, {"type", "layer", "alpha", "from_position", "free", "vector"},
          {"type", "layer", "alpha", "from_position", "vector"})
    p = f"{name}." if name else ""
    if spec["type"] != "steer":
        raise BadRequest(f"{p}type", "must be steer")
    vec = _keys(spec["vector"], f"{p}vector", {"source", "norm", "normalize", "values", "token_id", "positive", "negative"},
                {"source", "values"})
    if vec["source"] not in VECTOR_SOURCES:
        raise BadRequest(f"{p}vector.source", f"must be one of {', '.join(VECTOR_SOURCES)}")
    out_vec = {"source": vec["source"], "values": check_values(vec["values"], dims, f"{p}vector.values"),
               "normalize": _bool(vec.get("normalize", False), f"{p}vector.normalize")}
    out_vec["norm"] = (_float(vec["norm"], f"{p}vector.norm", 1e12) if "norm" in vec  # v's norm before `normalize`
                       else float(np.linalg.norm(np.asarray(out_vec["values"], dtype=np.float64))))
    if "token_id" in vec:
        out_vec["token_id"] = _int(vec["token_id"], f"{p}vector.token_id", 0, int(dims["vocab_size"]) - 1)
    for side in ("positive", "negative"):
        if side in vec:
            out_vec[side] = check_prompts(vec[side], f"{p}vector.{side}")
    return {"type": "steer", "layer": _int(spec["layer"], f"{p}layer", 0, int(dims["num_layers"]) - 1),
            "alpha": _float(spec["alpha"], f"{p}alpha", MAX_ALPHA),
            "from_position": _int(spec["from_position"], f"{p}from_position", 0, 1 << 20),
            "free": _bool(spec.get("free", True), f"{p}free"), "vector": out_vec}


def check_steer_request(layer, alphas, from_position, num_tokens: int, dims: dict) -> None:
    """The fields of a steering request other than the vector."""
    _int(layer, "layer", 0, int(dims["num_layers"]) - 1)
    if not isinstance(alphas, list) or not 1 <= len(alphas) <= MAX_ALPHAS:
        raise BadRequest("alphas", f"must be a list of 1 to {MAX_ALPHAS} numbers")
    for i, a in enumerate(alphas):
        _float(a, f"alphas[{i}]", MAX_ALPHA)
    if from_position is not None:
        _int(from_position, "from_position", 0, num_tokens - 1)


def single_token(tokenizer, value, vocab: int, name: str) -> int:
    """A token id in the vocabulary, or a string that encodes to exactly one token."""
    if isinstance(value, str):
        ids = tokenizer.encode(value, add_special_tokens=False)
        if len(ids) != 1:
            raise BadRequest(name, f"must be exactly one token; {value[:40]!r} is {len(ids)} tokens")
        return int(ids[0])
    return _int(value, name, 0, vocab - 1)


def finish_vector(vec: dict, normalize: bool) -> tuple[list[float], dict]:
    """(the values to add, before alpha, as floats; the vector's summary for the spec)."""
    values = vec["values"].float()
    norm = float(values.norm())
    if normalize:
        if norm == 0:
            raise BadRequest("vector", "is zero and cannot be normalized")
        values = values / norm
    summary = {k: v for k, v in vec.items() if k != "values"} | {"normalize": bool(normalize), "norm": norm}
    return values.tolist(), summary


def check_patch(clean_ids: list[int], corrupted_ids: list[int], metric, sweep, head_position, dims: dict,
                tokenizer=None):
    """(the metric with its position made absolute, the head position) of a patching request."""
    t = len(clean_ids)
    if len(corrupted_ids) != t:
        raise BadRequest("corrupted", f"must have the same number of tokens as clean ({len(corrupted_ids)} vs {t})")
    if t < 2:
        raise BadRequest("clean", f"must be at least 2 tokens, got {t}")
    if t > MAX_PATCH_TOKENS:
        raise BadRequest("clean", f"must be at most {MAX_PATCH_TOKENS} tokens for a patching sweep, got {t}")
    if sweep not in SWEEPS:
        raise BadRequest("sweep", f"must be one of {', '.join(SWEEPS)}, got {str(sweep)[:40]!r}")
    if not isinstance(metric, dict):
        raise BadRequest("metric", "is required and must be an object")
    kind = metric.get("type")
    if kind not in METRIC_TYPES:
        raise BadRequest("metric.type", f"must be one of {', '.join(METRIC_TYPES)}, got {str(kind)[:40]!r}")
    tokens = ("token_a", "token_b") if kind == "logit_diff" else ("token",)
    _keys(metric, "metric", {"type", "position", *tokens}, set(tokens[:2]) if kind == "logit_diff" else set())
    pos = metric.get("position", -1)
    pos = _int(pos, "metric.position", -t, t - 1)
    out = {"type": kind, "position": pos + t if pos < 0 else pos}
    vocab = int(dims["vocab_size"])
    for name in tokens:
        value = metric.get(name)
        out[name] = None if value is None else single_token(tokenizer, value, vocab, f"metric.{name}")
    if head_position is None or head_position == "all":
        head_position = "all"
    elif sweep == "heads":
        head_position = _int(head_position, "head_position", 0, t - 1)
    else:
        raise BadRequest("head_position", "is for the heads sweep only")
    return out, head_position


def top_token(model, ids: list[int]) -> int:
    """The most likely next token after ids (the clean answer of a log-prob metric)."""
    return int(torch.argmax(_forward_last(model, ids, 0, None, [])))


def check_spec(spec, dims: dict, name: str = "intervention") -> dict:
    """Any recorded intervention spec (what bundles carry in run.links.intervention)."""
    if not isinstance(spec, dict):
        raise BadRequest(name, "must be an object")
    if spec.get("type") == "ablate":
        return check_ablation(spec, dims, name)
    if spec.get("type") == "steer":
        return check_steering(spec, dims, name)
    raise BadRequest(f"{name}.type", "must be ablate or steer")


# ---- hooks for a spec -----------------------------------------------------------------------------
def heads_of(target: dict, num_heads: int, num_kv_heads: int) -> list[int]:
    """The query heads a head / kv_group target names (a KV group: the heads sharing its KV head)."""
    if target["kind"] == "head":
        return [target["head"]]
    group = num_heads // num_kv_heads
    return list(range(target["group"] * group, (target["group"] + 1) * group))


def ablation_hooks(model, spec: dict, parent_ids: list[int]) -> list:
    """The hook specs of llmvis.model.intervene.hooks for an ablation. Mode "mean" first runs one
    forward over the parent's tokens to take each ablated value's mean over its positions."""
    cfg = text_config(model)
    num_heads = int(cfg.num_attention_heads)
    num_kv = int(getattr(cfg, "num_key_value_heads", None) or num_heads)
    d = head_dim_of(model)
    heads: dict[int, set[int]] = {}
    outputs: list[tuple[str, int]] = []
    for t in spec["targets"]:
        if t["kind"] in ("head", "kv_group"):
            heads.setdefault(t["layer"], set()).update(heads_of(t, num_heads, num_kv))
        else:
            key = ("mlp_out" if t["kind"] == "mlp" else "attn_out", t["layer"])
            if key not in outputs:
                outputs.append(key)
    means: dict[tuple[str, int], torch.Tensor] = {}
    if spec["mode"] == "mean":
        sites = [("o_proj_in", layer) for layer in heads] + outputs
        device = model.get_input_embeddings().weight.device
        with torch.inference_mode(), recording(model, sites) as seen:
            model.get_decoder()(input_ids=torch.tensor([parent_ids], device=device), use_cache=False)
        means = {key: seen[key][0].float().mean(0) for key in sites}  # (width,) over the parent's positions
    specs = []
    for layer, hs in sorted(heads.items()):
        mean = means.get(("o_proj_in", layer))
        values = {h: None if mean is None else mean[h * d:(h + 1) * d] for h in sorted(hs)}
        specs.append(("o_proj_in", layer, replace_heads(values, d)))
    for site, layer in outputs:
        specs.append((site, layer, replace_output(means.get((site, layer)))))
    return specs


def steering_hooks(spec: dict) -> list:
    vector = torch.tensor(spec["vector"]["values"], dtype=torch.float32)
    return [("resid_in", spec["layer"], add_direction(vector, spec["alpha"], spec["from_position"]))]


# ---- intervention runs ----------------------------------------------------------------------------
def teacher_forced(model, prompt_ids: list[int], forced: list[int], params: GenerationParams,
                   top_k_record: int, finish_reason: str) -> DecodeResult:
    """What `decode` records for prompt + forced tokens, in one forward pass (every token is
    known): teacher-forced statistics for the prompt, sampled-step statistics (the distributions
    each forced token would have been sampled from) for the rest."""
    if params.seed is None:
        params.seed = secrets.randbelow(2**31)
    base = model.get_decoder()
    device = model.get_input_embeddings().weight.device
    vocab = int(model.get_output_embeddings().weight.shape[0])
    ids = list(prompt_ids) + list(forced)
    n, n_prompt = len(ids), len(prompt_ids)
    rec = _Recorder(n, min(top_k_record, vocab))
    gen = torch.Generator(device="cpu").manual_seed(int(params.seed))
    started = time.perf_counter()
    with torch.inference_mode(), final_norm_input(base) as pre_norm:
        out = base(input_ids=torch.tensor([ids], device=device), use_cache=False, output_hidden_states=True)
        hidden = torch.stack([h[0] for h in out.hidden_states])  # (L+1, T, H)
        residual = pre_norm.pop()[0].clone() if pre_norm else None  # (T, H)
        final = out.last_hidden_state[0]  # (T, H)
        nxt = torch.tensor(ids[1:] + [0])
        for a in range(0, n - 1, PROMPT_CHUNK):
            b = min(n - 1, a + PROMPT_CHUNK)  # rows a..b-1 predict positions a+1..b
            logits = logits_from_hidden(model, final[a:b]).cpu()  # (c, V)
            tf_end = max(a, min(b, n_prompt - 1))  # rows predicting prompt positions
            if tf_end > a:
                rec.teacher_forced(slice(a + 1, tf_end + 1), logits[: tf_end - a], nxt[a:tf_end])
            for r in range(tf_end, b):
                rec.sampled(r + 1, logits[r - a], params, gen, ids[r + 1])
        del out, final
    return DecodeResult(ids=ids, num_prompt=n_prompt, stats=rec.finish(n), hidden=hidden, finish_reason=finish_reason,
                        params=params, generate_s=time.perf_counter() - started, step_s=[], final_residual=residual)


def rerun_plan(parent: Run, free: bool) -> tuple[Prompt, GenerationParams, list[int], str]:
    """(prompt, params, forced ids, finish reason when teacher-forced) to re-run `parent`."""
    p = parent.params
    prompt = Prompt(list(parent.ids[: parent.num_prompt]), list(parent.segments[: parent.num_prompt]), "",
                    bool(p.get("use_chat_template")))
    generated = list(parent.ids[parent.num_prompt:])
    if free:
        forced = []
        if parent.kind == "fork" and parent.links.get("fork_position") is not None:  # the fork's own token stays
            forced = list(parent.ids[parent.num_prompt: int(parent.links["fork_position"]) + 1])
        new = int(p.get("max_new_tokens") or len(generated) or 1)
        new = max(new, len(forced))
    else:
        forced, new = generated, len(generated)
    params = GenerationParams(float(p.get("temperature", 0.0)), int(p.get("top_k", 0)), float(p.get("top_p", 1.0)),
                              new, p.get("seed"))
    finish = parent.finish_reason if parent.finish_reason in ("eos", "length", "scored") else "length"
    return prompt, params, forced, finish


def run_intervention(eng, parent: Run, spec: dict, make_hooks) -> Run:
    """Re-run `parent` with the hooks `make_hooks()` returns (called under the model lock) and
    store the result as a linked run of kind "intervention"."""
    prompt, params, forced, finish = rerun_plan(parent, spec["free"])
    job = eng._admit(Job(new_run_id(), prompt, params, prompt.chat, kind="intervention", forced=forced or None))
    try:
        with eng.lm.lock:
            job.status = "running"
            model = eng.lm.model
            with hooks(model, make_hooks(model)):
                if job.cancel.is_set():
                    raise Cancelled(f"run_id: intervention run {job.id} was cancelled before it started")
                if spec["free"]:
                    result = decode(model, prompt.ids, params, eng.stop_ids, eng.config.max_top_n,
                                    should_stop=job.cancel.is_set, forced=forced or None)
                else:
                    result = teacher_forced(model, prompt.ids, forced, params, eng.config.max_top_n, finish)
    except (BadRequest, Cancelled):
        job.status = "failed"
        raise
    except Exception as exc:
        job.status = "failed"
        job.error = f"{type(exc).__name__}: {str(exc)[:200]}"
        eng.store.put(FailedRun(job.id, job.error))
        raise GenerationFailed(f"intervention failed: {job.error}", run_id=job.id) from exc
    finally:
        eng.jobs.finish(job.id)
    gen_count = len(result.ids) - result.num_prompt
    run = Run(
        id=job.id, model_name=eng.lm.name,
        params=result.params.as_dict() | {"use_chat_template": prompt.chat},
        ids=result.ids, num_prompt=result.num_prompt,
        segments=think_segments(eng.texts.texts(result.ids), list(prompt.segments) + ["assistant"] * gen_count),
        result=result, finish_reason=result.finish_reason, timing={},
        attention_budget=eng.config.attention_cache_bytes,
        status="cancelled" if result.finish_reason == "cancelled" else "done",
        kind="intervention", links={"parent_id": parent.id, "intervention": spec},
    )
    parent.children.append(run.id)
    eng.store.put(run)
    release_freed_memory()
    job.status = run.status
    run.timing = {"generate_s": result.generate_s,
                  "tokens_per_s": gen_count / result.generate_s if result.generate_s > 0 else None}
    for hook in eng.on_run_stored:
        hook(run)
        hook(parent)
    return run


def plain_prompt_ids(tokenizer, text: str, use_chat_template: bool = False, system: str | None = None) -> Prompt:
    """A text tokenized as POST /api/tokenize and the patching texts are: the plain text, or the user
    message (after `system`) with the chat template and its generation prompt."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    if use_chat_template and not getattr(tokenizer, "chat_template", None):
        raise BadRequest("use_chat_template", "this model's tokenizer has no chat template")
    return build_prompt(tokenizer, messages, use_chat_template, generation_prompt=True)


def steering_vector(model, tokenizer, layer: int, source: dict, dims: dict) -> dict:
    """The vector v of a steering request (not yet scaled by alpha), with what it came from.

    mean_diff: mean over the positive prompts of their last token's state at `layer` (the input
    of decoder layer `layer`) minus the same mean over the negative prompts; token: the token's
    row of the LM head; raw: as given."""
    if not isinstance(source, dict):
        raise BadRequest("vector", "is required and must be an object {source, ...}")
    kind = source.get("source")
    out = {"source": kind}
    if kind == "raw":
        values = torch.tensor(check_values(source.get("values"), dims, "vector.values"), dtype=torch.float32)
    elif kind == "token":
        weight = model.get_output_embeddings().weight
        if source.get("token") is not None and source.get("token_id") is None:
            out["token_id"] = single_token(tokenizer, source["token"], int(weight.shape[0]), "vector.token")
        else:
            out["token_id"] = _int(source.get("token_id"), "vector.token_id", 0, int(weight.shape[0]) - 1)
        values = weight[out["token_id"]].detach().float().cpu().clone()
    elif kind == "mean_diff":
        sides = {}
        for side in ("positive", "negative"):
            prompts = check_prompts(source.get(side), f"vector.{side}")
            states = []
            for i, text in enumerate(prompts):
                ids = plain_prompt_ids(tokenizer, text).ids
                if not 1 <= len(ids) <= MAX_PROMPT_TOKENS:
                    raise BadRequest(f"vector.{side}[{i}]", f"must be 1 to {MAX_PROMPT_TOKENS} tokens, got {len(ids)}")
                device = model.get_input_embeddings().weight.device
                with torch.inference_mode(), recording(model, [("resid_in", layer)]) as seen:
                    model.get_decoder()(input_ids=torch.tensor([ids], device=device), use_cache=False)
                states.append(seen[("resid_in", layer)][0][-1].float().cpu())
            sides[side] = torch.stack(states).mean(0)
            out[side] = prompts
        values = sides["positive"] - sides["negative"]
    else:
        raise BadRequest("vector.source", f"must be one of {', '.join(VECTOR_SOURCES)}, got {str(kind)[:40]!r}")
    out["values"] = values
    return out


# ---- effects --------------------------------------------------------------------------------------
def effects(model, parent: Run, run: Run, align: str = "auto", top: int = 10, chunk: int = 128) -> dict:
    """Per aligned position: the parent token's log-prob under both runs, its change, and
    KL(parent || intervened) of the raw next-token distributions; a summary of the most affected.

    Positions are aligned as the diff aligns them (engine.views.align_runs): position by position
    for teacher-forced runs, by token edit distance after the common prefix for free ones.
    """
    used, pairs = align_runs(parent.ids, run.ids, align)
    rows = [(i, j) for i, j in pairs if i is not None and j is not None and i >= 1 and j >= 1]
    out = []
    with torch.inference_mode():
        for part, la, lb in aligned_logits(model, parent, run, rows, chunk):
            lp, lq = torch.log_softmax(la, -1), torch.log_softmax(lb, -1)
            kls, floored = kl_logp(lp, lq)
            tok = torch.tensor([parent.ids[i] for i, _ in part])
            lp_tok = lp.gather(1, tok.unsqueeze(1)).squeeze(1)
            lq_tok = lq.gather(1, tok.unsqueeze(1)).squeeze(1)
            for r, (i, j) in enumerate(part):
                same = parent.ids[i] == run.ids[j]
                out.append({"position": j, "parent_position": i, "token_id": int(parent.ids[i]), "same_token": same,
                            "logprob_parent": float(lp_tok[r]),
                            "logprob_intervened": float(lq_tok[r]) if same else None,
                            "delta_logprob": float(lq_tok[r] - lp_tok[r]) if same else None,
                            "kl": float(kls[r]), "kl_floored": bool(floored[r])})
    s = kl_summary([r["kl"] for r in out], [r["kl_floored"] for r in out])
    deltas = [abs(r["delta_logprob"]) for r in out if r["delta_logprob"] is not None]
    ranked = sorted(out, key=lambda r: (not r["kl_floored"], -r["kl"], -abs(r["delta_logprob"] or 0.0)))
    prefix = 0
    for a, b in zip(parent.ids, run.ids):
        if a != b:
            break
        prefix += 1
    same_all = prefix == min(parent.num_tokens, run.num_tokens) and parent.num_tokens == run.num_tokens
    return {"align": used, "divergence_position": None if same_all else prefix, "positions": out,
            "summary": {"num_positions": len(out), "num_measured": s["num_measured"], "num_floored": s["num_floored"],
                        "mean_kl": s["mean"], "max_kl": s["max"], "floored_lower_bound": s["floored_lower_bound"],
                        "mean_abs_delta_logprob": sum(deltas) / len(deltas) if deltas else None,
                        "top": ranked[:top]}}


# ---- activation patching --------------------------------------------------------------------------
def metric_value(logits: torch.Tensor, metric: dict) -> float:
    """The metric of one row of logits (V,): logits[a] - logits[b], or ln p(token)."""
    logits = logits.float()
    if metric["type"] == "logit_diff":
        return float(logits[metric["token_a"]] - logits[metric["token_b"]])
    return float(torch.log_softmax(logits, -1)[metric["token"]])


def _forward_last(model, ids: list[int], start: int, cache, specs) -> torch.Tensor:
    """Logits (V,) of the last of ids[start:], fed after `cache` (the states of ids[:start]) with hooks."""
    base = model.get_decoder()
    device = model.get_input_embeddings().weight.device
    with hooks(model, specs):
        out = base(input_ids=torch.tensor([ids[start:]], device=device), past_key_values=cache,
                   use_cache=cache is not None)
    return logits_from_hidden(model, out.last_hidden_state[0, -1]).cpu()


def _prefix_cache(model, ids: list[int], upto: int, cache=None, have: int = 0):
    """The KV cache of ids[:upto] (extending `cache`, which holds ids[:have]); None for upto = 0."""
    if upto == 0:
        return None
    base = model.get_decoder()
    device = model.get_input_embeddings().weight.device
    out = base(input_ids=torch.tensor([ids[have:upto]], device=device), past_key_values=cache, use_cache=True)
    return out.past_key_values


def patched_logits(model, ids: list[int], layer: int, states: torch.Tensor, start: int = 0) -> torch.Tensor:
    """(T, V) logits of a full forward over `ids` with the residual stream at `layer`, positions
    start .. start + len(states) - 1, replaced by `states` (N, H)."""
    base = model.get_decoder()
    device = model.get_input_embeddings().weight.device
    with torch.inference_mode(), hooks(model, [("resid_in", layer, set_rows(states, start))]):
        out = base(input_ids=torch.tensor([ids], device=device), use_cache=False)
        return logits_from_hidden(model, out.last_hidden_state[0]).cpu()


def clean_activations(model, ids: list[int], sweep: str):
    """One forward over the clean ids: every layer's residual input (L, T, H) or o_proj input
    (L, T, Hq*d), and the last row's logits."""
    n_layers = len(decoder_layers(model))
    site = "resid_in" if sweep == "residual" else "o_proj_in"
    base = model.get_decoder()
    device = model.get_input_embeddings().weight.device
    with recording(model, [(site, layer) for layer in range(n_layers)]) as seen:
        out = base(input_ids=torch.tensor([ids], device=device), use_cache=False)
    acts = torch.stack([seen[(site, layer)][0] for layer in range(n_layers)])
    return acts, logits_from_hidden(model, out.last_hidden_state[0, -1]).cpu()


def _forward_last_batch(model, ids: list[int], start: int, cache, specs, batch: int) -> torch.Tensor:
    """Logits (B, V) of the last of ids[start:], fed `batch` times after a copy of `cache` (the
    states of ids[:start], repeated over the batch), with hooks that patch each batch row."""
    base = model.get_decoder()
    device = model.get_input_embeddings().weight.device
    copy_of = None
    if cache is not None:
        copy_of = copy.deepcopy(cache)
        if batch > 1:
            copy_of.batch_repeat_interleave(batch)
    with hooks(model, specs):
        out = base(input_ids=torch.tensor([ids[start:]] * batch, device=device), past_key_values=copy_of,
                   use_cache=copy_of is not None)
    return logits_from_hidden(model, out.last_hidden_state[:, -1]).cpu()


def _batch_size(model, tokens: int) -> int:
    """Patched forwards run together: as many as keep one batch near PATCH_BATCH_TOKENS tokens."""
    return max(1, min(PATCH_MAX_BATCH, PATCH_BATCH_TOKENS // max(1, tokens)))


def _patch_rows(values_by_row: dict[int, torch.Tensor]):
    """A resid_in fn putting values_by_row[b] (H,) in batch row b's first position."""
    def fn(x, positions):
        x = x.clone()
        for b, v in values_by_row.items():
            x[b, 0] = v.to(device=x.device, dtype=x.dtype)
        return x
    return fn


def _patch_head_rows(cells: dict[int, tuple[int, torch.Tensor]], head_dim: int, first_row_only: bool):
    """An o_proj_in fn putting, in batch row b, head h's slice from cells[b] = (h, values (S, d) or (d,))."""
    def fn(x):
        x = x.clone()
        rows = slice(0, 1) if first_row_only else slice(None)
        for b, (h, v) in cells.items():
            x[b, rows, h * head_dim:(h + 1) * head_dim] = v.to(device=x.device, dtype=x.dtype)
        return x
    return fn


def patch_sweep(eng, clean_ids: list[int], corrupted_ids: list[int], metric: dict, sweep: str,
                head_position, job=None) -> dict:
    """The patching sweep: values (L, T) or (L, Hq) of the metric with one clean activation patched
    into the corrupted forward, and the clean and corrupted metrics.

    Cells that share a start position run as one batch (batch row b patches cell b), from a copy
    of the corrupted prefix's KV cache. The model lock is taken per batch; `job` (a ReadJob)
    counts cells done and is polled for cancellation between batches.
    """
    m = metric["position"]
    ids_c, ids_x = clean_ids[: m + 1], corrupted_ids[: m + 1]  # later tokens cannot change the metric
    t = len(clean_ids)
    lock = eng.lm.lock

    def check_cancel():
        if job is not None and job.cancel.is_set():
            job.status = "cancelled"
            raise Cancelled(f"job_id: job {job.id} was cancelled after {job.done} of {job.total} cells")

    def tick(k: int = 1):
        if job is not None:
            job.done += k

    def chunks(items, size):
        return [items[i:i + size] for i in range(0, len(items), size)]

    t0 = time.perf_counter()
    with lock, torch.inference_mode():
        model = eng.lm.model
        acts, clean_logits = clean_activations(model, ids_c, sweep)
        corrupt_logits = _forward_last(model, ids_x, 0, None, [])
    clean_metric, corrupt_metric = metric_value(clean_logits, metric), metric_value(corrupt_logits, metric)
    n_layers = int(acts.shape[0])
    if sweep == "residual":
        values = np.full((n_layers, t), corrupt_metric, dtype=np.float64)
        cache = None
        tick(n_layers * (t - m - 1))  # positions after the metric's: exactly the corrupted value
        for p in range(m + 1):
            for group in chunks(list(range(n_layers)), _batch_size(eng.lm.model, m + 1)):
                check_cancel()
                with lock, torch.inference_mode():
                    model = eng.lm.model
                    specs = [("resid_in", layer, _patch_rows({b: acts[layer, p]})) for b, layer in enumerate(group)]
                    logits = _forward_last_batch(model, ids_x, p, cache, specs, len(group))
                for b, layer in enumerate(group):
                    values[layer, p] = metric_value(logits[b], metric)
                tick(len(group))
            if p < m:
                with lock, torch.inference_mode():
                    cache = _prefix_cache(eng.lm.model, ids_x, p + 1, cache, p)
    else:
        d = head_dim_of(eng.lm.model)
        n_heads = int(acts.shape[2]) // d
        values = np.full((n_layers, n_heads), corrupt_metric, dtype=np.float64)
        if head_position != "all" and head_position > m:
            tick(n_layers * n_heads)  # the metric's row comes before the patched one
        else:
            q = 0 if head_position == "all" else int(head_position)
            with lock, torch.inference_mode():
                cache = _prefix_cache(eng.lm.model, ids_x, q)
            cells = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
            for group in chunks(cells, _batch_size(eng.lm.model, m + 1)):
                check_cancel()
                by_layer: dict[int, dict[int, tuple[int, torch.Tensor]]] = {}
                for b, (layer, h) in enumerate(group):
                    sl = slice(h * d, (h + 1) * d)
                    v = acts[layer, :, sl] if head_position == "all" else acts[layer, q, sl]
                    by_layer.setdefault(layer, {})[b] = (h, v)
                specs = [("o_proj_in", layer, _patch_head_rows(c, d, head_position != "all")) for layer, c in by_layer.items()]
                with lock, torch.inference_mode():
                    logits = _forward_last_batch(eng.lm.model, ids_x, q, cache, specs, len(group))
                for b, (layer, h) in enumerate(group):
                    values[layer, h] = metric_value(logits[b], metric)
                tick(len(group))
    return {"values": values, "clean_metric": clean_metric, "corrupted_metric": corrupt_metric,
            "compute_s": time.perf_counter() - t0}


def normalized(values: np.ndarray, clean: float, corrupted: float) -> np.ndarray | None:
    """(values - corrupted) / (clean - corrupted): 1 = clean, 0 = corrupted; None when they are equal."""
    span = clean - corrupted
    if span == 0 or not math.isfinite(span):
        return None
    return (values - corrupted) / span
