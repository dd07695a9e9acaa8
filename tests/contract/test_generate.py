"""POST /api/generate on the tiny model: the run's shape and every token statistic, checked
against the model's own forward pass; sampling against transformers' own warpers; bad input."""
import json

import pytest

from . import reference as R
from .support import HEADS, KV_HEADS, LAYERS, MAX_NEW, VOCAB, ok

TOKEN_KEYS = {"position", "id", "text", "source", "prob", "rank", "entropy", "sample_prob", "sample_entropy",
              "cut_mass", "special", "bytes", "partial", "segment"}


def test_generate_run_shape(greedy_run, tiny_tokenizer):
    run = greedy_run
    assert set(run) >= {"run_id", "model", "params", "tokens", "generated_text", "finish_reason", "timing",
                        "num_prompt_tokens", "num_tokens", "status", "kind", "parent_id", "children"}
    assert run["model"]["name"] == "tiny-llama" and run["model"]["vocab_size"] == VOCAB
    assert (run["model"]["num_layers"], run["model"]["num_heads"], run["model"]["num_kv_heads"]) == (LAYERS, HEADS, KV_HEADS)
    assert run["params"] == {"temperature": 0.0, "top_k": 50, "top_p": 0.95, "max_new_tokens": 8,
                             "seed": run["params"]["seed"], "use_chat_template": True}
    assert isinstance(run["params"]["seed"], int) and run["params"]["seed"] >= 0
    assert (run["status"], run["kind"], run["parent_id"], run["children"]) == ("done", "generate", None, [])
    n, p = run["num_tokens"], run["num_prompt_tokens"]
    assert n == len(run["tokens"]) == p + 8
    # the prompt is exactly what the chat template renders and the tokenizer encodes
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Why is the sky blue?"}],
        tokenize=False, add_generation_prompt=True)
    assert [t["id"] for t in run["tokens"][:p]] == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    for i, t in enumerate(run["tokens"]):
        assert set(t) == TOKEN_KEYS and t["position"] == i
        assert t["source"] == ("prompt" if i < p else "generated")
        assert t["bytes"] == bytes.fromhex(t["bytes"]).hex()
    gen_ids = [t["id"] for t in run["tokens"][p:]]
    assert run["generated_text"] == tiny_tokenizer.decode(gen_ids, skip_special_tokens=True)
    timing = run["timing"]
    assert timing["generate_s"] > 0 and timing["analysis_s"] >= 0
    assert timing["tokens_per_s"] == pytest.approx(8 / timing["generate_s"], rel=1e-6)
    assert "NaN" not in json.dumps(run) and "Infinity" not in json.dumps(run)


def test_every_token_statistic_matches_the_models_forward_pass(greedy_run, ref):
    """prob, rank, entropy of every position > 0 against softmax of the model's own logits."""
    ids = [t["id"] for t in greedy_run["tokens"]]
    first = greedy_run["tokens"][0]
    assert all(first[k] is None for k in ("prob", "rank", "entropy", "sample_prob", "cut_mass"))
    p = greedy_run["num_prompt_tokens"]
    for t in greedy_run["tokens"][1:]:
        want = ref.position_stats(ids, t["position"])
        assert t["prob"] == pytest.approx(want["prob"], rel=1e-4, abs=1e-7), t
        assert t["rank"] == want["rank"], t
        assert t["entropy"] == pytest.approx(want["entropy"], rel=1e-4), t
        if t["position"] < p:  # teacher-forced prompt tokens have no sampling statistics
            assert t["sample_prob"] is None and t["cut_mass"] is None and t["sample_entropy"] is None
        else:  # greedy: a point mass on the argmax, cut mass 1 - max raw prob
            assert t["rank"] == 1 and t["id"] == int(want["dist"].argmax())
            assert t["sample_prob"] == 1.0 and t["sample_entropy"] == 0.0
            assert t["cut_mass"] == pytest.approx(1 - want["max_prob"], rel=1e-4)


def _sampled(client, **params):
    body = {"prompt": "Count to three.", "max_new_tokens": 6, "seed": 1234} | params
    return ok(client.post("/api/generate", json=body))


