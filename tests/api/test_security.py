"""Closed to other sites: the Host allowlist, the same-origin rule for state changes, strict content
types, the token, the headers, strict integers, bounded JSON and bundles that can never answer 500
or poison a run. Through the Flask test client on the real default model."""
import io
import json
import math
import struct
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import load, save

from llmvis.core.config import ServerConfig
from llmvis.engine.engine import Engine
from llmvis.web.app import create_app

pytestmark = pytest.mark.model
TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def engine(default_lm):
    return Engine(default_lm, ServerConfig(max_new_tokens=16))


@pytest.fixture(scope="module")
def client(engine):
    return create_app(engine).test_client()


@pytest.fixture(scope="module")
def run_id(client):
    r = client.post("/api/generate", json={"prompt": "Name a colour.", "temperature": 0, "max_new_tokens": 4})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["run_id"]


@pytest.fixture(scope="module")
def bundle(client, run_id):
    resp = client.get(f"/api/runs/{run_id}/export")
    assert resp.status_code == 200
    return resp.data


# ---- Host allowlist (DNS rebinding) --------------------------------------------------------------
@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "LOCALHOST:80"])
def test_loopback_hosts_are_served(client, host):
    assert client.get("/api/model", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example:5000", "evil.example", "127.0.0.1.evil.example", "localhost.evil.example"])
def test_other_hosts_are_refused_everywhere(client, run_id, host, assert_error):
    for path in ("/api/model", "/api/history", f"/api/run?run_id={run_id}", "/", f"/api/runs/{run_id}/export"):
        assert_error(client.get(path, headers={"Host": host}), 403, "host")
    assert_error(client.post("/api/estimate", json={"prompt": "x"}, headers={"Host": host}), 403, "host")


def test_the_bound_host_and_allowed_names_are_served(default_lm, assert_error):
    eng = Engine(default_lm, ServerConfig(bind_host="10.1.2.3", allowed_hosts=("box.lan",), token=TOKEN))
    c = create_app(eng).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for host in ("10.1.2.3:5000", "box.lan", "box.lan:8080", "localhost"):
        assert c.get("/api/model", headers={"Host": host, **auth}).status_code == 200, host
    assert_error(c.get("/api/model", headers={"Host": "other.lan", **auth}), 403, "host")
    anyhost = create_app(Engine(default_lm, ServerConfig(allowed_hosts=("*",)))).test_client()
    assert anyhost.get("/api/model", headers={"Host": "whatever.example"}).status_code == 200


# ---- cross-site state changes ------------------------------------------------------------------
def test_same_origin_and_originless_requests_pass(client):
    body = {"prompt": "x", "max_new_tokens": 2}
    assert client.post("/api/estimate", json=body, headers={"Origin": "http://localhost"}).status_code == 200
    assert client.post("/api/estimate", json=body, headers={"Origin": "http://127.0.0.1:5000",
                                                           "Host": "127.0.0.1:5000"}).status_code == 200
    assert client.post("/api/estimate", json=body).status_code == 200  # curl, scripts: no Origin, no cookie


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://localhost:9999"},          # another port is another origin
    {"Origin": "null"},                            # file:// pages and sandboxed frames
    {"Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://localhost", "Sec-Fetch-Site": "same-site"},
])
def test_cross_site_state_changes_are_refused(client, engine, run_id, headers, assert_error):
    before = len(engine.store)
    assert_error(client.post("/api/generate", json={"prompt": "x", "max_new_tokens": 2}, headers=headers), 403, "origin")
    assert_error(client.post("/api/cancel", json={"run_id": run_id}, headers=headers), 403, "origin")
    assert_error(client.delete(f"/api/history/{run_id}", headers=headers), 403, "origin")
    assert len(engine.store) == before


def test_a_request_with_cookies_must_say_its_origin(client, assert_error):
    client.set_cookie("session", "x", domain="localhost")
    try:
        assert_error(client.post("/api/estimate", json={"prompt": "x"}), 403, "origin")
        assert client.post("/api/estimate", json={"prompt": "x"}, headers={"Origin": "http://localhost"}).status_code == 200
    finally:
        client.delete_cookie("session", domain="localhost")


