"""Untrusted JSON: parsed with a bound on nesting, never a RecursionError, never NaN."""
from __future__ import annotations

import json

MAX_DEPTH = 64  # no request body or bundle header of ours nests deeper than a handful of levels


class JsonError(ValueError):
    """Text that is not acceptable JSON: malformed, nested too deeply, or holding NaN/Infinity."""


def _refuse_constant(name: str):
    raise JsonError(f"holds {name}, which JSON does not allow")


def depth(value, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), counted without recursion; stops
    counting at limit + 1."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            d += 1
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((child, d) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def loads(text: str | bytes, max_depth: int = MAX_DEPTH, allow_constants: bool = False):
    """json.loads for untrusted text: JsonError if malformed, deeper than max_depth, or (unless
    allow_constants, where each field is checked for finiteness later) holding NaN/Infinity."""
    try:
        value = json.loads(text, **({} if allow_constants else {"parse_constant": _refuse_constant}))
    except RecursionError:
        raise JsonError(f"nests deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonError(f"is not valid JSON ({str(exc)[:80]})") from None
    if depth(value, max_depth) > max_depth:
        raise JsonError(f"nests deeper than {max_depth} levels")
    return value