def _check_sampling(run, ref, temperature, top_k, top_p):
    ids = [t["id"] for t in run["tokens"]]
    for t in run["tokens"][run["num_prompt_tokens"]:]:
        logits = ref.forward(ids).logits[t["position"] - 1]
        q = R.hf_sampling_distribution(logits, temperature, top_k, top_p)
        kept = q > 0
        assert kept[t["id"]], ("sampled a token outside the support", t)
        assert t["sample_prob"] == pytest.approx(float(q[t["id"]]), rel=1e-4), t
        assert t["sample_entropy"] == pytest.approx(float(R.entropy(q)), rel=1e-4, abs=1e-6), t
        assert t["cut_mass"] == pytest.approx(R.tempered_cut_mass(logits, temperature, kept), rel=1e-4, abs=1e-6), t


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 20, 1.0), (0.8, 0, 0.5), (1.0, 5, 1.0),
])
def test_sampling_statistics_match_transformers_warpers(client, ref, temperature, top_k, top_p):
    run = _sampled(client, temperature=temperature, top_k=top_k, top_p=top_p)
    assert run["params"] | {"use_chat_template": True} == {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                                                           "max_new_tokens": 6, "seed": 1234, "use_chat_template": True}
    _check_sampling(run, ref, temperature, top_k, top_p)


def test_top_p_after_top_k_matches_transformers(client, ref):
    """transformers' TopPLogitsWarper runs on the top-k survivors renormalised; the defaults (top_k=50,
    top_p=0.95) hit this on every step where the top 50 hold less than 95 % of the mass."""
    _check_sampling(_sampled(client, temperature=1.0, top_k=50, top_p=0.9), ref, 1.0, 50, 0.9)


def test_same_seed_same_run_and_the_seed_is_reported(client):
    body = {"prompt": "Name three colours.", "temperature": 1.2, "top_k": 0, "top_p": 1.0, "max_new_tokens": 10}
    a = ok(client.post("/api/generate", json=body | {"seed": 7}))
    b = ok(client.post("/api/generate", json=body | {"seed": 7}))
    c = ok(client.post("/api/generate", json=body | {"seed": 8}))
    ids = lambda r: [t["id"] for t in r["tokens"]]  # noqa: E731
    assert ids(a) == ids(b) and a["run_id"] != b["run_id"]
    assert [t["sample_prob"] for t in a["tokens"]] == [t["sample_prob"] for t in b["tokens"]]
    assert ids(a) != ids(c)  # 10 draws from a near-uniform 384-way distribution
    unseeded = ok(client.post("/api/generate", json=body))
    again = ok(client.post("/api/generate", json=body | {"seed": unseeded["params"]["seed"]}))
    assert ids(again) == ids(unseeded)


def _texts(run, segment):
    return "".join(t["text"] for t in run["tokens"] if t["segment"] == segment)


def test_messages_system_and_segments(client, tiny_tokenizer):
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Count to three."}]
    run = ok(client.post("/api/generate", json={"messages": messages, "system": "You are terse.",
                                                "temperature": 0, "max_new_tokens": 3}))
    full = [{"role": "system", "content": "You are terse."}] + messages
    text = tiny_tokenizer.apply_chat_template(full, tokenize=False, add_generation_prompt=True)
    p = run["num_prompt_tokens"]
    assert [t["id"] for t in run["tokens"][:p]] == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert _texts(run, "system") == "You are terse."
    assert _texts(run, "user") == "Hi thereCount to three."
    prompt_assistant = "".join(t["text"] for t in run["tokens"][:p] if t["segment"] == "assistant")
    assert prompt_assistant == "Hello!"
    template = [t for t in run["tokens"][:p] if t["segment"] == "template"]
    assert "".join(t["text"] for t in template) == "".join(
        f"<|im_start|>{m['role']}\n<|im_end|>\n" for m in full) + "<|im_start|>assistant\n"
    assert all(t["segment"] == "assistant" for t in run["tokens"][p:])
    specials = {t["text"] for t in run["tokens"] if t["special"]}
    assert specials == {"<|im_start|>", "<|im_end|>"} and all(t["special"] == (t["id"] in (2, 3)) for t in run["tokens"])