@pytest.mark.parametrize("content_type, data", [
    ("text/plain", '{"prompt": "x"}'),                                   # no-cors fetch, sendBeacon with a string
    ("text/plain", '{"prompt":"x","pad":"=\\"}"}'),                       # <form enctype="text/plain">
    ("application/x-www-form-urlencoded", "prompt=x"),
    (None, '{"prompt": "x"}'),
])
def test_json_endpoints_need_json(client, engine, content_type, data, assert_error):
    before = len(engine.store)
    kwargs = {"content_type": content_type} if content_type else {}
    for path in ("/api/generate", "/api/generate/stream", "/api/score", "/api/fork", "/api/estimate"):
        assert_error(client.post(path, data=data, **kwargs), 415, "Content-Type")
    assert len(engine.store) == before


def test_imports_need_their_content_types_and_always_get_a_fresh_id(client, engine, run_id, bundle, assert_error):
    assert_error(client.post("/api/import", data=bundle, content_type="text/plain"), 415, "Content-Type")
    assert_error(client.post("/api/import", data=bundle), 415, "Content-Type")
    first = client.post("/api/import", data=bundle, content_type="application/octet-stream").get_json()
    second = client.post("/api/import", data={"file": (io.BytesIO(bundle), "run.llmvis")},
                         content_type="multipart/form-data").get_json()
    ids = {run_id, first["run_id"], second["run_id"]}
    assert len(ids) == 3, ids  # the id inside the bundle is never kept, and each import is a new run
    assert [t["id"] for t in first["tokens"]] == [t["id"] for t in second["tokens"]]
    assert_error(client.post("/api/import", data=bundle, content_type="application/octet-stream",
                             headers={"Origin": "http://evil.example"}), 403, "origin")


def test_a_bundle_cannot_choose_its_id(client, engine, bundle):
    doc, tensors = _split(bundle)
    doc["run"]["id"] = "deadbeefdeadbeef"
    r = client.post("/api/import", data=_join(doc, tensors), content_type="application/octet-stream")
    assert r.status_code == 200 and r.get_json()["run_id"] != "deadbeefdeadbeef"
    assert "deadbeefdeadbeef" not in engine.store


