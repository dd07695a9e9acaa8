"""The `.llmvis` bundle: one run as one file, used for history, export/import and the Python API.

A bundle is a safetensors file. Its tensors are the run's arrays (ids, every StepStats array, the
hidden states in the model's own dtype, per-step timings); its header's `__metadata__` holds
`format`, `version` and `meta`, a JSON document with everything else (params, segments, timing,
finish reason, model info, title). safetensors never unpickles anything, so an untrusted bundle
can at worst be rejected; `read_bundle` validates every shape, dtype and field before a Run is
built from it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import time

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from llmvis.core import jsondoc
from llmvis.core.errors import BadRequest
from llmvis.core.segments import SEGMENTS
from llmvis.engine.decode import DecodeResult, GenerationParams, StepStats
from llmvis.engine.intervene import check_spec
from llmvis.engine.run import Run, new_run_id

FORMAT = "llmvis-run"
VERSION = 1
SUFFIX = ".llmvis"
RUN_ID_RE = re.compile(r"^[0-9a-f]{8,32}$")  # run ids are hex; nothing else may reach a path
MAX_HEADER_BYTES = 64 << 20
SKIP_RUN_FIELDS = {"result", "attention_budget", "saved", "save_error"}  # rebuilt on load; *_cache never saved
MAX_TOKENS = 1 << 20      # tokens a bundle may hold (the store budget bounds it further)
MAX_TOP_K = 1024          # alternatives per position
MAX_FUTURE_S = 86_400     # `created` may be at most a day ahead of this clock
FLOAT32 = {"F32"}
TENSOR_DTYPES = {         # every tensor a bundle may hold, with the dtypes it may have
    "ids": {"I64"}, "hidden": {"F32", "F16", "BF16"}, "final_residual": {"F32", "F16", "BF16"}, "step_s": {"F64"},
    "stats.prob": FLOAT32, "stats.rank": {"I64"}, "stats.entropy": FLOAT32, "stats.sample_prob": FLOAT32,
    "stats.sample_entropy": FLOAT32, "stats.cut_mass": FLOAT32, "stats.top_ids": {"I32"},
    "stats.top_probs": FLOAT32, "stats.top_sample": FLOAT32,
}
OPTIONAL_TENSORS = {"final_residual"}  # bundles saved before it was recorded lack it
FINISH_REASONS = {"eos", "length", "cancelled", "scored"}
STATUSES = {"done", "cancelled"}
TIMING_KEYS = {"generate_s", "tokens_per_s", "analysis_s"}
PARAM_KEYS = {"temperature", "top_k", "top_p", "max_new_tokens", "seed", "use_chat_template"}
RUN_KINDS = {"generate", "fork", "score", "intervention"}
LINK_KEYS = {"parent_id", "fork_position", "forced_token_id", "intervention"}  # intervention: its spec (issue 15)


def valid_run_id(run_id) -> bool:
    return isinstance(run_id, str) and bool(RUN_ID_RE.match(run_id))


def check_run_id(run_id, field_name: str = "run_id") -> str:
    """A run id that is safe to use in a file name, or BadRequest naming the field."""
    if not valid_run_id(run_id):
        raise BadRequest(field_name, "must be 8 to 32 lowercase hex characters")
    return run_id


def _json_safe(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def run_meta(run, model_info: dict, title: str | None = None, model_spec: str | None = None) -> dict:
    """Everything about a run that is not an array, as one JSON-able dict."""
    fields = {}
    for f in dataclasses.fields(Run):
        if f.name in SKIP_RUN_FIELDS or f.name.endswith("_cache"):
            continue
        value = getattr(run, f.name)
        if _json_safe(value):
            fields[f.name] = value
    res = run.result
    return {
        "run": fields,
        "result": {
            "num_prompt": res.num_prompt,
            "finish_reason": res.finish_reason,
            "params": res.params.as_dict(),
            "generate_s": res.generate_s,
        },
        "model": dict(model_info),
        "model_spec": model_spec,
        "title": title,
        "saved_at": time.time(),
    }


def run_tensors(run) -> dict[str, torch.Tensor]:
    """The run's arrays, by name (contiguous CPU tensors)."""
    res = run.result
    out = {
        "ids": torch.tensor(run.ids, dtype=torch.int64),  # (T,)
        "hidden": res.hidden.detach().to("cpu").contiguous(),  # (L+1, T, H) model dtype
        "step_s": torch.tensor(res.step_s, dtype=torch.float64),  # (steps,)
    }
    if res.final_residual is not None:
        out["final_residual"] = res.final_residual.detach().to("cpu").contiguous()  # (T, H) model dtype
    for name, arr in res.stats.__dict__.items():
        out[f"stats.{name}"] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