def test_raw_text_mode_has_no_template(client, tiny_tokenizer):
    run = ok(client.post("/api/generate", json={"prompt": "The quick brown fox", "use_chat_template": False,
                                                "temperature": 0, "max_new_tokens": 2}))
    p = run["num_prompt_tokens"]
    assert [t["id"] for t in run["tokens"][:p]] == tiny_tokenizer("The quick brown fox")["input_ids"]
    assert run["tokens"][0]["id"] == 1 and run["tokens"][0]["segment"] == "template"  # <s> from the post-processor
    assert _texts(run, "user") == "The quick brown fox" and run["params"]["use_chat_template"] is False


def test_think_block_is_its_own_segment(client):
    run = ok(client.post("/api/generate", json={"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>greet back</think>Hello!"},
        {"role": "user", "content": "Again <think>not mine</think>"}], "temperature": 0, "max_new_tokens": 2}))
    assert _texts(run, "think") == "<think>greet back</think>"  # a user typing the tag opens no block
    assert "<think>not mine</think>" in _texts(run, "user")


def test_partial_utf8_tokens_carry_their_bytes(client):
    run = ok(client.post("/api/generate", json={"prompt": "猫你好", "temperature": 0, "max_new_tokens": 1}))
    user = [t for t in run["tokens"] if t["segment"] == "user"]
    assert bytes.fromhex("".join(t["bytes"] for t in user)).decode("utf-8") == "猫你好"
    cat = user[:3]  # 猫 is not in the tokenizer's corpus: three byte tokens, none valid UTF-8 alone
    assert [t["partial"] for t in cat] == [True, True, True]
    assert b"".join(bytes.fromhex(t["bytes"]) for t in cat) == "猫".encode()
    assert [(t["text"], t["partial"]) for t in user[3:]] == [("你", False), ("好", False)]


def test_get_run_answers_the_stored_run(client, greedy_run):
    again = ok(client.get("/api/run", query_string={"run_id": greedy_run["run_id"]}))
    assert again == greedy_run


# ---- bad input -------------------------------------------------------------------------------------
GENERATE_LIKE = ("/api/generate", "/api/estimate", "/api/generate/stream")
BAD_BODIES = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ["x"]}, "prompt"),
    ({"prompt": "x", "system": 3}, "system"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "temperature": -0.1}, "temperature"),
    ({"prompt": "x", "temperature": 101}, "temperature"),
    ({"prompt": "x", "temperature": 1e308}, "temperature"),
    ({"prompt": "x", "temperature": True}, "temperature"),
    ({"prompt": "x", "temperature": [1]}, "temperature"),
    ({"prompt": "x", "top_k": -1}, "top_k"),
    ({"prompt": "x", "top_k": 1.5}, "top_k"),
    ({"prompt": "x", "top_k": 10**30}, "top_k"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_p": -1}, "top_p"),
    ({"prompt": "x", "top_p": 1.01}, "top_p"),
    ({"prompt": "x", "top_p": "0.5"}, "top_p"),
    ({"prompt": "x", "max_new_tokens": 0}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": -3}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": MAX_NEW + 1}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": 10**30}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": -10**30}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": 2.5}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": "10"}, "max_new_tokens"),
    ({"prompt": "x", "seed": "abc"}, "seed"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "seed": 2**63}, "seed"),
    ({"prompt": "x", "seed": 0.5}, "seed"),
    ({"prompt": "x", "use_chat_template": "yes"}, "use_chat_template"),
    ({"prompt": "x", "use_chat_template": 1}, "use_chat_template"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 1}]}, "messages[0].content"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": " "}]}, "messages"),
    ({"messages": [{"role": "user", "content": "a"}], "prompt": "b"}, "prompt"),
    ({"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}], "system": "c"}, "system"),
]


@pytest.mark.parametrize("path", GENERATE_LIKE)
@pytest.mark.parametrize("body, field", BAD_BODIES, ids=[f for _, f in BAD_BODIES])
def test_bad_generate_bodies_answer_400_naming_the_field(client, assert_error, path, body, field):
    assert_error(client.post(path, json=body), 400, field)


@pytest.mark.parametrize("path", GENERATE_LIKE)
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_answer_400(client, assert_error, path, literal):
    raw = '{"prompt": "x", "temperature": %s}' % literal
    assert_error(client.post(path, data=raw, content_type="application/json"), 400, "temperature")


NOT_JSON_OBJECTS = [b"{not json", b"[1, 2]", b"", b"null", b'"a string"', b"42", b"\xff\xfe\x00",
                    b'{"prompt": "x"', b"prompt=x", b'{"prompt": "x", "system": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"]
BODY_ENDPOINTS = GENERATE_LIKE + ("/api/fork", "/api/score", "/api/cancel")


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
@pytest.mark.parametrize("data", NOT_JSON_OBJECTS, ids=lambda d: repr(d[:12]))
def test_bodies_that_are_not_a_json_object_answer_400(client, assert_error, path, data):
    assert_error(client.post(path, data=data, content_type="application/json"), 400, "body")


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None])
def test_bodies_that_do_not_say_json_answer_415(client, assert_error, path, ctype):
    """A cross-site form or a no-cors fetch cannot send application/json, so nothing else is read."""
    headers = {} if ctype is None else {"Content-Type": ctype}
    assert_error(client.post(path, data=b'{"prompt": "x", "run_id": "x", "text": "x"}', headers=headers), 415, "body")


