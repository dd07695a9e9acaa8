"""POST /api/fork, GET /api/diff and POST /api/score on the tiny model, with every number checked
against the model's own forward pass over each run's ids."""
import math

import pytest
import torch

from . import reference as R
from .support import MAX_NEW, VOCAB, get, ok


def ids_of(run):
    return [t["id"] for t in run["tokens"]]


def assert_stats_match(run, ref):
    ids = ids_of(run)
    for t in run["tokens"][1:]:
        want = ref.position_stats(ids, t["position"])
        assert t["prob"] == pytest.approx(want["prob"], rel=1e-4, abs=1e-7), t
        assert t["rank"] == want["rank"] and t["entropy"] == pytest.approx(want["entropy"], rel=1e-4), t


# ---- fork ------------------------------------------------------------------------------------------
def test_fork_forces_the_alternative_and_links_the_runs(client, greedy_run, ref):
    parent = greedy_run
    p = parent["num_prompt_tokens"]
    pos = p + 2
    second = get(client, "/api/token_probs", run_id=parent["run_id"], position=pos, top_n=2)["candidates"][1]
    fork = ok(client.post("/api/fork", json={"run_id": parent["run_id"], "position": pos, "token_id": second["id"]}))
    assert (fork["kind"], fork["parent_id"], fork["fork_position"]) == ("fork", parent["run_id"], pos)
    assert fork["params"] | {"seed": None} == parent["params"] | {"seed": None}  # the parent's sampling settings
    assert fork["num_prompt_tokens"] == p and fork["num_tokens"] == pos + 8
    ids = ids_of(fork)
    assert ids[:pos] == ids_of(parent)[:pos] and ids[pos] == second["id"] and ids != ids_of(parent)
    forced = fork["tokens"][pos]
    assert forced["prob"] == pytest.approx(second["prob"], rel=1e-5) and forced["rank"] == 2
    assert forced["sample_prob"] == 0.0  # greedy would never have drawn it
    assert fork["tokens"][:pos] == parent["tokens"][:pos]  # the prefix keeps the parent's statistics
    for t in fork["tokens"][pos + 1:]:  # then greedy decoding from the new prefix
        assert t["id"] == int(ref.forward(ids).probs[t["position"] - 1].argmax()) and t["rank"] == 1
    assert_stats_match(fork, ref)
    assert fork["run_id"] in get(client, "/api/run", run_id=parent["run_id"])["children"]
    assert get(client, "/api/run", run_id=fork["run_id"])["parent_id"] == parent["run_id"]


def test_fork_in_the_prompt_with_new_settings(client, greedy_run, ref):
    parent = greedy_run
    fork = ok(client.post("/api/fork", json={"run_id": parent["run_id"], "position": 4, "token_id": 42,
                                             "temperature": 1.1, "top_k": 0, "top_p": 1.0, "seed": 5,
                                             "max_new_tokens": 5}))
    assert fork["num_prompt_tokens"] == 4 and fork["num_tokens"] == 4 + 5
    assert {k: fork["params"][k] for k in ("temperature", "top_k", "top_p", "max_new_tokens", "seed")} == \
        {"temperature": 1.1, "top_k": 0, "top_p": 1.0, "max_new_tokens": 5, "seed": 5}
    assert ids_of(fork)[:4] == ids_of(parent)[:4] and fork["tokens"][4]["id"] == 42
    assert all(t["source"] == "generated" for t in fork["tokens"][4:])
    ids = ids_of(fork)
    for t in fork["tokens"][5:]:
        q = R.hf_sampling_distribution(ref.forward(ids).logits[t["position"] - 1], 1.1, 0, 1.0)
        assert t["sample_prob"] == pytest.approx(float(q[t["id"]]), rel=1e-4)
    assert_stats_match(fork, ref)


def test_fork_forcing_eos_ends_the_run(client, greedy_run):
    n = greedy_run["num_tokens"]
    fork = ok(client.post("/api/fork", json={"run_id": greedy_run["run_id"], "position": n, "token_id": 3}))
    assert fork["finish_reason"] == "eos" and fork["num_tokens"] == n + 1
    assert fork["tokens"][-1]["text"] == "<|im_end|>" and fork["tokens"][-1]["special"] is True


