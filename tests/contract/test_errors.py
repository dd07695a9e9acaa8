"""Errors across the whole API on the tiny model: unknown and expired run ids on every endpoint
that takes one, unknown endpoints, wrong methods, too-large bodies, and a sweep of hostile
requests over every route: always the one JSON error shape, never a 500, never HTML."""
import json
import re

import pytest

from .support import ok

RUN_GETS = ["/api/run", "/api/token_probs", "/api/attention", "/api/hidden_similarity", "/api/embedding_projection",
            "/api/logit_lens", "/api/attention_insights", "/api/attention_row", "/api/segments"]
VALID_QUERY = {"layer": 0, "position": 1, "head": "mean"}


def every_run_request(client, run_id):
    """(description, response) for every endpoint that names a run."""
    for path in RUN_GETS:
        yield path, client.get(path, query_string={"run_id": run_id} | VALID_QUERY)
    yield "/api/diff run_a", client.get("/api/diff", query_string={"run_a": run_id, "run_b": run_id})
    yield "/api/fork", client.post("/api/fork", json={"run_id": run_id, "position": 1, "token_id": 5})
    yield "/api/cancel", client.post("/api/cancel", json={"run_id": run_id})
    yield "/export", client.get(f"/api/runs/{run_id}/export")
    yield "/share", client.get(f"/api/runs/{run_id}/share")


@pytest.mark.parametrize("run_id", ["0123456789abcdef", "nope", "z" * 5000])
def test_unknown_run_ids_answer_404_unknown_run_id(client, assert_error, run_id):
    for what, resp in every_run_request(client, run_id):
        if what in ("/export", "/share") and not re.fullmatch(r"[0-9a-f]{8,32}", run_id):
            assert_error(resp, 400, "run_id")  # not even a run id: it never reaches a file name
            continue
        body = assert_error(resp, 404, "run_a" if "run_a" in what else "run_id")
        assert "unknown run id" in body["error"], (what, body)
        assert len(body["error"]) < 200, (what, body)  # the id is not echoed in full


def test_expired_runs_answer_404_run_expired(make_server, assert_error):
    body = {"prompt": "One", "temperature": 0, "max_new_tokens": 4}
    _, probe = make_server()
    size = ok(probe.post("/api/estimate", json=body))["run_bytes"]
    eng, client = make_server(store_budget_bytes=int(size * 2.5))  # two runs fit, not three
    first = ok(client.post("/api/generate", json=body))
    for word in ("Two", "Six"):
        ok(client.post("/api/generate", json=body | {"prompt": word}))
    for what, resp in every_run_request(client, first["run_id"]):
        err = assert_error(resp, 404, "run_a" if "run_a" in what else "run_id")
        assert "run expired" in err["error"], (what, err)
    assert eng.store.total_bytes <= int(size * 2.5)
    # the runs still held answer
    assert ok(client.post("/api/generate", json=body | {"prompt": "Ten"}))["finish_reason"] == "length"


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/nope"), ("POST", "/api/nope"), ("GET", "/nope"), ("GET", "/api/runs/0123456789abcdef/nope"),
    ("GET", "/api/"), ("DELETE", "/api/history"), ("GET", "/api/run/extra"), ("GET", "/api/history/"),
])
def test_unknown_endpoints_answer_404_json(client, assert_error, method, path):
    resp = client.open(path, method=method)
    if resp.status_code == 405:  # DELETE /api/history exists as a GET route
        assert_error(resp, 405)
        return
    body = assert_error(resp, 404)
    assert "no such endpoint" in body["error"]


def _routes(client):
    return [r for r in client.application.url_map.iter_rules() if r.rule.startswith("/api/")]


def _concrete(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?\w+>", "0123456789abcdef", rule)


def test_wrong_methods_answer_405_json_on_every_route(client, assert_error):
    allowed: dict[str, set] = {}
    for rule in _routes(client):  # one path may have a rule per method
        allowed.setdefault(_concrete(rule.rule), set()).update(rule.methods)
    assert len(allowed) >= 20
    for path, methods in allowed.items():
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - methods:
            body = assert_error(client.open(path, method=method), 405)
            assert f"method {method} is not allowed" in body["error"], (path, body)


def test_a_405_names_the_allowed_methods(client):
    resp = client.open("/api/generate", method="GET")
    assert resp.status_code == 405 and set(resp.headers.get("Allow", "").replace(" ", "").split(",")) >= {"POST"}


@pytest.mark.parametrize("method, path", [("POST", "/api/generate"), ("POST", "/api/fork"), ("POST", "/api/score"),
                                          ("POST", "/api/cancel"), ("POST", "/api/estimate"),
                                          ("PATCH", "/api/history/0123456789abcdef")])
def test_bodies_over_the_limit_answer_413_json(make_server, assert_error, method, path):
    _, client = make_server(max_body_bytes=2048)
    body = json.dumps({"prompt": "x" * 4096, "title": "x" * 4096})
    err = assert_error(client.open(path, method=method, data=body, content_type="application/json"), 413, "body")
    assert "2048 bytes" in err["error"]
    small = client.open(path, method=method, data=json.dumps({"prompt": "x" * 100}), content_type="application/json")
    assert small.status_code != 413


HOSTILE_QUERIES = [{}, {"run_id": "x"}, {"layer": "NaN"}, {"position": "1e9"}, {"head": "%00"}, {"top_k": "-0"},
                   {"start": "9" * 50}, {"format": "<script>"}, {"pool": "16.5"}, {"limit": "١"},
                   {"run_id": "\u2603" * 100}]
HOSTILE_BODIES = [b"", b"{}", b"[]", b"{\"prompt\": null}", b"{\"run_id\": {\"$gt\": 1}}", b"\x00\x01",
                  b"{\"prompt\": \"x\", \"max_new_tokens\": 1e400}", "{\"prompt\": \"\u0000\\ud800\"}".encode()]


def test_hostile_requests_on_every_route_never_answer_5xx_or_html(client, greedy_run):
    rid = greedy_run["run_id"]
    for rule in _routes(client):
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            for path in (_concrete(rule.rule), rule.rule.replace("<run_id>", rid)):
                for query in HOSTILE_QUERIES:
                    for data in (HOSTILE_BODIES if method != "GET" else [None]):
                        q = query | ({"run_id": rid} if "run_id" not in query and "run_id" not in rule.rule else {})
                        resp = client.open(path, method=method, query_string=q, data=data,
                                           content_type="application/json" if data is not None else None)
                        where = (method, path, query, data)
                        assert resp.status_code < 500, (where, resp.get_data(as_text=True)[:300])
                        if resp.status_code >= 400:
                            assert resp.is_json and set(resp.get_json()) >= {"error", "status"}, where
                        else:
                            assert resp.mimetype != "text/html" or path.endswith("/share"), where