# ---- token ---------------------------------------------------------------------------------------
def test_token_mode_end_to_end(default_lm, assert_error):
    c = create_app(Engine(default_lm, ServerConfig(token=TOKEN, max_new_tokens=4))).test_client()
    assert_error(c.get("/api/model"), 401, "token")
    assert_error(c.get("/"), 401, "token")
    assert_error(c.get("/api/model", headers={"Authorization": "Bearer wrong-token-xx"}), 401, "token")
    assert_error(c.get("/api/model?token=wrong-token-xx"), 401, "token")
    assert c.get("/api/model", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    page = c.get(f"/?token={TOKEN}&run=abc")
    assert page.status_code == 303 and page.headers["Location"] == "/?run=abc"  # the token leaves the address bar
    cookie = page.headers["Set-Cookie"]
    assert f"llmvis_token={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert c.get("/").status_code == 200  # the cookie now carries it
    assert c.get("/static/js/main.js").status_code == 200
    r = c.post("/api/generate", json={"prompt": "Hi", "max_new_tokens": 2, "temperature": 0},
               headers={"Origin": "http://localhost"})
    assert r.status_code == 200, r.get_json()
    c.delete_cookie("llmvis_token")
    assert_error(c.get("/api/model"), 401, "token")


# ---- headers, integers, JSON depth ------------------------------------------------------------------
def test_no_framing_no_referrer_isolated_opener(client):
    for path in ("/", "/api/model"):
        h = client.get(path).headers
        assert h["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert h["Referrer-Policy"] == "no-referrer"
        assert h["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.parametrize("raw", ["１", "1_0", "+1", " 1", "1 ", "0x1", "1e1", "٣"])
def test_integers_are_ascii_digits_only(client, run_id, raw, assert_error):
    assert_error(client.get("/api/attention", query_string={"run_id": run_id, "layer": raw}), 400, "layer")
    assert_error(client.get("/api/attention", query_string={"run_id": run_id, "layer": "1", "head": raw}), 400, "head")
    if raw.strip() == raw:  # a layer list may put spaces after its commas ("0, 5")
        assert_error(client.get(f"/api/runs/{run_id}/share", query_string={"layers": raw}), 400, "layers")
    assert client.get("/api/attention", query_string={"run_id": run_id, "layer": "1", "head": "-0"}).status_code == 200


def test_deeply_nested_bodies_are_a_clean_400(client, assert_error):
    assert_error(client.post("/api/generate", data="[" * 100_000, content_type="application/json"), 400, "body")
    deep = '{"prompt": "x", "a": ' + "[" * 100 + "]" * 100 + "}"
    assert_error(client.post("/api/generate", data=deep, content_type="application/json"), 400, "nests")


# ---- bundles ---------------------------------------------------------------------------------------
def _split(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return json.loads(header["__metadata__"]["meta"]), load(data)


def _join(doc, tensors, meta_value=None) -> bytes:
    meta = {"format": "llmvis-run", "version": "1", "meta": json.dumps(doc) if meta_value is None else meta_value}
    return save(tensors, metadata=meta)


def _raw_with_meta(tensors, meta_obj) -> bytes:
    """A bundle whose __metadata__ is written by hand (safetensors' save only takes strings)."""
    blob = save(tensors, metadata={"format": "llmvis-run", "version": "1", "meta": "{}"})
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = meta_obj
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def _raw_dtype_list(bundle: bytes) -> bytes:
    (n,) = struct.unpack("<Q", bundle[:8])
    header = json.loads(bundle[8:8 + n])
    header["stats.prob"]["dtype"] = ["F32"]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bundle[8 + n:]


def _variants(bundle):
    doc, tensors = _split(bundle)

    def with_tensor(name, value):
        return _join(doc, {**tensors, name: value})

    def with_run(**fields):
        d = json.loads(json.dumps(doc))
        d["run"].update(fields)
        return _join(d, tensors)

    t = tensors["ids"].numel()
    inf_prob = tensors["stats.prob"].clone()
    inf_prob[2] = math.inf
    nan_prob = tensors["stats.prob"].clone()
    nan_prob[3] = math.nan
    nan_top = tensors["stats.top_probs"].clone()
    nan_top[3, 0] = math.nan
    return {
        "bf16 stats": with_tensor("stats.prob", tensors["stats.prob"].to(torch.bfloat16)),
        "f8 stats": with_tensor("stats.entropy", tensors["stats.entropy"].to(torch.float8_e4m3fn)),
        "int8 ids": with_tensor("ids", tensors["ids"].to(torch.int8)),
        "infinite prob": with_tensor("stats.prob", inf_prob),
        "NaN prob of a predicted token": with_tensor("stats.prob", nan_prob),
        "NaN alternative": with_tensor("stats.top_probs", nan_top),
        "prob above 1": with_tensor("stats.prob", tensors["stats.prob"] + 2),
        "huge step_s": with_tensor("step_s", torch.zeros(t + 10_000, dtype=torch.float64)),
        "an extra tensor": with_tensor("payload", torch.zeros(1000)),
        "no ids": _join(doc, {k: v for k, v in tensors.items() if k != "ids"}),
        "truncated": bundle[: len(bundle) // 2],
        "meta not a string": _raw_with_meta(tensors, {"format": "llmvis-run", "version": "1", "meta": {"run": {}}}),
        "meta nested 200k deep": _join(doc, tensors, meta_value="[" * 200_000 + "]" * 200_000),
        "created far in the future": with_run(created=1e308),
        "created a string": with_run(created="yesterday"),
        "a 1 MB timing string": with_run(timing={"generate_s": "x" * (1 << 20)}),
        "unknown timing key": with_run(timing={"blob": 1}),
        "unknown finish reason": with_run(finish_reason="<img src=x onerror=alert(1)>"),
        "unknown param": with_run(params={"temperature": 0, "evil": "x"}),
        "kind a list (unhashable; found by the fuzz test)": with_run(kind=[]),
        "a tensor's dtype a list": _raw_dtype_list(bundle),
    }


def test_no_malformed_bundle_answers_500_whether_or_not_its_id_is_taken(client, engine, run_id, bundle, assert_error):
    before = set(engine.store._runs)
    for name, data in _variants(bundle).items():
        for rid in (run_id, "0123456789abcdef"):  # the bundle's id taken here, or free
            try:
                doc, tensors = _split(data)
                doc["run"]["id"] = rid
                data = _join(doc, tensors)
            except Exception:  # noqa: BLE001 - the truncated / unparseable variants stay as they are
                pass
            resp = client.post("/api/import", data=data, content_type="application/octet-stream")
            body = assert_error(resp, 400, "bundle")
            assert len(body["error"]) < 400, (name, body)
    assert set(engine.store._runs) == before  # nothing was added, and the history holds nothing new


def test_a_bundle_cannot_set_internal_fields(client, engine, bundle):
    doc, tensors = _split(bundle)
    doc["run"].update(attention_cache={"x": 1}, similarity_cache=[1, 2], view_cache={"lens": 3},
                      attention_budget=1 << 40, saved=True)
    r = client.post("/api/import", data=_join(doc, tensors), content_type="application/octet-stream")
    assert r.status_code == 200, r.get_json()
    rid = r.get_json()["run_id"]
    run = engine.store.get(rid)
    assert run.attention_cache == {} and run.similarity_cache is None and run.view_cache == {}
    assert run.attention_budget == engine.config.attention_cache_bytes
    for path, q in (("/api/attention", {"layer": "1"}), ("/api/hidden_similarity", {}),
                    ("/api/logit_lens", {"start": "1", "end": "3"}), ("/api/run", {})):
        assert client.get(path, query_string={"run_id": rid, **q}).status_code == 200, path
    assert client.get(f"/api/runs/{rid}/share").status_code == 200


def test_every_answer_about_an_imported_run_is_valid_json(client, bundle):
    r = client.post("/api/import", data=bundle, content_type="application/octet-stream")
    rid = r.get_json()["run_id"]
    for path, q in (("/api/run", {}), ("/api/token_probs", {"position": "2"})):
        text = client.get(path, query_string={"run_id": rid, **q}).get_data(as_text=True)
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{path} emitted {c}"))
        assert np.isfinite([t["prob"] for t in json.loads(text).get("tokens", [])[1:]]).all()


# ---- bounded reads --------------------------------------------------------------------------------
def test_heavy_views_have_their_own_admission(default_lm, assert_error):
    eng = Engine(default_lm, ServerConfig(max_new_tokens=4, max_heavy_reads=1))
    c = create_app(eng).test_client()
    rid = c.post("/api/generate", json={"prompt": "Hi", "temperature": 0, "max_new_tokens": 3}).get_json()["run_id"]
    assert c.get("/api/attention", query_string={"run_id": rid, "layer": "0"}).status_code == 200  # now cached
    holding, release = threading.Event(), threading.Event()

    def busy_elsewhere():  # another request, in another server thread, is computing a view
        with eng.reads.slot():
            holding.set()
            release.wait(60)

    other = threading.Thread(target=busy_elsewhere)
    other.start()
    holding.wait(10)
    try:
        for path, q in (("/api/attention", {"layer": "5"}), ("/api/logit_lens", {}), ("/api/attention_insights", {}),
                        ("/api/attention_row", {"position": "2"}), ("/api/diff", {"run_a": rid, "run_b": rid})):
            resp = c.get(path, query_string={"run_id": rid, **q})
            assert_error(resp, 503, "heavy views")
            assert resp.headers["Retry-After"]
        # what needs no computing still answers: the model, the run, a cached view, probabilities
        assert c.get("/api/model").status_code == 200
        assert c.get("/api/run", query_string={"run_id": rid}).status_code == 200
        assert c.get("/api/attention", query_string={"run_id": rid, "layer": "0"}).status_code == 200
        assert c.get("/api/token_probs", query_string={"run_id": rid, "position": "2"}).status_code == 200
    finally:
        release.set()
        other.join()
    assert len(eng.reads) == 0
    assert c.get("/api/logit_lens", query_string={"run_id": rid}).status_code == 200


def test_json_attention_is_bounded_and_names_the_alternatives(default_lm, assert_error):
    eng = Engine(default_lm, ServerConfig(max_new_tokens=4, max_json_cells=400))
    c = create_app(eng).test_client()
    r = c.post("/api/generate", json={"prompt": "Say hello to the world.", "temperature": 0, "max_new_tokens": 4})
    rid, n = r.get_json()["run_id"], r.get_json()["num_tokens"]
    assert n * n > 400
    body = assert_error(c.get("/api/attention", query_string={"run_id": rid, "layer": "1"}), 413, "format")
    assert "f16" in body["error"] and "pool" in body["error"]
    assert c.get("/api/attention", query_string={"run_id": rid, "layer": "1", "format": "f16"}).status_code == 200
    pooled = c.get("/api/attention", query_string={"run_id": rid, "layer": "1", "pool": "16"}).get_json()
    assert pooled["rows"] * pooled["cols"] <= 400
    window = c.get("/api/attention", query_string={"run_id": rid, "layer": "1", "q_start": "0", "q_end": "10",
                                                   "k_start": "0", "k_end": "10"})
    assert window.status_code == 200 and len(window.get_json()["matrix"]) == 10


# ---- a data folder that fails at run time ----------------------------------------------------------
def test_a_failing_data_folder_answers_503_and_generation_says_it_was_not_saved(default_lm, tmp_path, assert_error):
    import shutil

    eng = Engine(default_lm, ServerConfig(max_new_tokens=4, data_dir=tmp_path))
    c = create_app(eng).test_client()
    kept = c.post("/api/generate", json={"prompt": "Hi", "temperature": 0, "max_new_tokens": 2}).get_json()
    assert kept["saved"] is True and kept["save_error"] is None
    # the folder breaks under the running server (as a full or unmounted disk would): the
    # database is no longer a file and the runs folder no longer a folder (root ignores chmod)
    for leftover in tmp_path.glob("history.sqlite*"):
        leftover.unlink()
    (tmp_path / "history.sqlite").mkdir()
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "runs").write_text("not a folder")
    assert_error(c.get("/api/history"), 503, "history")
    assert_error(c.patch(f"/api/history/{kept['run_id']}", json={"title": "x"}), 503, "history")
    assert_error(c.delete(f"/api/history/{kept['run_id']}"), 503, "history")
    r = c.post("/api/generate", json={"prompt": "Hello", "temperature": 0, "max_new_tokens": 2})
    assert r.status_code == 200
    body = r.get_json()
    assert body["saved"] is False and "history" in body["save_error"]
    assert c.get("/api/run", query_string={"run_id": body["run_id"]}).get_json()["saved"] is False
    assert c.get("/api/attention", query_string={"run_id": body["run_id"], "layer": "0"}).status_code == 200
    assert c.get(f"/api/runs/{kept['run_id']}/export").status_code == 200  # still in memory
    assert c.get(f"/api/runs/{kept['run_id']}/share").status_code == 200
    no_history = create_app(Engine(default_lm, ServerConfig(max_new_tokens=4))).test_client()
    assert no_history.post("/api/generate", json={"prompt": "Hi", "max_new_tokens": 1}).get_json()["saved"] is None


def test_a_long_lens_range_is_a_job_that_can_be_followed_and_cancelled(default_lm, assert_error):
    import time

    eng = Engine(default_lm, ServerConfig(max_new_tokens=4))
    c, watcher = create_app(eng).test_client(), create_app(eng).test_client()
    text = " ".join(f"item{i}" for i in range(200))
    rid = c.post("/api/score", json={"text": text}).get_json()["run_id"]
    n = eng.get_run(rid).num_tokens
    assert n > 3 * 64
    job, answer = "0a1b2c3d4e5f6a7b", {}
    worker = threading.Thread(target=lambda: answer.update(r=c.get(
        "/api/logit_lens", query_string={"run_id": rid, "start": "0", "end": str(n), "job_id": job})))
    worker.start()
    deadline = time.monotonic() + 120
    while True:  # follow it until one step is done, then stop it
        progress = watcher.get(f"/api/jobs/{job}")
        if progress.status_code == 200 and progress.get_json()["done"] >= 64:
            break
        assert time.monotonic() < deadline and worker.is_alive(), progress.get_json()
        time.sleep(0.05)
    assert progress.get_json()["total"] == n and progress.get_json()["status"] == "running"
    stopped = watcher.post("/api/cancel", json={"run_id": job}).get_json()
    assert stopped == {"run_id": job, "cancelled": True, "status": "running"}
    worker.join(120)
    assert_error(answer["r"], 409, "cancelled")
    final = watcher.get(f"/api/jobs/{job}").get_json()
    assert final["status"] == "cancelled" and 64 <= final["done"] < n
    lens = eng.get_run(rid).view_cache["lens"]
    assert int(lens.done.sum()) == final["done"]  # what was computed before the cancel is kept
    again = c.get("/api/logit_lens", query_string={"run_id": rid, "start": "0", "end": str(final["done"])}).get_json()
    assert again["compute_s"] == 0  # served from the cache
    assert_error(watcher.get("/api/jobs/ffffffffffffffff"), 404, "job_id")
    assert_error(watcher.get("/api/jobs/NOT-A-JOB"), 400, "job_id")
    assert_error(c.get("/api/logit_lens", query_string={"run_id": rid, "job_id": "x"}), 400, "job_id")
