"""`llmvis explain FILE --position N`: why the model predicted one token of a saved run, as JSON.

The same numbers as GET /api/explain/* and Trace.explain (docs/EXPLAIN.md), recomputed from the
bundle's stored states; nothing is written unless --out is given.
"""
from __future__ import annotations

import json
from pathlib import Path

from llmvis import pyapi
from llmvis.cli.flags import add_model_flags, stage_bar
from llmvis.core.errors import LlmvisError

METHODS = ("logit", "grad_x_input", "integrated_gradients", "value_norm", "direct", "flow")


def add_command(sub) -> None:
    ex = sub.add_parser(
        "explain",
        help="explain one token of a .llmvis bundle: logit attribution, input attribution or information flow",
        description="Load the bundle's model and explain the token at --position (predicted from the state at "
        "position - 1): --method logit splits its logit (minus --contrast's) into the embedding, every "
        "attention head and every MLP; grad_x_input, integrated_gradients, value_norm and direct score the "
        "earlier tokens; flow gives the information-flow graph. Prints JSON (the API's answer).",
    )
    ex.add_argument("file", type=Path, help="a .llmvis bundle (from `llmvis analyze`, the page or run.save())")
    ex.add_argument("--position", type=int, required=True, help="the token to explain, 1 .. tokens-1")
    ex.add_argument("--target", type=int, default=None, help="token id to explain instead of the token there")
    ex.add_argument("--contrast", type=int, default=None, help="explain logit[target] - logit[contrast]")
    ex.add_argument("--method", choices=METHODS, default="logit", help="what to compute (default: %(default)s)")
    ex.add_argument("--steps", type=int, default=16, help="integrated-gradients steps, 1..128 (default: %(default)s)")
    ex.add_argument("--threshold", type=float, default=0.05,
                    help="flow: keep edges of at least this weight, in (0, 1] (default: %(default)s)")
    ex.add_argument("--out", "-o", type=Path, default=None, help="write the JSON here instead of stdout")
    add_model_flags(ex, model_default=None,
                    model_help="model to load instead of the one recorded in the bundle (it must be the same model)")


def cmd_explain(args) -> int:
    if args.out is not None and not args.out.expanduser().parent.is_dir():
        raise LlmvisError(f"cannot write {args.out}: folder {args.out.expanduser().parent} does not exist")
    with stage_bar("Loading run"):
        trace = pyapi.load(args.file, model=args.model, device=args.device, dtype=args.dtype)
    answer = trace.explain(args.position, args.target, args.contrast, args.method, args.steps, args.threshold)
    text = json.dumps(answer, separators=(",", ":"))
    if args.out is None:
        print(text)
    else:
        args.out.expanduser().write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
