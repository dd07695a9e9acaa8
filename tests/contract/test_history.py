"""Keeping runs on the tiny model: GET/PATCH/DELETE /api/history, export, import (raw and
multipart), share HTML, a restart on the same data folder, and every bad bundle and bad id."""
import io
import json
import re
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load, save

from .support import LAYERS, get, ok


def meta_of(bundle: bytes) -> dict:
    """The bundle's JSON metadata, read straight from the safetensors header."""
    (n,) = struct.unpack("<Q", bundle[:8])
    return json.loads(json.loads(bundle[8:8 + n])["__metadata__"]["meta"])


def rewrite(bundle: bytes, change) -> bytes:
    """A copy of the bundle with change(meta, tensors) applied."""
    meta, tensors = meta_of(bundle), load(bundle)
    change(meta, tensors)
    return save(tensors, metadata={"format": "llmvis-run", "version": "1", "meta": json.dumps(meta)})


LOCAL = {"run_id", "saved", "save_error", "imported"}  # what belongs to one server's copy of a run


def same_run(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in LOCAL} == {k: v for k, v in b.items() if k not in LOCAL}


def post_bundle(client, data: bytes):
    return client.post("/api/import", data=data, content_type="application/octet-stream")


@pytest.fixture(scope="module")
def kept(make_server, tmp_path_factory):
    """A server with history, holding a generated run, a fork of it and a scored text."""
    folder = tmp_path_factory.mktemp("history")
    eng, client = make_server(data_dir=folder)
    gen = ok(client.post("/api/generate", json={"prompt": "Name a colour. </script> & <b>", "temperature": 0.8,
                                                "seed": 7, "max_new_tokens": 6}))
    fork = ok(client.post("/api/fork", json={"run_id": gen["run_id"], "position": gen["num_prompt_tokens"] + 1,
                                             "token_id": 40, "max_new_tokens": 3}))
    score = ok(client.post("/api/score", json={"text": "The quick brown fox jumps."}))
    return folder, eng, client, {"gen": gen, "fork": fork, "score": score}


def test_history_lists_every_finished_run_newest_first(kept):
    folder, _, client, runs = kept
    body = get(client, "/api/history")
    assert body["enabled"] is True and body["total"] == 3
    assert [r["run_id"] for r in body["runs"]] == [runs[k]["run_id"] for k in ("score", "fork", "gen")]
    files = {p.stem: p.stat().st_size for p in folder.rglob("*.llmvis")}
    assert body["total_bytes"] == sum(files.values()) and body["budget_bytes"] == 1 << 30
    for row in body["runs"]:
        run = next(r for r in runs.values() if r["run_id"] == row["run_id"])
        assert row["nbytes"] == files[row["run_id"]]
        got = (row["kind"], row["num_tokens"], row["num_prompt"], row["finish_reason"], row["model"], row["same_model"])
        assert got == (run["kind"], run["num_tokens"], run["num_prompt_tokens"], run["finish_reason"], "tiny-llama", True)
    parents = {r["run_id"]: (r["parent_id"], r["fork_position"]) for r in body["runs"]}
    assert parents[runs["fork"]["run_id"]] == (runs["gen"]["run_id"], runs["gen"]["num_prompt_tokens"] + 1)
    assert parents[runs["gen"]["run_id"]] == parents[runs["score"]["run_id"]] == (None, None)
    titles = {r["run_id"]: r["title"] for r in body["runs"]}
    assert titles[runs["gen"]["run_id"]] == "Name a colour. </script> & <b>"  # the user's text
    assert titles[runs["score"]["run_id"]] == "The quick brown fox jumps."
    page = get(client, "/api/history", limit=1, offset=1)
    assert [r["run_id"] for r in page["runs"]] == [runs["fork"]["run_id"]] and page["total"] == 3