def test_json_with_a_charset_is_json(client):
    resp = client.post("/api/estimate", data=json.dumps({"prompt": "x"}).encode(),
                       content_type="application/json; charset=utf-8")
    assert ok(resp)["num_tokens"] == ok(client.post("/api/estimate", json={"prompt": "x"}))["num_tokens"]


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
def test_body_over_the_limit_answers_413(client, assert_error, path):
    big = json.dumps({"prompt": "x" * (1 << 20)})
    assert_error(client.post(path, data=big, content_type="application/json"), 413, "body")


def test_prompt_and_context_limits(client, tiny_tokenizer, assert_error, engine):
    assert engine.max_context == 512  # the tiny config's max_position_embeddings
    assert_error(client.post("/api/generate", json={"prompt": "hello " * 200, "max_new_tokens": 1}), 400, "prompt")
    # a prompt that fits, but not with max_new_tokens more

    def prompt_len(reps):
        text = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "hello " * reps}], tokenize=False,
                                                  add_generation_prompt=True)
        return len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])

    reps = next(r for r in range(100, 130) if 512 - MAX_NEW < prompt_len(r) < 512)
    body = {"prompt": "hello " * reps, "max_new_tokens": MAX_NEW}
    n = prompt_len(reps)
    assert ok(client.post("/api/estimate", json=body | {"max_new_tokens": 1}))["num_prompt_tokens"] == n
    assert_error(client.post("/api/generate", json=body), 400, "max_new_tokens")
    assert ok(client.post("/api/generate", json=body | {"max_new_tokens": 512 - n, "temperature": 0}))["num_tokens"] <= 512


def test_run_larger_than_the_store_is_refused_with_413(make_server, assert_error):
    eng, client = make_server(store_budget_bytes=64 << 10)
    est = ok(client.post("/api/estimate", json={"prompt": "x", "max_new_tokens": 32}))
    assert est["fits"] is False and est["run_bytes"] > 64 << 10 and "budget" in est["message"]
    assert_error(client.post("/api/generate", json={"prompt": "x", "max_new_tokens": 32}), 413, "max_new_tokens")
    assert len(eng.store) == 0 and not len(eng.jobs)


def test_a_tokenizer_without_a_chat_template(tiny_lm, assert_error):
    """use_chat_template defaults to false there, and asking for it names the field."""
    from llmvis.core.config import ServerConfig
    from llmvis.engine.engine import Engine
    from llmvis.model.loading import LoadedModel
    from llmvis.web.app import create_app

    from .support import build_tokenizer

    plain = build_tokenizer()
    plain.chat_template = None
    lm = LoadedModel(model=tiny_lm.model, tokenizer=plain, name="tiny-llama", source=tiny_lm.source)
    client = create_app(Engine(lm, ServerConfig(max_new_tokens=MAX_NEW))).test_client()
    assert ok(client.get("/api/model"))["has_chat_template"] is False
    run = ok(client.post("/api/generate", json={"prompt": "The quick brown fox", "temperature": 0,
                                                "max_new_tokens": 2}))
    assert run["params"]["use_chat_template"] is False
    assert [t["id"] for t in run["tokens"][:-2]] == plain("The quick brown fox")["input_ids"]
    for path in ("/api/generate", "/api/estimate", "/api/generate/stream"):
        assert_error(client.post(path, json={"prompt": "x", "use_chat_template": True}), 400, "use_chat_template")
    assert_error(client.post("/api/score", json={"text": "x y", "use_chat_template": True}), 400, "use_chat_template")
