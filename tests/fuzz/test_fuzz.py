"""Property-based fuzzing of the v1 API on the real default model (hypothesis).

Thousands of generated requests: wrong types, huge numbers, NaN and Infinity, unicode, empty
bodies and truncated JSON. No request may get a 5xx, and every 4xx must have the error shape.
The engine is configured so that valid requests stay cheap (2 new tokens, 96-token context).
"""
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmvis.web.app import create_app
from llmvis.core.config import ServerConfig
from llmvis.engine.engine import Engine

pytestmark = pytest.mark.model
EXAMPLES = int(os.environ.get("LLMVIS_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
COUNT = {"requests": 0, "4xx": 0, "2xx": 0, "5xx": 0}

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400), st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-2, max_value=2),
    st.text(max_size=40), st.sampled_from(["", " ", "mean", "max", "0", "-1", "1e309", "NaN", "\u202e\u200b", "</script>"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
FIELDS = ["prompt", "messages", "system", "use_chat_template", "temperature", "top_k", "top_p", "max_new_tokens", "seed"]
plausible = {
    "prompt": st.text(min_size=0, max_size=60),
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "x"]),
                                                "content": st.text(max_size=20)}), max_size=3),
    "system": st.text(max_size=20),
    "use_chat_template": st.booleans(),
    "temperature": st.floats(min_value=-1, max_value=3),
    "top_k": st.integers(min_value=-2, max_value=60000),
    "top_p": st.floats(min_value=-0.5, max_value=1.5),
    "max_new_tokens": st.integers(min_value=-1, max_value=4),
    "seed": st.integers(min_value=-5, max_value=2**64),
}
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6) | st.fixed_dictionaries(
    {}, optional={k: (plausible[k] | json_values) for k in FIELDS})


@pytest.fixture(scope="module")
def client(default_lm):
    eng = Engine(default_lm, ServerConfig(max_new_tokens=2, max_context=96, max_body_bytes=64 << 10))
    return create_app(eng).test_client()


@pytest.fixture(scope="module")
def run_id(client):
    return client.post("/api/generate", json={"prompt": "Hello", "temperature": 0, "max_new_tokens": 2}).get_json()["run_id"]


def check(resp):
    COUNT["requests"] += 1
    status = resp.status_code
    assert status < 500, (status, resp.get_data(as_text=True)[:300])
    if status >= 400:
        COUNT["4xx"] += 1
        body = resp.get_json(silent=True)
        assert isinstance(body, dict) and {"error", "status"} <= set(body), resp.get_data(as_text=True)[:300]
        assert body["status"] == status and isinstance(body["error"], str) and body["error"]
    else:
        COUNT["2xx"] += 1
        if resp.mimetype == "application/json":
            text = resp.get_data(as_text=True)
            assert "NaN" not in text and "Infinity" not in text


@FUZZ
@given(body=bodies)
def test_generate_bodies(client, body):
    data = json.dumps(body, allow_nan=True)
    check(client.post("/api/generate", data=data, content_type="application/json"))


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode), cut=st.integers(min_value=0, max_value=80))
def test_raw_and_truncated_bodies(client, raw, cut):
    check(client.post("/api/generate", data=raw, content_type="application/json"))
    valid = json.dumps({"prompt": "hi", "temperature": 0, "max_new_tokens": 1})
    check(client.post("/api/generate", data=valid[:cut], content_type="application/json"))
    check(client.post("/api/cancel", data=raw, content_type="application/json"))


query_values = st.one_of(st.text(max_size=12), st.integers(min_value=-(10**25), max_value=10**25).map(str),
                         st.integers(min_value=-2, max_value=40).map(str), st.sampled_from(["mean", "max", "f16", "json", "nan", ""]))
GET_ENDPOINTS = {
    "/api/attention": ["layer", "head", "format", "pool", "pool_mode", "q_start", "q_end", "k_start", "k_end"],
    "/api/token_probs": ["position", "top_n"],
    "/api/embedding_projection": ["layer", "method"],
    "/api/hidden_similarity": [],
    "/api/run": [],
}


@FUZZ
@given(data=st.data())
def test_get_endpoints(client, run_id, data):
    path = data.draw(st.sampled_from(sorted(GET_ENDPOINTS)))
    names = GET_ENDPOINTS[path]
    query = data.draw(st.dictionaries(st.sampled_from(names + ["run_id", "zzz"]), query_values, max_size=5)) if names else {}
    if data.draw(st.booleans()):
        query["run_id"] = run_id
    check(client.get(path, query_string=query))


def test_report_counts():
    """Runs last in this module: the counts go to artifacts/ for the closing note."""
    assert COUNT["requests"] >= 3 * EXAMPLES and COUNT["5xx"] == 0
    out = Path(__file__).resolve().parents[2] / "artifacts"
    out.mkdir(exist_ok=True)
    (out / "fuzz_counts.json").write_text(json.dumps(COUNT))
