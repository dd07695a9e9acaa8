"""The "share" export: one self-contained HTML file that shows a run with no server.

The file inlines ECharts (from node_modules, as the page serves it), a small viewer script and
its CSS. The run's data sits in a `<script type="application/json">` block, with `<`, `>` and `&`
escaped as \\u003c, \\u003e, \\u0026 so that no token text (say `</script>`) can end the block;
the viewer reads it with JSON.parse. Nothing is ever spliced into executable script text.
"""
from __future__ import annotations

import html
import json
import re

import numpy as np
import torch

from llmvis.core.errors import BadRequest, LlmvisError
from llmvis.keep.library import run_title
from llmvis.web import serialize
from llmvis.web.assets import SHARE_DIR, echarts_path
from llmvis.web.validate import strict_int

MAX_SHARE_LAYERS = 8
ATTENTION_POOL = 256    # attention matrices larger than this are max-pooled to this many rows/cols
CANDIDATES = 10         # alternatives kept per position
SCALE = 10_000          # attention weights are stored as integers in 1/SCALE units
LENS_WINDOW = 128       # the logit lens view holds the last this many positions
EXTRA_VIEWS = ("lens", "heads", "explain")  # views computed only when asked for (run.show(view=...))

_SCRIPT_END = re.compile(r"</(script)", re.IGNORECASE)


def json_for_html(data) -> str:
    """JSON text safe inside <script type="application/json">: no <, > or & survives."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def inline_script(source: str) -> str:
    """Script text that cannot close its own <script> element early."""
    return _SCRIPT_END.sub(r"<\\/\1", source)


def parse_layers(raw: str | None, num_layers: int) -> list[int]:
    """`layers` query value: comma-separated layer indices; default first, middle and last."""
    if raw is None or raw == "":
        return sorted({0, num_layers // 2, num_layers - 1})
    out = []
    for part in raw.split(","):
        try:
            layer = strict_int(part.strip())
        except ValueError:
            raise BadRequest("layers", f"must be comma-separated integers in [0, {num_layers - 1}], got {raw[:40]!r}") from None
        if not 0 <= layer < num_layers:
            raise BadRequest("layers", f"must be in [0, {num_layers - 1}], got {layer}")
        out.append(layer)
    out = sorted(set(out))
    if len(out) > MAX_SHARE_LAYERS:
        raise BadRequest("layers", f"at most {MAX_SHARE_LAYERS} layers, got {len(out)}")
    return out


def lens_data(engine, run, window: int = LENS_WINDOW) -> dict:
    """The logit lens of the last `window` positions: per (layer, position) the top-1 token (an
    index into `texts`) and its probability. Layer 0 is the embeddings, `num_layers` the output."""
    end = run.num_tokens
    start = max(0, end - window)
    lens, _ = engine.logit_lens(run, start, end)
    top = lens.top_ids[:, start:end, 0]  # (L+1, W)
    ids, index = np.unique(top, return_inverse=True)
    return {
        "start": start, "end": end, "num_layers": int(top.shape[0]) - 1,
        "ids": ids.tolist(), "texts": [engine.texts.describe(int(i))["text"] for i in ids.tolist()],
        "top1": index.reshape(top.shape).tolist(),
        "prob": np.round(lens.top_probs[:, start:end, 0].astype(np.float64), 5).tolist(),
    }


def heads_data(engine, run) -> dict:
    """Per layer and query head: mean attention entropy (nats), sink share (attention to position
    0) and previous-token share, as GET /api/attention_insights gives them."""
    stats, took = engine.head_stats(run)
    body = serialize.head_insights(engine, run, stats, took)
    return {key: body[key] for key in ("num_layers", "num_heads", "num_kv_heads", "kv_group", "entropy", "sink",
                                       "prev", "num_tokens", "query_rows_used")}


def _rounded(values, digits: int = 6):
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def default_explain_position(run) -> int:
    """The token `explain` shows unless told: the first generated one, else the last."""
    return run.num_prompt if run.num_prompt < run.num_tokens else run.num_tokens - 1


def explain_data(engine, run, position: int) -> dict:
    """Direct logit attribution of the token at `position` (docs/EXPLAIN.md): its logit split into
    the embedding, each (layer, query head), each layer's output bias and each MLP."""
    attr, _ = engine.explain_logit(run, position)
    return {
        "position": position, "query_position": attr.query,
        "target": {"id": int(attr.target), "text": engine.texts.describe(int(attr.target))["text"]},
        "logit": round(float(attr.direction.logit), 6), "lm_bias": round(float(attr.direction.bias), 6),
        "embedding": round(float(attr.embedding), 6), "total": round(float(attr.total), 6),
        "num_layers": int(attr.heads.shape[0]), "num_heads": int(attr.heads.shape[1]),
        "heads": _rounded(attr.heads), "o_bias": _rounded(attr.o_bias), "mlp": _rounded(attr.mlp),
    }


