"""Runs inside Jupyter (JupyterLab, classic Notebook, VS Code): the inline summary a Trace shows as
its `_repr_html_`, and `Trace.show(view)`: the share viewer in a sandboxed iframe `srcdoc`.

Both are plain HTML strings with every token text escaped; neither needs a server or the network
(the viewer inlines ECharts). Notebooks render any object with `_repr_html_`, so nothing here
imports IPython.
"""
from __future__ import annotations

import html
import math

from llmvis.core.errors import BadRequest
from llmvis.core.metrics import score_summary
from llmvis.web import serialize
from llmvis.web.share import EXTRA_VIEWS, parse_layers, share_html

VIEWS = {"tokens": "tokens", "probs": "candidates", "entropy": "confidence", "attention": "attention",
         "lens": "lens", "heads": "heads", "explain": "explain"}  # view -> the viewer's section
ALTERNATIVES = 5   # per token, in its tooltip
MAX_CHIPS = 2000   # longer runs show their first chips and say how many are left out


def _prob_colour(p: float | None) -> str:
    """Low probability red, high green (the page's prob scale, simplified); grey when undefined."""
    if p is None or not math.isfinite(p):
        return "rgba(125, 136, 150, 0.25)"
    hue = round(120 * max(0.0, min(1.0, p)))  # 0 red .. 120 green
    return f"hsla({hue}, 70%, 42%, 0.55)"


def _visible(text: str) -> str:
    """Whitespace a reader can see: newlines and tabs as symbols (spaces stay, pre-wrapped)."""
    return text.replace("\n", "↵").replace("\t", "⇥")


def trace_html(eng, run) -> str:
    """One line of summary (model, tokens, perplexity) and the tokens as chips coloured by their
    probability, each with its alternatives on hover."""
    tokens = serialize.tokens(eng, run)
    summary = score_summary(run.result.stats)
    ppl = summary["perplexity"]
    generated = run.num_tokens - run.num_prompt
    line = (f"{run.model_name} · {run.num_prompt} prompt + {generated} generated tokens · "
            f"perplexity {ppl:.2f}" if ppl is not None else f"{run.model_name} · {run.num_tokens} tokens")
    chips = []
    for tok in tokens[:MAX_CHIPS]:
        pos = tok["position"]
        tip = [f"position {pos}", f"{tok['source']} · {tok['segment']}"]
        if tok["prob"] is not None:
            tip.append(f"p = {tok['prob']:.4f} · rank {tok['rank']} · entropy {tok['entropy']:.3f} nats")
            alts = serialize.candidates(eng, run, pos, ALTERNATIVES)
            tip.append("alternatives: " + ", ".join(f"{c['text']!r} {c['prob']:.3f}" for c in alts))
        border = "border-bottom: 2px solid #6cb6ff;" if tok["source"] == "generated" else ""
        chips.append(
            f'<span class="llmvis-tok" data-position="{pos}" title="{html.escape(chr(10).join(tip), quote=True)}" '
            f'style="background: {_prob_colour(tok["prob"])}; {border} white-space: pre-wrap; padding: 0 1px; '
            f'border-radius: 3px; margin: 0 1px 2px 0; display: inline-block;">'
            f"{html.escape(_visible(tok['text']) or ' ')}</span>"
        )
    more = (f'<div style="color: #7d8896">… {len(tokens) - MAX_CHIPS} more tokens (run.show() or the web app shows them all)</div>'
            if len(tokens) > MAX_CHIPS else "")
    return (f'<div class="llmvis-trace" data-run-id="{html.escape(run.id)}" style="font-family: ui-monospace, monospace; '
            f'font-size: 13px; line-height: 1.7;">'
            f'<div style="font-family: system-ui, sans-serif; margin-bottom: 4px;"><b>llmvis</b> · {html.escape(line)}</div>'
            f'<div>{"".join(chips)}</div>{more}</div>')


def inline_view_html(eng, run, view: str = "attention", layers: list[int] | None = None, height: int = 720,
                     position: int | None = None) -> str:
    """The share viewer for `run`, opened at `view`, in a sandboxed iframe (scripts only: no
    same-origin access to the notebook, no network). `position`: the token view="explain" explains."""
    if not isinstance(view, str) or view not in VIEWS:
        raise BadRequest("view", f"must be one of {', '.join(VIEWS)} (the offline viewer's views), got {str(view)[:40]!r}")
    if not isinstance(height, int) or not 200 <= height <= 4000:
        raise BadRequest("height", f"must be an integer in [200, 4000], got {height!r}")
    if position is not None:
        if view != "explain":
            raise BadRequest("position", f"only view='explain' takes a position, not view={view!r}")
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position < run.num_tokens:
            raise BadRequest("position", f"must be an integer in [1, {run.num_tokens - 1}] (the token explained), "
                                         f"got {str(position)[:40]!r}")
    layers = parse_layers(None, eng.lm.num_layers) if layers is None else layers
    extra = [view] if view in EXTRA_VIEWS else []  # computed only for the view that shows them
    page = share_html(eng, run, layers, focus=VIEWS[view], views=extra, position=position)
    return (f'<iframe class="llmvis-view" sandbox="allow-scripts" srcdoc="{html.escape(page, quote=True)}" '
            f'style="width: 100%; height: {height}px; border: 1px solid #232a33; border-radius: 6px;"></iframe>')


class InlineHTML:
    """HTML a notebook renders inline (it has `_repr_html_`); `str()` gives the HTML itself."""

    def __init__(self, text: str):
        self.html = text

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html
