"""Constants, the in-process tokenizer and HTTP helpers shared by the contract tests."""
from __future__ import annotations

import json
import time

VOCAB = 384        # 4 special tokens + 256 byte symbols + 124 BPE merges
LAYERS = 2
HEADS, KV_HEADS = 4, 2
SEED = 11
MAX_NEW = 32       # the server's max_new_tokens cap in these tests
SPECIALS = ["<pad>", "<s>", "<|im_start|>", "<|im_end|>"]  # ids 0..3: pad, bos, chat start, eos (tiny config)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Why is the sky blue? Because of Rayleigh scattering of sunlight.",
    "Count to three: one, two, three. Name three colours: red, green, blue.",
    "你好，世界。天空为什么是蓝色的？",
    "<think>reason step by step</think> The answer is short.",
    "system user assistant Hello! How are you today? You are terse.",
] * 4


def build_tokenizer():
    """A deterministic byte-level BPE tokenizer of VOCAB ids with the tiny config's special ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>",
                                   extra_special_tokens=["<|im_start|>"], chat_template=CHAT_TEMPLATE)
    assert len(fast) == VOCAB
    ids = (fast.pad_token_id, fast.bos_token_id, fast.convert_tokens_to_ids("<|im_start|>"), fast.eos_token_id)
    assert ids == (0, 1, 2, 3), ids
    return fast


def ok(resp, status: int = 200):
    """The JSON body of a successful answer (a readable failure otherwise)."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:500])
    assert resp.is_json, resp.mimetype
    return resp.get_json()


def get(client, path: str, **query):
    return ok(client.get(path, query_string=query))


def read_events(resp):
    """Parse SSE frames from a streamed test-client response, one at a time (comments skipped)."""
    buf = ""
    for chunk in resp.response:
        buf += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buf:
            frame, buf = buf.split("\n\n", 1)
            if frame.startswith(":"):
                continue
            lines = dict(line.split(": ", 1) for line in frame.splitlines())
            yield lines["event"], json.loads(lines["data"])


def wait_idle(engine, timeout: float = 30.0):
    """Wait until no job is queued or running (the streamed run's worker thread has finished)."""
    deadline = time.monotonic() + timeout
    while len(engine.jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not len(engine.jobs), "a job is still running"