def test_a_restart_on_the_same_folder_serves_every_run_and_view(kept, make_server, ref):
    folder, _, client, runs = kept
    eng2, again = make_server(data_dir=folder)
    assert len(eng2.store) == 0
    for run in runs.values():
        rid = run["run_id"]
        restored = get(again, "/api/run", run_id=rid)
        assert restored["run_id"] == rid and same_run(restored, get(client, "/api/run", run_id=rid))
        for layer in range(LAYERS):
            assert get(again, "/api/attention", run_id=rid, layer=layer, head=1) == \
                get(client, "/api/attention", run_id=rid, layer=layer, head=1)
        assert get(again, "/api/hidden_similarity", run_id=rid) == get(client, "/api/hidden_similarity", run_id=rid)
    gen = runs["gen"]
    fwd = ref.forward([t["id"] for t in gen["tokens"]])
    att = torch.tensor(get(again, "/api/attention", run_id=gen["run_id"], layer=1, head=2)["matrix"], dtype=torch.float64)
    assert torch.allclose(att, fwd.attentions[1][2], atol=2e-5)
    parent = get(again, "/api/run", run_id=gen["run_id"])
    assert parent["children"] == [runs["fork"]["run_id"]]
    assert get(again, "/api/run", run_id=runs["fork"]["run_id"])["parent_id"] == gen["run_id"]


def test_a_run_evicted_from_memory_is_reloaded_from_the_history(make_server, tmp_path):
    eng, client = make_server(data_dir=tmp_path, store_budget_bytes=200 << 10)
    first = ok(client.post("/api/generate", json={"prompt": "One", "temperature": 0, "max_new_tokens": 4}))
    while first["run_id"] in eng.store:  # fill the store until the first run is evicted
        ok(client.post("/api/generate", json={"prompt": "More", "temperature": 0, "max_new_tokens": 4}))
    again = get(client, "/api/run", run_id=first["run_id"])
    assert again["tokens"] == first["tokens"]


def test_export_then_import_is_bit_identical(kept, make_server):
    _, _, client, runs = kept
    rid = runs["gen"]["run_id"]
    resp = client.get(f"/api/runs/{rid}/export")
    assert resp.status_code == 200 and resp.mimetype == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="llmvis-{rid}.llmvis"'
    bundle = resp.data
    meta = meta_of(bundle)
    assert meta["model"]["name"] == "tiny-llama" and meta["run"]["id"] == rid
    tensors = load(bundle)
    assert tensors["ids"].tolist() == [t["id"] for t in runs["gen"]["tokens"]]
    n = runs["gen"]["num_tokens"]
    assert tuple(tensors["hidden"].shape) == (LAYERS + 1, n, 64) and tensors["hidden"].dtype == torch.float32
    _, fresh = make_server(max_body_bytes=1024)  # the JSON body cap does not apply to imports
    assert len(bundle) > 1024
    body = ok(post_bundle(fresh, bundle))
    new_id = body["run_id"]  # the id inside a bundle is never trusted: an import gets a fresh one
    assert body["imported"] is True and re.fullmatch(r"[0-9a-f]{8,32}", new_id) and new_id != rid
    assert same_run(body, get(client, "/api/run", run_id=rid))
    for path, query in (("/api/attention", {"layer": 1}), ("/api/token_probs", {"position": 3, "top_n": 50}),
                        ("/api/logit_lens", {}), ("/api/embedding_projection", {"layer": 1})):
        a, b = get(fresh, path, run_id=new_id, **query), get(client, path, run_id=rid, **query)
        a.pop("compute_s", None), b.pop("compute_s", None)
        assert a == b, path
    again = load(fresh.get(f"/api/runs/{new_id}/export").data)
    assert again.keys() == tensors.keys()
    for k in tensors:  # bit-identical, NaN (undefined statistics) included
        assert again[k].dtype == tensors[k].dtype, k
        assert torch.equal(again[k].view(torch.uint8), tensors[k].view(torch.uint8)), k


