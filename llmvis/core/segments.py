"""Chat segments: the names, <think> blocks, and runs of equal segments. Pure.

Every token carries one segment: system, user, assistant, think or template (chat markup).
llmvis.core.tokens assigns the first four when it builds a prompt; think_segments re-tags
reasoning blocks. The bundle validator and the segment views use the same SEGMENTS.
"""
from __future__ import annotations

import re

SEGMENTS = ("system", "user", "assistant", "think", "template")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


# ---- chat segments ----------------------------------------------------------------------------
def think_segments(texts: list[str], segments: list[str]) -> list[str]:
    """Tag tokens of a <think>...</think> block (markers included) as "think". Pure.

    texts: each token's text; segments: each token's segment (system|user|assistant|template).
    A block opens at "<think>" in a template or assistant token (so a user who types the tag does
    not open one) and closes after "</think>"; an unclosed block runs to the end. The tags may be
    split over several tokens. Tokens of system and user messages are never re-tagged.
    """
    out = list(segments)
    starts, pos = [], 0
    for text in texts:
        starts.append(pos)
        pos += len(text)
    joined = "".join(texts)
    open_at = None
    blocks: list[tuple[int, int]] = []
    for m in re.finditer(re.escape(THINK_OPEN) + "|" + re.escape(THINK_CLOSE), joined):
        tok = _token_at(starts, m.start())
        if m.group(0) == THINK_OPEN:
            if open_at is None and segments[tok] in ("assistant", "template"):
                open_at = m.start()
        elif open_at is not None:
            blocks.append((open_at, m.end()))
            open_at = None
    if open_at is not None:
        blocks.append((open_at, len(joined)))
    for a, b in blocks:
        for i in range(_token_at(starts, a), len(texts)):
            if starts[i] >= b:
                break
            if out[i] not in ("system", "user"):
                out[i] = "think"
    return out


def _token_at(starts: list[int], char: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:  # last token whose start <= char
        mid = (lo + hi + 1) // 2
        if starts[mid] <= char:
            lo = mid
        else:
            hi = mid - 1
    return lo


def segment_spans(segments: list[str]) -> list[dict]:
    """Runs of equal segments: [{"segment", "start", "end"}] with end exclusive. Pure."""
    spans: list[dict] = []
    for i, s in enumerate(segments):
        if spans and spans[-1]["segment"] == s:
            spans[-1]["end"] = i + 1
        else:
            spans.append({"segment": s, "start": i, "end": i + 1})
    return spans