def test_fork_of_a_scored_text_uses_the_default_length(client):
    scored = ok(client.post("/api/score", json={"text": "The quick brown fox jumps over the lazy dog."}))
    fork = ok(client.post("/api/fork", json={"run_id": scored["run_id"], "position": 3, "token_id": 50,
                                             "temperature": 0}))
    assert fork["params"]["max_new_tokens"] == min(128, MAX_NEW)
    if fork["finish_reason"] == "length":
        assert fork["num_tokens"] == 3 + fork["params"]["max_new_tokens"]
    else:
        assert fork["finish_reason"] == "eos" and fork["tokens"][-1]["id"] == 3


@pytest.mark.parametrize("change, field, status", [
    ({"run_id": None}, "run_id", 400),
    ({"run_id": 7}, "run_id", 400),
    ({"run_id": "0123456789abcdef"}, "run_id", 404),
    ({"position": None}, "position", 400),
    ({"position": "3"}, "position", 400),
    ({"position": 2.0}, "position", 400),
    ({"position": True}, "position", 400),
    ({"position": 0}, "position", 400),
    ({"position": -1}, "position", 400),
    ({"position": 10**6}, "position", 400),
    ({"position": "NaN"}, "position", 400),
    ({"token_id": None}, "token_id", 400),
    ({"token_id": -1}, "token_id", 400),
    ({"token_id": VOCAB}, "token_id", 400),
    ({"token_id": 10**30}, "token_id", 400),
    ({"token_id": False}, "token_id", 400),
    ({"temperature": -1}, "temperature", 400),
    ({"temperature": "warm"}, "temperature", 400),
    ({"top_p": 2}, "top_p", 400),
    ({"max_new_tokens": MAX_NEW + 1}, "max_new_tokens", 400),
    ({"seed": -5}, "seed", 400),
])
def test_fork_bad_input(client, greedy_run, assert_error, change, field, status):
    body = {"run_id": greedy_run["run_id"], "position": 3, "token_id": 5} | change
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(client.post("/api/fork", json=body), status, field)


# ---- diff ------------------------------------------------------------------------------------------
def _sampling(logits, params):
    if params["temperature"] == 0:
        q = torch.zeros_like(logits)
        q[int(logits.argmax())] = 1.0
        return q
    return R.hf_sampling_distribution(logits, params["temperature"], params["top_k"], params["top_p"])


def _check_diff(body, a, b, ref):
    ia, ib = ids_of(a), ids_of(b)
    prefix = next((i for i, (x, y) in enumerate(zip(ia, ib)) if x != y), min(len(ia), len(ib)))
    n = min(len(ia), len(ib))
    assert (body["run_a"], body["run_b"]) == (a["run_id"], b["run_id"])
    assert body["common_prefix"] == prefix and body["aligned_length"] == n
    assert body["divergence_position"] == (None if ia == ib else prefix)
    assert body["same"] == [x == y for x, y in zip(ia, ib)]
    assert body["tokens_a"] == a["tokens"] and body["tokens_b"] == b["tokens"]
    assert (body["params_a"], body["params_b"]) == (a["params"], b["params"])
    assert [row["position"] for row in body["kl"]] == list(range(1, n))
    fa, fb = ref.forward(ia), ref.forward(ib)
    for row in body["kl"]:
        pos = row["position"]
        la, lb = fa.logits[pos - 1], fb.logits[pos - 1]
        want_raw = R.kl(torch.softmax(la, -1), torch.softmax(lb, -1))
        want_sampling = R.kl(_sampling(la, a["params"]), _sampling(lb, b["params"]))
        assert row["kl_raw"] == pytest.approx(want_raw, rel=1e-3, abs=1e-5), row
        assert row["kl_sampling"] == pytest.approx(want_sampling, rel=1e-3, abs=1e-5), row
        assert row["in_common_prefix"] == (pos <= prefix)
        if pos <= prefix:
            assert row["kl_raw"] < 1e-5  # the same prefix predicts the same distribution


def test_diff_of_a_parent_and_its_fork(client, greedy_run, ref):
    pos = greedy_run["num_prompt_tokens"] + 1
    fork = ok(client.post("/api/fork", json={"run_id": greedy_run["run_id"], "position": pos, "token_id": 77}))
    body = get(client, "/api/diff", run_a=greedy_run["run_id"], run_b=fork["run_id"])
    assert body["divergence_position"] == pos
    assert any(row["kl_raw"] > 1e-4 for row in body["kl"] if row["position"] > pos)
    _check_diff(body, greedy_run, fork, ref)


