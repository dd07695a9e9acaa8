"""Token text, raw bytes and chat segments.

Byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM) splits a multi-byte UTF-8 character over
several tokens; each such token decodes to U+FFFD on its own. We recover every token's
raw bytes so the page can show them, and join neighbours back into the character.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table: printable char -> byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class TokenTexts:
    """Maps token ids to display text, raw bytes and flags, for one tokenizer."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = "ByteLevel" in repr(decoder) if decoder is not None else False
        self._cache: dict[int, dict] = {}

    def _bytes_of(self, piece: str) -> bytes | None:
        if self.byte_level:
            table = _byte_decoder()
            if all(ch in table for ch in piece):
                return bytes(table[ch] for ch in piece)
            return None
        m = _BYTE_TOKEN.match(piece)
        if m:  # sentencepiece byte-fallback token such as <0xE4>
            return bytes([int(m.group(1), 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    def texts(self, ids) -> list[str]:
        """The display text of each id."""
        return [self.describe(int(i))["text"] for i in ids]

    def describe(self, token_id: int) -> dict:
        """{"text", "bytes" (hex), "partial", "special"} for one id (cached)."""
        hit = self._cache.get(token_id)
        if hit is not None:
            return hit
        piece = self.tok.convert_ids_to_tokens(int(token_id))
        special = int(token_id) in self.special_ids
        raw = None if special or piece is None else self._bytes_of(piece)
        if raw is None:
            text = piece if piece is not None else self.tok.decode([int(token_id)])
            raw = text.encode("utf-8")
            partial = False
        else:
            try:
                text = raw.decode("utf-8")
                partial = False
            except UnicodeDecodeError:
                text = raw.decode("utf-8", errors="replace")
                partial = True
        out = {"text": text, "bytes": raw.hex(), "partial": partial, "special": special}
        if len(self._cache) < 200_000:
            self._cache[token_id] = out
        return out


@dataclass
class Prompt:
    """Token ids of a prompt with the chat segment of each token."""

    ids: list[int]
    segments: list[str]   # "system" | "user" | "assistant" | "template" per token
    text: str             # the rendered prompt text
    chat: bool            # whether the chat template was applied


def build_prompt(tokenizer, messages: list[dict], use_chat_template: bool, generation_prompt: bool = True) -> Prompt:
    """Render messages (with the chat template when asked) and tag each token's segment.

    A token is tagged with a message's role when it starts inside that message's content;
    everything else (role headers, special markers, default system text) is "template".
    """
    if use_chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    else:
        text = "\n".join(m["content"] for m in messages)
        enc = tokenizer(text, return_offsets_mapping=True)
    spans: list[tuple[int, int, str]] = []
    cursor = 0
    for m in messages:
        content = m["content"]
        if not content:
            continue
        at = text.find(content, cursor)
        if at < 0:
            continue
        spans.append((at, at + len(content), m["role"]))
        cursor = at + len(content)
    segments = []
    for start, end in enc["offset_mapping"]:
        role = "template"
        if end > start:
            for a, b, r in spans:
                if a <= start < b:
                    role = r
                    break
        segments.append(role)
    return Prompt(list(enc["input_ids"]), segments, text, use_chat_template)