def share_data(engine, run, layers: list[int], title: str, views=(), position: int | None = None) -> dict:
    """Everything the viewer shows, as plain JSON-able data."""
    tokens = serialize.tokens(engine, run)
    candidates = [None] + [  # position 0 has no prediction
        [{"text": c["text"], "prob": round(c["prob"], 6)} for c in serialize.candidates(engine, run, pos, CANDIDATES)]
        for pos in range(1, run.num_tokens)
    ]
    attention = []
    for layer in layers:
        view = engine.attention_view(run, layer, "mean", None, ATTENTION_POOL, "max")
        matrix = (view["matrix"].float() * SCALE).round().to(dtype=torch.int32)  # (rows, cols)
        attention.append({"layer": layer, "block": view["block"], "rows": view["rows"], "cols": view["cols"],
                          "matrix": matrix.tolist()})
    return {
        "title": title,
        "run_id": run.id,
        "model": engine.model_info(),
        "params": run.params,
        "finish_reason": run.finish_reason,
        "num_prompt_tokens": run.num_prompt,
        "generated_text": serialize.generated_text(engine, run),
        "tokens": [{key: t.get(key) for key in ("position", "text", "source", "prob", "rank", "entropy",
                                                 "sample_prob", "segment", "special")} for t in tokens],
        "candidates": candidates,
        "attention": {"scale": SCALE, "layers": attention},
        **({"lens": lens_data(engine, run)} if "lens" in views else {}),
        **({"heads": heads_data(engine, run)} if "heads" in views else {}),
        **({"explain": explain_data(engine, run, default_explain_position(run) if position is None else position)}
           if "explain" in views else {}),
    }


def _echarts_source() -> str:
    path = echarts_path()
    if path is None:
        raise LlmvisError("echarts is not installed: run `npm ci` in the project folder")
    return path.read_text(encoding="utf-8")


def share_html(engine, run, layers: list[int] | None = None, title: str | None = None,
               focus: str | None = None, views=(), position: int | None = None) -> str:
    """The self-contained HTML document for one run (`focus`: the section it opens scrolled to;
    `views`: any of EXTRA_VIEWS, computed and embedded as well; `position`: the token `explain`
    explains, default the first generated one)."""
    unknown = [v for v in views if v not in EXTRA_VIEWS]
    if unknown:
        raise BadRequest("views", f"must be among {', '.join(EXTRA_VIEWS)}, got {str(unknown[0])[:40]!r}")
    title = title or run_title(engine, run)
    layers = layers if layers is not None else parse_layers(None, engine.lm.num_layers)
    data = share_data(engine, run, layers, title, views, position)
    if focus is not None:
        data["focus"] = focus
    css = (SHARE_DIR / "viewer.css").read_text(encoding="utf-8")
    viewer = (SHARE_DIR / "viewer.js").read_text(encoding="utf-8")
    css_safe = css.replace("</", "<\\/")  # CSS has no reason to contain "</"; never let it close <style>
    return "".join([
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<meta name=\"generator\" content=\"llmvis\">\n",
        f"<title>{html.escape(title)} · llmvis</title>\n",
        f"<style>\n{css_safe}\n</style>\n</head>\n<body>\n",
        "<div id=\"app\" class=\"app\"></div>\n",
        f"<script type=\"application/json\" id=\"llmvis-data\">{json_for_html(data)}</script>\n",
        f"<script>\n{inline_script(_echarts_source())}\n</script>\n",
        f"<script>\n{inline_script(viewer)}\n</script>\n",
        "</body>\n</html>\n",
    ])
