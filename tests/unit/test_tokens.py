"""Token bytes, partial UTF-8 detection and chat segments, on the real tokenizer."""
import pytest

from llmvis.core.tokens import TokenTexts, build_prompt

pytestmark = pytest.mark.model


def test_chinese_split_over_tokens_recovers_bytes(default_lm):
    tok = default_lm.tokenizer
    texts = TokenTexts(tok)
    ids = tok("你好", add_special_tokens=False)["input_ids"]
    parts = [texts.describe(i) for i in ids]
    assert any(p["partial"] for p in parts)  # byte-level BPE splits these characters
    joined = bytes.fromhex("".join(p["bytes"] for p in parts)).decode("utf-8")
    assert joined == "你好"


def test_whitespace_and_special_tokens(default_lm):
    tok = default_lm.tokenizer
    texts = TokenTexts(tok)
    nl = tok("\n", add_special_tokens=False)["input_ids"][0]
    assert texts.describe(nl)["text"] == "\n" and not texts.describe(nl)["special"]
    start = tok.convert_tokens_to_ids("<|im_start|>")
    d = texts.describe(start)
    assert d["special"] and d["text"] == "<|im_start|>"


def test_segments_follow_the_chat_template(default_lm):
    tok = default_lm.tokenizer
    msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hello there"}]
    p = build_prompt(tok, msgs, use_chat_template=True)
    assert len(p.ids) == len(p.segments)
    pieces = {}
    for i, seg in zip(p.ids, p.segments):
        pieces.setdefault(seg, "")
        pieces[seg] += tok.decode([i])
    assert pieces["system"] == "Be terse."
    assert pieces["user"] == "Hello there"
    assert "<|im_start|>" in pieces["template"]
    assert p.ids == tok.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"]


def test_raw_text_mode_without_template(default_lm):
    p = build_prompt(default_lm.tokenizer, [{"role": "user", "content": "plain text"}], use_chat_template=False)
    assert "<|im_start|>" not in p.text and set(p.segments) <= {"user", "template"}
