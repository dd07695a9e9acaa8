"""Validation of untrusted API input. Every failure raises BadRequest naming the field."""
from __future__ import annotations

import math
import re

from llmvis.core.errors import BadRequest
from llmvis.engine.decode import GenerationParams

ROLES = ("system", "user", "assistant")
ASCII_INT = re.compile(r"-?[0-9]{1,18}")  # int() would also take "+1", " 1", "1_0" and fullwidth digits


def strict_int(raw: str) -> int:
    """ASCII digits with an optional leading minus; ValueError otherwise."""
    if not ASCII_INT.fullmatch(raw):
        raise ValueError(raw)
    return int(raw)


def _number(body: dict, name: str, default, *, integer: bool):
    if name not in body or body[name] is None:
        return default
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise BadRequest(name, f"must be {kind}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(name, "must be finite")
    if abs(value) >= 2**63:
        raise BadRequest(name, f"is out of range ({'huge' if value > 0 else 'hugely negative'} value)")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise BadRequest(name, f"must be an integer, got {value}")
            value = int(value)
        return int(value)
    return float(value)


def _string(body: dict, name: str, *, required: bool = False, allow_empty: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(name, "is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(name, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise BadRequest(name, "must not be empty")
    return value


def parse_messages(body: dict) -> list[dict]:
    """The conversation from `prompt` (+ `system`) or from `messages`."""
    system = _string(body, "system")
    if body.get("messages") is not None:
        raw = body["messages"]
        if not isinstance(raw, list) or not raw:
            raise BadRequest("messages", "must be a non-empty list of {role, content}")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict):
                raise BadRequest(f"messages[{i}]", "must be an object with role and content")
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                raise BadRequest(f"messages[{i}].role", f"must be one of {', '.join(ROLES)}")
            if not isinstance(content, str):
                raise BadRequest(f"messages[{i}].content", "must be a string")
            messages.append({"role": role, "content": content})
        if not any(m["content"].strip() for m in messages):
            raise BadRequest("messages", "must contain some non-empty content")
        if body.get("prompt") is not None:
            raise BadRequest("prompt", "give either prompt or messages, not both")
    else:
        prompt = _string(body, "prompt", required=True, allow_empty=False)
        messages = [{"role": "user", "content": prompt}]
    if system is not None and system.strip():
        if messages[0]["role"] == "system":
            raise BadRequest("system", "messages already start with a system message")
        messages.insert(0, {"role": "system", "content": system})
    return messages


def parse_sampling(body: dict, max_new_cap: int):
    """temperature, top_k, top_p, max_new_tokens, seed with the brief's defaults and ranges."""
    temperature = _number(body, "temperature", 0.7, integer=False)
    if temperature < 0:
        raise BadRequest("temperature", f"must be >= 0 (0 = greedy), got {temperature}")
    if temperature > 100:
        raise BadRequest("temperature", f"must be <= 100, got {temperature}")
    top_k = _number(body, "top_k", 50, integer=True)
    if top_k < 0:
        raise BadRequest("top_k", f"must be >= 0 (0 = off), got {top_k}")
    top_p = _number(body, "top_p", 0.95, integer=False)
    if not 0 < top_p <= 1:
        raise BadRequest("top_p", f"must be in (0, 1], got {top_p}")
    max_new = _number(body, "max_new_tokens", min(128, max_new_cap), integer=True)
    if not 1 <= max_new <= max_new_cap:
        raise BadRequest("max_new_tokens", f"must be in [1, {max_new_cap}], got {max_new}")
    seed = _number(body, "seed", None, integer=True)
    if seed is not None and not 0 <= seed < 2**63:
        raise BadRequest("seed", f"must be in [0, 2^63), got {seed}")
    return GenerationParams(temperature, top_k, top_p, max_new, seed)


def parse_int_field(body: dict, name: str) -> int:
    """A required integer field of a JSON body."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(name, "is required and must be an integer")
    return value


def parse_run_id(body: dict, name: str = "run_id") -> str:
    """A required run id string field of a JSON body."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(name, "is required and must be a string")
    return value


def parse_bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(name, f"must be true or false, got {type(value).__name__}")
    return value


def query_int(args, name: str, *, default=None, lo: int | None = None, hi: int | None = None) -> int:
    """An integer query parameter within [lo, hi] (inclusive)."""
    raw = args.get(name)
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(name, "is required")
        return default
    try:
        value = strict_int(raw)
    except ValueError:
        raise BadRequest(name, f"must be an integer, got {raw[:40]!r}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadRequest(name, f"must be in [{lo}, {hi}], got {value}")
    return value


def query_str(args, name: str, *, required: bool = True, choices=None, default=None) -> str:
    raw = args.get(name)
    if raw is None or raw == "":
        if required and default is None:
            raise BadRequest(name, "is required")
        return default
    if choices is not None and raw not in choices:
        raise BadRequest(name, f"must be one of {', '.join(choices)}, got {raw[:40]!r}")
    return raw


def parse_head(raw: str | None, num_heads: int, allow_all: bool = False):
    """The `head` query parameter: "mean" (the default), "max", a query-head index, or (where the
    endpoint takes it) "all"."""
    if raw is None or raw == "" or raw == "mean":
        return "mean"
    if raw == "max":
        return "max"
    if raw == "all" and allow_all:
        return "all"
    try:
        head = strict_int(raw)
    except ValueError:
        raise BadRequest("head", f"must be mean, max or an integer in [0, {num_heads - 1}], got {raw[:40]!r}") from None
    if not 0 <= head < num_heads:
        raise BadRequest("head", f"must be mean, max or an integer in [0, {num_heads - 1}], got {head}")
    return head


def query_float(args, name: str, *, default: float, lo: float, hi: float) -> float:
    """A finite float query parameter within (lo, hi] (exclusive low bound, inclusive high)."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw[:40])
    except ValueError:
        raise BadRequest(name, f"must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or not lo < value <= hi:
        raise BadRequest(name, f"must be in ({lo}, {hi}], got {raw[:40]!r}")
    return value


# ---- interventions (issue 15; docs/INTERVENE.md) ------------------------------------------------
def parse_alphas(body: dict) -> list:
    """`alpha` (one number) or `alphas` (a list), exactly one of them; each checked by the Engine."""
    if ("alpha" in body) == ("alphas" in body):
        raise BadRequest("alpha", "give exactly one of alpha (a number) or alphas (a list of numbers)")
    if "alpha" in body:
        return [_number(body, "alpha", None, integer=False)]
    if not isinstance(body["alphas"], list):
        raise BadRequest("alphas", "must be a list of numbers")
    return list(body["alphas"])


def parse_optional_int(body: dict, name: str) -> int | None:
    """An optional integer field (null or absent: None)."""
    return _number(body, name, None, integer=True)


def parse_pair_side(body: dict, name: str) -> dict:
    """`clean` / `corrupted` of a patching request: {"run_id": str} or {"text": str}, exactly one."""
    side = body.get(name)
    if not isinstance(side, dict):
        raise BadRequest(name, 'is required and must be an object {"run_id": ...} or {"text": ...}')
    if ("run_id" in side) == ("text" in side) or set(side) - {"run_id", "text"}:
        raise BadRequest(name, "must hold exactly one of run_id or text")
    if "run_id" in side:
        if not isinstance(side["run_id"], str) or not side["run_id"]:
            raise BadRequest(f"{name}.run_id", "must be a run id string")
        return {"run_id": side["run_id"]}
    text = side["text"]
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{name}.text", "must be a non-empty string")
    return {"text": text}


def parse_text_body(body: dict) -> tuple[str, str | None]:
    """The `text` (required, not blank) and optional `system` of a scoring or tokenizing body."""
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("text", "is required and must be a non-empty string")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise BadRequest("system", "must be a string")
    return text, system