def test_diff_two_temperatures_has_a_sampling_kl(client, ref):
    base = {"prompt": "Name three colours.", "max_new_tokens": 5}
    a = ok(client.post("/api/generate", json=base | {"temperature": 0}))
    b = ok(client.post("/api/generate", json=base | {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "seed": 2}))
    body = get(client, "/api/diff", run_a=a["run_id"], run_b=b["run_id"])
    assert all(row["kl_sampling"] > 0 for row in body["kl"])  # a point mass against a full distribution
    _check_diff(body, a, b, ref)


def test_diff_of_a_run_with_itself(client, greedy_run, ref):
    body = get(client, "/api/diff", run_a=greedy_run["run_id"], run_b=greedy_run["run_id"])
    assert body["divergence_position"] is None and all(body["same"])
    assert all(row["kl_raw"] == 0 and row["kl_sampling"] == 0 for row in body["kl"])
    _check_diff(body, greedy_run, greedy_run, ref)


def test_diff_bad_input(client, greedy_run, assert_error):
    rid = greedy_run["run_id"]
    assert_error(client.get("/api/diff", query_string={"run_b": rid}), 400, "run_a")
    assert_error(client.get("/api/diff", query_string={"run_a": rid}), 400, "run_b")
    assert_error(client.get("/api/diff", query_string={"run_a": rid, "run_b": ""}), 400, "run_b")
    body = assert_error(client.get("/api/diff", query_string={"run_a": "feedfacefeedface", "run_b": rid}), 404, "run_a")
    assert "unknown run id" in body["error"]
    assert_error(client.get("/api/diff", query_string={"run_a": rid, "run_b": "nope"}), 404, "run_b")


# ---- score -----------------------------------------------------------------------------------------
TEXT = "The quick brown fox jumps over the lazy dog."


def _check_score(run, ref):
    ids = ids_of(run)
    probs = [ref.position_stats(ids, i)["prob"] for i in range(1, len(ids))]
    ranks = [ref.position_stats(ids, i)["rank"] for i in range(1, len(ids))]
    nll = [-math.log(p) for p in probs]
    score = run["score"]
    assert score["num_scored"] == len(ids) - 1
    assert score["mean_nll"] == pytest.approx(sum(nll) / len(nll), rel=1e-4)
    assert score["perplexity"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-4)
    assert score["gltr"] == {"top10": sum(r <= 10 for r in ranks), "top100": sum(10 < r <= 100 for r in ranks),
                             "top1000": sum(100 < r <= 1000 for r in ranks), "beyond": sum(r > 1000 for r in ranks)}
    assert_stats_match(run, ref)


def test_score_text_raw(client, tiny_tokenizer, ref):
    run = ok(client.post("/api/score", json={"text": TEXT}))
    assert (run["kind"], run["finish_reason"], run["status"]) == ("score", "scored", "done")
    assert ids_of(run) == tiny_tokenizer(TEXT)["input_ids"] and run["num_prompt_tokens"] == run["num_tokens"]
    assert run["generated_text"] == "" and run["params"]["use_chat_template"] is False
    assert all(t["source"] == "prompt" and t["sample_prob"] is None for t in run["tokens"])
    _check_score(run, ref)
    # every view works on a scored run
    assert get(client, "/api/attention", run_id=run["run_id"], layer=1)["num_tokens"] == run["num_tokens"]
    assert get(client, "/api/logit_lens", run_id=run["run_id"])["num_tokens"] == run["num_tokens"]


def test_score_with_the_chat_template_and_a_system_prompt(client, tiny_tokenizer, ref):
    run = ok(client.post("/api/score", json={"text": TEXT, "system": "You are terse.", "use_chat_template": True}))
    text = tiny_tokenizer.apply_chat_template([{"role": "system", "content": "You are terse."},
                                               {"role": "user", "content": TEXT}], tokenize=False,
                                              add_generation_prompt=False)
    assert ids_of(run) == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "".join(t["text"] for t in run["tokens"] if t["segment"] == "user") == TEXT
    assert "".join(t["text"] for t in run["tokens"] if t["segment"] == "system") == "You are terse."
    _check_score(run, ref)


@pytest.mark.parametrize("body, field", [
    ({}, "text"), ({"text": ""}, "text"), ({"text": "  \n"}, "text"), ({"text": 5}, "text"), ({"text": ["a"]}, "text"),
    ({"text": "hello " * 200}, "text"),
    ({"text": "a b", "system": 1}, "system"),
    ({"text": "a b", "use_chat_template": "no"}, "use_chat_template"),
])
def test_score_bad_input(client, assert_error, body, field):
    assert_error(client.post("/api/score", json=body), 400, field)