def dump_bundle(run, model_info: dict, title: str | None = None, model_spec: str | None = None) -> bytes:
    """Serialise a run to bundle bytes."""
    meta = run_meta(run, model_info, title, model_spec)
    header = {"format": FORMAT, "version": str(VERSION), "meta": json.dumps(meta, allow_nan=False)}
    return save(run_tensors(run), metadata=header)


def _raw_header(data: bytes) -> dict:
    """The safetensors header (tensor index + `__metadata__`), parsed with bounded nesting."""
    if len(data) < 8:
        raise BadRequest("bundle", "is not a llmvis bundle (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise BadRequest("bundle", "is not a llmvis bundle (bad header length)")
    try:
        header = jsondoc.loads(data[8 : 8 + n])
    except jsondoc.JsonError as exc:
        raise BadRequest("bundle", f"is not a llmvis bundle (its header {exc})") from None
    if not isinstance(header, dict):
        raise BadRequest("bundle", "is not a llmvis bundle (header is not an object)")
    return header


def bundle_header(data: bytes) -> dict:
    """The bundle's parsed `meta` (no tensors read); BadRequest('bundle', ...) if it is not one."""
    meta = _raw_header(data).get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadRequest("bundle", "is not a llmvis bundle (no llmvis-run metadata)")
    if meta.get("version") != str(VERSION):
        raise BadRequest("bundle", f"has format version {str(meta.get('version'))[:10]!r}; this llmvis reads {VERSION}")
    if not isinstance(meta.get("meta"), str):
        raise BadRequest("bundle", "has unreadable metadata (meta must be a JSON string)")
    try:
        doc = jsondoc.loads(meta["meta"])
    except jsondoc.JsonError as exc:
        raise BadRequest("bundle", f"has unreadable metadata (it {exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("run"), dict) or not isinstance(doc.get("result"), dict):
        raise BadRequest("bundle", "has incomplete metadata (run/result missing)")
    return doc


def _fail(problem: str):
    raise BadRequest("bundle", problem)


def _num(value, name: str, *, lo=None, hi=None, integer=False, optional=False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        _fail(f"field {name} must be {'an integer' if integer else 'a number'}")
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(f"field {name} is out of range")
    return value


def _short_str(value, name: str, choices=None) -> str:
    if not isinstance(value, str) or len(value) > 200 or (choices is not None and value not in choices):
        _fail(f"field {name} must be " + (f"one of {', '.join(sorted(choices))}" if choices else "a short string"))
    return value


def check_tensor_index(data: bytes, model_info: dict) -> int:
    """Check the header's tensor index before any tensor is read: every name known, every dtype
    and shape the one this model's run of T tokens has, nothing else. Returns T.

    So a bundle can never make the server hold more than the run it declares (which the caller
    counts against the store budget), whatever its tensors claim to be.
    """
    index = {k: v for k, v in _raw_header(data).items() if k != "__metadata__"}
    unknown = sorted(set(index) - set(TENSOR_DTYPES))
    if unknown:
        _fail(f"has unknown tensors {', '.join(map(str, unknown))[:200]}")
    missing = sorted(set(TENSOR_DTYPES) - set(index) - OPTIONAL_TENSORS)
    if missing:
        _fail(f"lacks tensors {', '.join(missing)[:200]}")
    shapes = {}
    for name, entry in index.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) \
                or entry["dtype"] not in TENSOR_DTYPES[name]:
            _fail(f"tensor {name} must be {' or '.join(sorted(TENSOR_DTYPES[name]))}")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d for d in shape):
            _fail(f"tensor {name} has a malformed shape")
        shapes[name] = tuple(shape)
    if len(shapes["ids"]) != 1 or not 1 <= shapes["ids"][0] <= MAX_TOKENS:
        _fail(f"tensor ids must be a vector of 1 to {MAX_TOKENS} token ids")
    t = shapes["ids"][0]
    layers, size = int(model_info["num_layers"]) + 1, int(model_info["hidden_size"])
    want = {"hidden": (layers, t, size), "final_residual": (t, size)}
    for name in StepStats.__dataclass_fields__:
        want[f"stats.{name}"] = (t,)
    k = shapes["stats.top_ids"][1] if len(shapes["stats.top_ids"]) == 2 else -1
    if not 1 <= k <= MAX_TOP_K:
        _fail(f"tensor stats.top_ids must have shape ({t}, K) with K in [1, {MAX_TOP_K}]")
    for name in ("stats.top_ids", "stats.top_probs", "stats.top_sample"):
        want[name] = (t, k)
    for name, shape in want.items():
        if name in shapes and shapes[name] != shape:
            _fail(f"tensor {name} must have shape {shape}; got {shapes[name]} (was it made with another model?)")
    if len(shapes["step_s"]) != 1 or shapes["step_s"][0] > t:
        _fail(f"tensor step_s must be a vector of at most {t} step times")
    return t


def read_bundle(data: bytes, model_info: dict, run_id: str | None = None, attention_budget: int = 512 << 20,
                dtype: torch.dtype | None = None):
    """Parse and validate bundle bytes into (Run, meta) for the loaded model described by model_info.

    run_id replaces the bundle's id (an import always gives a fresh one); dtype casts the hidden
    states (they must match the model's dtype for attention to be recomputed).
    """
    meta = bundle_header(data)
    check_model(meta, model_info)
    check_tensor_index(data, model_info)  # before load(): nothing undeclared is ever materialised
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise BadRequest("bundle", f"has unreadable tensors ({str(exc)[:120]})") from None
    return build_run(meta, tensors, model_info, run_id, attention_budget, dtype), meta


def _check_stats(stats: dict, vocab: int) -> None:
    """Statistics in their ranges: probabilities in [0, 1], entropies >= 0, ranks and ids in the
    vocabulary; NaN only where a value is undefined (position 0, prompt sampling), never Infinity."""
    for name, arr in stats.items():
        if arr.dtype.kind == "f" and np.isinf(arr).any():
            _fail(f"tensor stats.{name} holds infinite values")
    for name in ("prob", "sample_prob", "cut_mass", "top_probs", "top_sample"):
        a = stats[name]
        if ((a < 0) | (a > 1 + 1e-4)).any():  # NaN compares False: allowed
            _fail(f"tensor stats.{name} must hold probabilities in [0, 1]")
    for name in ("entropy", "sample_entropy"):
        if (stats[name] < 0).any():
            _fail(f"tensor stats.{name} must hold entropies >= 0")
    if ((stats["rank"] < -1) | (stats["rank"] > vocab)).any():
        _fail(f"tensor stats.rank must hold ranks in [1, {vocab}] (or -1)")
    for name in ("prob", "entropy", "top_probs"):  # every position after the first was predicted
        if np.isnan(stats[name][1:]).any():
            _fail(f"tensor stats.{name} holds NaN at a predicted position")
    if (stats["rank"][1:] < 1).any():
        _fail("tensor stats.rank must be >= 1 at every predicted position")
    if stats["top_ids"].size and (stats["top_ids"].max() >= vocab or stats["top_ids"].min() < -1):
        _fail("tensor stats.top_ids holds ids outside the vocabulary")


def _check_params(p, name: str) -> dict:
    if not isinstance(p, dict) or not set(p) <= PARAM_KEYS:
        _fail(f"field {name} must be an object with at most {', '.join(sorted(PARAM_KEYS))}")
    for key, value in p.items():
        if value is not None and not isinstance(value, bool):
            _num(value, f"{name}.{key}", lo=0, hi=2**63)
    return p


def build_run(meta: dict, tensors: dict, model_info: dict, run_id: str | None = None,
              attention_budget: int = 512 << 20, dtype: torch.dtype | None = None):
    """A validated Run from bundle metadata and (already index-checked) tensors."""
    missing = sorted(set(TENSOR_DTYPES) - set(tensors) - OPTIONAL_TENSORS)
    if missing:
        _fail(f"lacks tensors {', '.join(missing)[:200]}")
    ids_t, hidden = tensors["ids"], tensors["hidden"]
    t = ids_t.numel()
    vocab = int(model_info["vocab_size"])
    if int(ids_t.min()) < 0 or int(ids_t.max()) >= vocab:
        _fail(f"token ids must be in [0, {vocab - 1}]")
    if not torch.isfinite(hidden).all():
        _fail("tensor hidden holds NaN or infinite values")
    residual = tensors.get("final_residual")  # optional: bundles before it was recorded lack it
    if residual is not None:
        if not torch.isfinite(residual).all():
            _fail("tensor final_residual holds NaN or infinite values")
        if dtype is not None:
            residual = residual.to(dtype)
    stats = {name: tensors[f"stats.{name}"].numpy().copy() for name in StepStats.__dataclass_fields__}
    _check_stats(stats, vocab)
    step_s = tensors["step_s"]
    if not torch.isfinite(step_s).all() or bool((step_s < 0).any()):
        _fail("tensor step_s must hold finite times >= 0")

    fields, res = meta["run"], meta["result"]
    num_prompt = _num(fields.get("num_prompt"), "run.num_prompt", lo=1, hi=t, integer=True)
    segments = fields.get("segments")
    if not isinstance(segments, list) or len(segments) != t or not all(isinstance(s, str) and s in SEGMENTS for s in segments):
        _fail(f"field run.segments must be {t} of {', '.join(sorted(SEGMENTS))}")
    p = res.get("params")
    if not isinstance(p, dict):
        _fail("field result.params must be an object")
    params = GenerationParams(
        temperature=float(_num(p.get("temperature"), "params.temperature", lo=0, hi=100)),
        top_k=_num(p.get("top_k"), "params.top_k", lo=0, hi=2**31, integer=True),
        top_p=float(_num(p.get("top_p"), "params.top_p", lo=0, hi=1)),
        max_new_tokens=_num(p.get("max_new_tokens"), "params.max_new_tokens", lo=0, hi=MAX_TOKENS, integer=True),
        seed=_num(p.get("seed"), "params.seed", lo=0, hi=2**63, integer=True, optional=True),
    )
    run_params = _check_params(fields.get("params"), "run.params")
    _short_str(fields.get("model_name"), "run.model_name")
    _short_str(fields.get("finish_reason"), "run.finish_reason", FINISH_REASONS)
    _short_str(fields.get("status", "done"), "run.status", STATUSES)
    timing = fields.get("timing", {})
    if not isinstance(timing, dict) or not set(timing) <= TIMING_KEYS:
        _fail(f"field run.timing must be an object with at most {', '.join(sorted(TIMING_KEYS))}")
    for key, value in timing.items():
        _num(value, f"run.timing.{key}", lo=0, hi=1e12, optional=True)
    _short_str(fields.get("kind", "generate"), "run.kind", RUN_KINDS)  # a string first: a list is unhashable
    links = fields.get("links", {})
    if not isinstance(links, dict) or not set(links) <= LINK_KEYS:
        _fail(f"field run.links must be an object with at most {', '.join(sorted(LINK_KEYS))}")
    if "parent_id" in links and not valid_run_id(links["parent_id"]):
        _fail("field run.links.parent_id must be a run id")
    for name in ("fork_position", "forced_token_id"):
        if name in links:
            _num(links[name], f"run.links.{name}", lo=0, hi=2**31, integer=True)
    kind = fields.get("kind", "generate")
    if (kind == "intervention") != ("intervention" in links) or (kind == "intervention" and "parent_id" not in links):
        _fail("field run.links.intervention and parent_id belong to (and only to) runs of kind intervention")
    if "intervention" in links:  # strict: exactly the spec this llmvis records, in this model's ranges
        try:
            links["intervention"] = check_spec(links["intervention"], model_info, "run.links.intervention")
        except BadRequest as exc:
            _fail(f"field {exc}"[:300])
    children = fields.get("children", [])
    if not isinstance(children, list) or len(children) > 10_000 or not all(valid_run_id(c) for c in children):
        _fail("field run.children must be a list of run ids")
    created = float(_num(fields.get("created", time.time()), "run.created", lo=0, hi=time.time() + MAX_FUTURE_S))
    result = DecodeResult(
        ids=ids_t.tolist(),
        num_prompt=_num(res.get("num_prompt"), "result.num_prompt", lo=1, hi=t, integer=True),
        stats=StepStats(**stats),
        hidden=hidden if dtype is None else hidden.to(dtype),
        finish_reason=_short_str(res.get("finish_reason", fields["finish_reason"]), "result.finish_reason", FINISH_REASONS),
        params=params,
        generate_s=float(_num(res.get("generate_s", 0.0), "result.generate_s", lo=0, hi=1e12)),
        step_s=step_s.double().tolist(),
        final_residual=residual,
    )
    rid = run_id or fields.get("id")
    # only these fields come from the bundle; the caches and the budget are the server's own
    return Run(id=rid if valid_run_id(rid) else new_run_id(), model_name=fields["model_name"], params=dict(run_params),
               ids=result.ids, num_prompt=num_prompt, segments=list(segments), result=result,
               finish_reason=fields["finish_reason"], timing=dict(timing), created=created,
               status=fields.get("status", "done"), kind=fields.get("kind", "generate"), links=dict(links),
               children=list(children), attention_budget=attention_budget)


def check_model(meta: dict, model_info: dict) -> None:
    """Refuse a bundle made with another model: its hidden states mean nothing to this one."""
    theirs = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    for key in ("name", "num_layers", "hidden_size", "vocab_size"):
        if theirs.get(key) != model_info.get(key):
            raise BadRequest(
                "bundle",
                f"was made with model {str(theirs.get('name'))[:80]!r} ({key}={str(theirs.get(key))[:20]}); "
                f"this server runs {model_info.get('name')!r} ({key}={model_info.get(key)})",
            )