def test_import_by_multipart_and_each_import_is_a_new_run(kept, make_server):
    _, _, client, runs = kept
    rid = runs["fork"]["run_id"]
    original = get(client, "/api/run", run_id=rid)
    bundle = client.get(f"/api/runs/{rid}/export").data
    eng, fresh = make_server()
    answers = [ok(fresh.post("/api/import", data={"file": (io.BytesIO(bundle), "run.llmvis")},
                             content_type="multipart/form-data")) for _ in range(2)]
    assert len({a["run_id"] for a in answers} | {rid}) == 3 and len(eng.store) == 2
    assert all(same_run(a, original) for a in answers)
    assert answers[0]["parent_id"] == runs["gen"]["run_id"] and answers[0]["kind"] == "fork"
    edited = rewrite(bundle, lambda m, t: t["ids"].__setitem__(-1, 5))
    third = ok(post_bundle(fresh, edited))
    assert third["tokens"][-1]["id"] == 5 and third["tokens"][:-1] == original["tokens"][:-1]


@pytest.fixture(scope="module")
def bundle(kept):
    _, _, client, runs = kept
    return client.get(f"/api/runs/{runs['gen']['run_id']}/export").data


@pytest.mark.parametrize("name, make, expect", [
    ("garbage", lambda b: b"PK\x03\x04 certainly not a bundle", "not a llmvis bundle"),
    ("short", lambda b: b"\x01\x02", "too short"),
    ("truncated", lambda b: b[: len(b) // 2], "bundle"),
    ("header only", lambda b: b[:8 + struct.unpack("<Q", b[:8])[0]], "unreadable tensors"),
    ("huge header length", lambda b: struct.pack("<Q", 1 << 60) + b[8:], "bad header length"),
    ("other format", lambda b: save({"x": torch.zeros(1)}, metadata={"format": "pt"}), "no llmvis-run metadata"),
    ("future version", lambda b: save(load(b), metadata={"format": "llmvis-run", "version": "9", "meta": "{}"}), "version"),
    ("bad meta", lambda b: save(load(b), metadata={"format": "llmvis-run", "version": "1", "meta": "{nope"}), "metadata"),
    ("other model", lambda b: rewrite(b, lambda m, t: m["model"].update(name="Qwen3-4B", hidden_size=2560)),
     "was made with model 'Qwen3-4B'"),
    ("hidden shape", lambda b: rewrite(b, lambda m, t: t.update(hidden=t["hidden"][:, :-1].contiguous())), "tensor hidden"),
    ("hidden NaN", lambda b: rewrite(b, lambda m, t: t["hidden"].__setitem__((0, 0, 0), float("nan"))), "NaN"),
    ("ids outside vocab", lambda b: rewrite(b, lambda m, t: t["ids"].__setitem__(0, 10**9)), "token ids"),
    ("missing tensor", lambda b: rewrite(b, lambda m, t: t.pop("stats.prob")), "lacks tensors"),
    ("segments", lambda b: rewrite(b, lambda m, t: m["run"].update(segments=["nope"])), "segments"),
    ("kind", lambda b: rewrite(b, lambda m, t: m["run"].update(kind="weird")), "run.kind"),
    ("links", lambda b: rewrite(b, lambda m, t: m["run"].update(links=["x"])), "run.links"),
    ("children", lambda b: rewrite(b, lambda m, t: m["run"].update(children=["../../etc"])), "run.children"),
    ("params", lambda b: rewrite(b, lambda m, t: m["result"]["params"].update(temperature=-1)), "params.temperature"),
    ("residual", lambda b: rewrite(b, lambda m, t: t.update(final_residual=t["final_residual"][:-1].contiguous())),
     "tensor final_residual"),
])
def test_bad_bundles_are_refused_with_a_clear_400(make_server, bundle, assert_error, name, make, expect):
    eng, fresh = make_server()
    body = assert_error(post_bundle(fresh, make(bundle)), 400, "bundle")
    assert expect in body["error"], (name, body)
    assert len(eng.store) == 0


def test_import_limits_and_empty_uploads(make_server, bundle, assert_error):
    _, capped = make_server(max_import_bytes=1000)
    assert "import limit" in assert_error(post_bundle(capped, bundle), 413, "bundle")["error"]
    multipart = capped.post("/api/import", data={"file": (io.BytesIO(bundle), "x.llmvis")},
                            content_type="multipart/form-data")
    assert_error(multipart, 413, "bundle")
    _, fresh = make_server()
    assert_error(post_bundle(fresh, b""), 400, "bundle")
    assert_error(fresh.post("/api/import", data={"other": (io.BytesIO(bundle), "x")}, content_type="multipart/form-data"),
                 400, "file")
    assert_error(fresh.post("/api/import", data={"file": (io.BytesIO(b""), "x")}, content_type="multipart/form-data"),
                 400, "bundle")
    _, small_store = make_server(store_budget_bytes=4096)
    assert "run store budget" in assert_error(post_bundle(small_store, bundle), 413, "bundle")["error"]


def test_a_bundle_of_another_model_name_is_refused(bundle, tiny_lm, assert_error):
    from llmvis.core.config import ServerConfig
    from llmvis.engine.engine import Engine
    from llmvis.model.loading import LoadedModel
    from llmvis.web.app import create_app

    other = LoadedModel(model=tiny_lm.model, tokenizer=tiny_lm.tokenizer, name="tiny-other", source=tiny_lm.source)
    client = create_app(Engine(other, ServerConfig())).test_client()
    body = assert_error(post_bundle(client, bundle), 400, "bundle")
    assert "was made with model 'tiny-llama'" in body["error"] and "tiny-other" in body["error"]


def test_rename_and_delete(make_server, tmp_path, assert_error):
    eng, client = make_server(data_dir=tmp_path)
    rid = ok(client.post("/api/generate", json={"prompt": "Hello", "temperature": 0, "max_new_tokens": 2}))["run_id"]
    renamed = ok(client.patch(f"/api/history/{rid}", json={"title": "  my \n favourite   run "}))
    assert renamed["title"] == "my favourite run" and renamed["run_id"] == rid
    assert get(client, "/api/history")["runs"][0]["title"] == "my favourite run"
    for bad in ({"title": ""}, {"title": "   "}, {"title": 5}, {}, {"title": "x" * 201}):
        assert_error(client.patch(f"/api/history/{rid}", json=bad), 400, "title")
    assert_error(client.patch(f"/api/history/{rid}", data="nope", content_type="application/json"), 400, "body")
    assert_error(client.patch(f"/api/history/{rid}", data='{"title": "x"}'), 415, "body")
    assert_error(client.patch("/api/history/0123456789abcdef", json={"title": "x"}), 404, "run_id")
    assert_error(client.patch("/api/history/NOT-HEX", json={"title": "x"}), 400, "run_id")
    assert ok(client.delete(f"/api/history/{rid}")) == {"run_id": rid, "deleted": True}
    assert not list(tmp_path.rglob(f"{rid}*"))
    assert "unknown run id" in assert_error(client.get("/api/run", query_string={"run_id": rid}), 404, "run_id")["error"]
    assert_error(client.delete(f"/api/history/{rid}"), 404, "run_id")
    assert_error(client.delete("/api/history/zz"), 400, "run_id")
    assert get(client, "/api/history")["total"] == 0


def test_ids_never_reach_the_filesystem(kept, assert_error):
    _, _, client, _ = kept
    for bad in ("..%2F..%2Fetc%2Fpasswd", "ABCDEF0123456789", "0123", "abc.llmvis", "g" * 16, "a" * 33):
        for path in (f"/api/runs/{bad}/export", f"/api/runs/{bad}/share"):
            resp = client.get(path)
            assert resp.status_code in (400, 404) and resp.is_json, (path, resp.status_code)
            assert_error(resp, resp.status_code)
    for path in ("/api/runs/0123456789abcdef/export", "/api/runs/0123456789abcdef/share"):
        assert "unknown run id" in assert_error(client.get(path), 404, "run_id")["error"]
    for query, field in (({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"offset": "x"}, "offset"),
                         ({"offset": "-1"}, "offset")):
        assert_error(client.get("/api/history", query_string=query), 400, field)


def test_a_server_without_history(client, greedy_run, assert_error):
    assert get(client, "/api/history") == {"enabled": False, "runs": [], "total": 0, "total_bytes": 0, "budget_bytes": 0}
    rid = greedy_run["run_id"]
    assert_error(client.patch(f"/api/history/{rid}", json={"title": "x"}), 400, "history")
    assert_error(client.delete(f"/api/history/{rid}"), 400, "history")
    assert client.get(f"/api/runs/{rid}/export").status_code == 200  # export works from memory


def test_share_html_is_self_contained_escaped_and_holds_the_models_attention(kept, ref, assert_error):
    from llmvis.web.assets import echarts_path

    if echarts_path() is None:
        pytest.skip("echarts is not installed (npm ci)")
    _, _, client, runs = kept
    run = runs["gen"]
    resp = client.get(f"/api/runs/{run['run_id']}/share", query_string={"layers": "1,0"})
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="llmvis-{run["run_id"]}.html"'
    page = resp.get_data(as_text=True)
    assert "<script src" not in page and "http://" not in page.split("<script>")[0]
    block = re.search(r'<script type="application/json" id="llmvis-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in block and ">" not in block and "&" not in block
    data = json.loads(block)
    assert data["title"] == "Name a colour. </script> & <b>" and data["run_id"] == run["run_id"]
    assert "<title>Name a colour. &lt;/script&gt; &amp; &lt;b&gt; · llmvis</title>" in page
    assert page.count("</script>") == 3  # data, ECharts, viewer: nothing closes a block early
    assert [t["text"] for t in data["tokens"]] == [t["text"] for t in run["tokens"]]
    assert [t["prob"] for t in data["tokens"]] == [t["prob"] for t in run["tokens"]]
    assert data["candidates"][0] is None and len(data["candidates"]) == run["num_tokens"]
    top = get(client, "/api/token_probs", run_id=run["run_id"], position=4)["candidates"]
    assert [c["text"] for c in data["candidates"][4]] == [c["text"] for c in top]
    fwd = ref.forward([t["id"] for t in run["tokens"]])
    scale = data["attention"]["scale"]
    assert [a["layer"] for a in data["attention"]["layers"]] == [0, 1]
    for entry in data["attention"]["layers"]:
        got = np.array(entry["matrix"]) / scale
        assert entry["block"] == 1 and np.allclose(got, fwd.attentions[entry["layer"]].mean(0).numpy(), atol=1.01 / scale)
    default = client.get(f"/api/runs/{run['run_id']}/share").get_data(as_text=True)
    layers = json.loads(re.search(r'id="llmvis-data">(.*?)</script>', default, re.S).group(1))["attention"]["layers"]
    assert [a["layer"] for a in layers] == [0, 1]  # first, middle (1 of 2) and last
    for bad in ("1,x", str(LAYERS), "-1", ",", "0" + ",0" * 3 + ",1,2"):
        assert_error(client.get(f"/api/runs/{run['run_id']}/share", query_string={"layers": bad}), 400, "layers")


def test_saved_says_whether_the_history_holds_the_run(kept, make_server, greedy_run):
    folder, _, client, runs = kept
    assert (greedy_run["saved"], greedy_run["save_error"]) == (None, None)  # a server without history
    for run in runs.values():
        assert (run["saved"], run["save_error"]) == (True, None)
        assert get(client, "/api/run", run_id=run["run_id"])["saved"] is True


def test_a_run_reloaded_from_the_history_is_saved(kept, make_server):
    folder, _, _, runs = kept
    _, again = make_server(data_dir=folder)
    assert get(again, "/api/run", run_id=runs["gen"]["run_id"])["saved"] is True
