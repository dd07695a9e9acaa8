"""Fork from any token, run diff with KL, and text scoring, on the real default model."""
import math

import pytest

from llmvis.web.app import create_app
from llmvis.core.config import ServerConfig
from llmvis.engine.engine import Engine

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine(default_lm):
    return Engine(default_lm, ServerConfig(max_new_tokens=32))


@pytest.fixture(scope="module")
def client(engine):
    return create_app(engine).test_client()


@pytest.fixture(scope="module")
def parent(client):
    r = client.post("/api/generate", json={"prompt": "Name a fruit.", "temperature": 0, "max_new_tokens": 8})
    return r.get_json()


def test_fork_forces_the_alternative_and_links_runs(client, parent):
    pos = parent["num_prompt_tokens"] + 1  # the second generated token
    probs = client.get(f"/api/token_probs?run_id={parent['run_id']}&position={pos}&top_n=5").get_json()
    alt = probs["candidates"][2]  # not the greedy choice
    assert alt["id"] != parent["tokens"][pos]["id"]
    r = client.post("/api/fork", json={"run_id": parent["run_id"], "position": pos, "token_id": alt["id"],
                                       "max_new_tokens": 6})
    assert r.status_code == 200, r.get_json()
    fork = r.get_json()
    assert fork["kind"] == "fork" and fork["parent_id"] == parent["run_id"] and fork["fork_position"] == pos
    assert [t["id"] for t in fork["tokens"][:pos]] == [t["id"] for t in parent["tokens"][:pos]]
    forced = fork["tokens"][pos]
    assert forced["id"] == alt["id"] and forced["source"] == "generated"
    assert forced["prob"] == pytest.approx(alt["prob"], rel=1e-4) and forced["rank"] == 3
    assert forced["sample_prob"] == 0.0  # greedy would never have picked it
    assert fork["num_prompt_tokens"] == parent["num_prompt_tokens"]
    # the inherited generated token keeps its sampled-step statistics
    assert fork["tokens"][pos - 1]["sample_prob"] == parent["tokens"][pos - 1]["sample_prob"] == 1.0
    assert fork["params"]["temperature"] == 0  # inherited
    again = client.get(f"/api/run?run_id={parent['run_id']}").get_json()
    assert fork["run_id"] in again["children"]
    # every other view works on the fork
    assert client.get(f"/api/attention?run_id={fork['run_id']}&layer=2").status_code == 200


def test_fork_bad_input(client, parent, assert_error):
    rid = parent["run_id"]
    assert_error(client.post("/api/fork", json={"position": 3, "token_id": 5}), 400, "run_id")
    assert_error(client.post("/api/fork", json={"run_id": "nope", "position": 3, "token_id": 5}), 404, "run_id")
    assert_error(client.post("/api/fork", json={"run_id": rid, "token_id": 5}), 400, "position")
    assert_error(client.post("/api/fork", json={"run_id": rid, "position": 0, "token_id": 5}), 400, "position")
    assert_error(client.post("/api/fork", json={"run_id": rid, "position": 10**6, "token_id": 5}), 400, "position")
    assert_error(client.post("/api/fork", json={"run_id": rid, "position": 3, "token_id": -1}), 400, "token_id")
    assert_error(client.post("/api/fork", json={"run_id": rid, "position": 3, "token_id": "a"}), 400, "token_id")
    assert_error(client.post("/api/fork", json={"run_id": rid, "position": 3, "token_id": 5, "temperature": -2}), 400, "temperature")


def test_diff_parent_and_fork(client, parent):
    pos = parent["num_prompt_tokens"] + 1
    alt = client.get(f"/api/token_probs?run_id={parent['run_id']}&position={pos}&top_n=3").get_json()["candidates"][1]
    fork = client.post("/api/fork", json={"run_id": parent["run_id"], "position": pos, "token_id": alt["id"],
                                          "max_new_tokens": 4}).get_json()
    d = client.get(f"/api/diff?run_a={parent['run_id']}&run_b={fork['run_id']}").get_json()
    assert d["common_prefix"] == pos and d["divergence_position"] == pos
    assert d["same"][:pos] == [True] * pos and d["same"][pos] is False
    kl = {row["position"]: row for row in d["kl"]}
    assert all(0 <= kl[p]["kl_raw"] <= 1e-5 for p in range(1, pos + 1))  # same model, same context; never < 0
    assert kl[pos]["in_common_prefix"] and not kl[pos + 1]["in_common_prefix"]
    assert kl[pos + 1]["kl_raw"] > 1e-3  # contexts differ after the fork


def test_diff_two_temperatures_has_positive_sampling_kl(client):
    body = {"prompt": "Say something.", "max_new_tokens": 4, "top_k": 0, "top_p": 1.0, "seed": 1}
    a = client.post("/api/generate", json=body | {"temperature": 0.5}).get_json()
    b = client.post("/api/generate", json=body | {"temperature": 1.0}).get_json()
    d = client.get(f"/api/diff?run_a={a['run_id']}&run_b={b['run_id']}").get_json()
    first_gen = a["num_prompt_tokens"]
    row = next(r for r in d["kl"] if r["position"] == first_gen)
    assert row["in_common_prefix"] and row["kl_raw"] == pytest.approx(0, abs=1e-5)
    assert row["kl_sampling"] > 0.01 and math.isfinite(row["kl_sampling"])


def test_diff_bad_input(client, parent, assert_error):
    assert_error(client.get(f"/api/diff?run_a={parent['run_id']}"), 400, "run_b")
    assert_error(client.get(f"/api/diff?run_a=nope&run_b={parent['run_id']}"), 404, "run_a")


def test_score_text(client):
    text = "The cat sat on the mat. 猫坐在垫子上。"
    r = client.post("/api/score", json={"text": text})
    assert r.status_code == 200, r.get_json()
    run = r.get_json()
    assert run["kind"] == "score" and run["finish_reason"] == "scored"
    assert all(t["source"] == "prompt" for t in run["tokens"])
    probs = [t["prob"] for t in run["tokens"][1:]]
    nll = -sum(math.log(p) for p in probs) / len(probs)
    s = run["score"]
    assert s["num_scored"] == len(probs) and s["perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)
    assert sum(s["gltr"].values()) == len(probs)
    top10 = sum(1 for t in run["tokens"][1:] if t["rank"] <= 10)
    assert s["gltr"]["top10"] == top10
    assert client.get(f"/api/attention?run_id={run['run_id']}&layer=1").status_code == 200
    assert client.get(f"/api/token_probs?run_id={run['run_id']}&position=2").status_code == 200


def test_score_bad_input(client, assert_error):
    assert_error(client.post("/api/score", json={}), 400, "text")
    assert_error(client.post("/api/score", json={"text": "   "}), 400, "text")
    assert_error(client.post("/api/score", json={"text": 3}), 400, "text")
    assert_error(client.post("/api/score", json={"text": "a"}), 400, "text")
    assert_error(client.post("/api/score", json={"text": "hi there", "use_chat_template": "no"}), 400, "use_chat_template")
    assert_error(client.post("/api/score", json={"text": "word " * 9000}), 400, "text")


def test_fork_a_scored_text_uses_the_default_length(client):
    scored = client.post("/api/score", json={"text": "The weather today is"}).get_json()
    r = client.post("/api/fork", json={"run_id": scored["run_id"], "position": 3, "token_id": 11})
    assert r.status_code == 200, r.get_json()
    fork = r.get_json()
    assert fork["params"]["max_new_tokens"] == 32  # the server's cap here (default 128, capped)
    assert fork["tokens"][3]["id"] == 11
