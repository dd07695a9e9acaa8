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

from llmvis.core.errors import BadRequest
from llmvis.core.segments import SEGMENTS
from llmvis.engine.decode import DecodeResult, GenerationParams, StepStats
from llmvis.engine.run import Run, new_run_id

FORMAT = "llmvis-run"
VERSION = 1
SUFFIX = ".llmvis"
RUN_ID_RE = re.compile(r"^[0-9a-f]{8,32}$")  # run ids are hex; nothing else may reach a path
MAX_HEADER_BYTES = 64 << 20
SKIP_RUN_FIELDS = {"result", "attention_budget"}  # rebuilt on load; *_cache fields are never saved
RUN_KINDS = {"generate", "fork", "score"}
LINK_KEYS = {"parent_id", "fork_position", "forced_token_id"}
HIDDEN_DTYPES = {torch.float32, torch.float16, torch.bfloat16}


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


def bundle_header(data: bytes) -> dict:
    """The bundle's parsed `meta` (no tensors read); BadRequest('bundle', ...) if it is not one."""
    if len(data) < 8:
        raise BadRequest("bundle", "is not a llmvis bundle (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise BadRequest("bundle", "is not a llmvis bundle (bad header length)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("bundle", "is not a llmvis bundle (header is not JSON)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadRequest("bundle", "is not a llmvis bundle (no llmvis-run metadata)")
    if meta.get("version") != str(VERSION):
        raise BadRequest("bundle", f"has format version {str(meta.get('version'))[:10]!r}; this llmvis reads {VERSION}")
    try:
        doc = json.loads(meta.get("meta", ""))
    except json.JSONDecodeError:
        raise BadRequest("bundle", "has unreadable metadata") from None
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


def read_bundle(data: bytes, model_info: dict, run_id: str | None = None, attention_budget: int = 512 << 20,
                dtype: torch.dtype | None = None):
    """Parse and validate bundle bytes into (Run, meta) for the loaded model described by model_info.

    run_id replaces the bundle's id (e.g. when that id is taken); dtype casts the hidden states
    (they must match the model's dtype for attention to be recomputed).
    """

    meta = bundle_header(data)
    check_model(meta, model_info)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise BadRequest("bundle", f"has unreadable tensors ({str(exc)[:120]})") from None
    return build_run(meta, tensors, model_info, run_id, attention_budget, dtype), meta


def build_run(meta: dict, tensors: dict, model_info: dict, run_id: str | None = None,
              attention_budget: int = 512 << 20, dtype: torch.dtype | None = None):
    """A validated Run from bundle metadata and tensors."""
    want = {"ids", "hidden", "step_s"} | {f"stats.{n}" for n in StepStats.__dataclass_fields__}
    missing = sorted(want - set(tensors))
    if missing:
        _fail(f"lacks tensors {', '.join(missing)[:200]}")
    ids_t, hidden = tensors["ids"], tensors["hidden"]
    if ids_t.dtype != torch.int64 or ids_t.dim() != 1 or ids_t.numel() < 1:
        _fail("tensor ids must be a non-empty int64 vector")
    t = ids_t.numel()
    vocab = int(model_info["vocab_size"])
    if int(ids_t.min()) < 0 or int(ids_t.max()) >= vocab:
        _fail(f"token ids must be in [0, {vocab - 1}]")
    layers, size = int(model_info["num_layers"]) + 1, int(model_info["hidden_size"])
    if hidden.dtype not in HIDDEN_DTYPES or tuple(hidden.shape) != (layers, t, size):
        _fail(f"tensor hidden must be float of shape ({layers}, {t}, {size}); got {hidden.dtype} {tuple(hidden.shape)}"
              " (was it made with another model?)")
    if not torch.isfinite(hidden).all():
        _fail("tensor hidden holds NaN or infinite values")
    residual = tensors.get("final_residual")  # optional: bundles before it was recorded lack it
    if residual is not None:
        if residual.dtype not in HIDDEN_DTYPES or tuple(residual.shape) != (t, size):
            _fail(f"tensor final_residual must be float of shape ({t}, {size}); got {residual.dtype} {tuple(residual.shape)}")
        if not torch.isfinite(residual).all():
            _fail("tensor final_residual holds NaN or infinite values")
        if dtype is not None:
            residual = residual.to(dtype)
    kinds = {f.name: f for f in dataclasses.fields(StepStats)}
    stats = {}
    k = None
    for name in kinds:
        arr = tensors[f"stats.{name}"].numpy()
        if name.startswith("top_"):
            if arr.ndim != 2 or arr.shape[0] != t or (k is not None and arr.shape[1] != k):
                _fail(f"tensor stats.{name} must have shape ({t}, K)")
            k = arr.shape[1]
        elif arr.shape != (t,):
            _fail(f"tensor stats.{name} must have shape ({t},)")
        stats[name] = arr.copy()
    if stats["top_ids"].dtype.kind not in "iu" or stats["rank"].dtype.kind not in "iu":
        _fail("tensors stats.top_ids and stats.rank must be integers")
    if stats["top_ids"].size and (stats["top_ids"].max() >= vocab or stats["top_ids"].min() < -1):
        _fail("tensor stats.top_ids holds ids outside the vocabulary")
    for name, arr in stats.items():
        if arr.dtype.kind not in "iuf":
            _fail(f"tensor stats.{name} must be numeric")

    fields, res = meta["run"], meta["result"]
    num_prompt = _num(fields.get("num_prompt"), "run.num_prompt", lo=1, hi=t, integer=True)
    segments = fields.get("segments")
    if not isinstance(segments, list) or len(segments) != t or not all(s in SEGMENTS for s in segments):
        _fail(f"field run.segments must be {t} of {', '.join(sorted(SEGMENTS))}")
    p = res.get("params")
    if not isinstance(p, dict):
        _fail("field result.params must be an object")
    params = GenerationParams(
        temperature=float(_num(p.get("temperature"), "params.temperature", lo=0, hi=100)),
        top_k=_num(p.get("top_k"), "params.top_k", lo=0, integer=True),
        top_p=float(_num(p.get("top_p"), "params.top_p", lo=0, hi=1)),
        max_new_tokens=_num(p.get("max_new_tokens"), "params.max_new_tokens", lo=0, integer=True),
        seed=_num(p.get("seed"), "params.seed", lo=0, integer=True, optional=True),
    )
    run_params = fields.get("params")
    if not isinstance(run_params, dict) or not _json_safe(run_params):
        _fail("field run.params must be an object")
    for name in ("finish_reason", "status", "model_name"):
        if not isinstance(fields.get(name), str) or len(fields[name]) > 200:
            _fail(f"field run.{name} must be a short string")
    timing = fields.get("timing", {})
    if not isinstance(timing, dict):
        _fail("field run.timing must be an object")
    if fields.get("kind", "generate") not in RUN_KINDS:
        _fail(f"field run.kind must be one of {', '.join(sorted(RUN_KINDS))}")
    links = fields.get("links", {})
    if not isinstance(links, dict) or not set(links) <= LINK_KEYS:
        _fail(f"field run.links must be an object with at most {', '.join(sorted(LINK_KEYS))}")
    if "parent_id" in links and not valid_run_id(links["parent_id"]):
        _fail("field run.links.parent_id must be a run id")
    for name in ("fork_position", "forced_token_id"):
        if name in links:
            _num(links[name], f"run.links.{name}", lo=0, integer=True)
    children = fields.get("children", [])
    if not isinstance(children, list) or len(children) > 10_000 or not all(valid_run_id(c) for c in children):
        _fail("field run.children must be a list of run ids")
    step_s = tensors["step_s"].double().tolist()
    result = DecodeResult(
        ids=ids_t.tolist(),
        num_prompt=_num(res.get("num_prompt"), "result.num_prompt", lo=1, hi=t, integer=True),
        stats=StepStats(**stats),
        hidden=hidden if dtype is None else hidden.to(dtype),
        finish_reason=str(res.get("finish_reason", fields["finish_reason"]))[:200],
        params=params,
        generate_s=float(_num(res.get("generate_s", 0.0), "result.generate_s", lo=0)),
        step_s=step_s,
        final_residual=residual,
    )
    known = {f.name for f in dataclasses.fields(Run)}
    kwargs = {name: value for name, value in fields.items() if name in known and name not in SKIP_RUN_FIELDS}
    if "created" in kwargs:
        kwargs["created"] = float(_num(kwargs["created"], "run.created", lo=0))
    kwargs.update(id=run_id or fields.get("id"), num_prompt=num_prompt, segments=list(segments),
                  ids=result.ids, result=result, timing=timing, attention_budget=attention_budget)
    if not valid_run_id(kwargs["id"]):
        kwargs["id"] = new_run_id()
    try:
        return Run(**kwargs)
    except TypeError as exc:
        raise BadRequest("bundle", f"has fields this llmvis cannot use ({str(exc)[:120]})") from None


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
