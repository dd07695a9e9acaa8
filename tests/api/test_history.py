"""Keeping runs on the real default model: history across restarts, export/import, share HTML."""
import io
import json
import re

import numpy as np
import pytest
import torch

from llmvis.web.app import create_app
from llmvis.core.config import ServerConfig
from llmvis.engine.engine import Engine

pytestmark = pytest.mark.model
VIEWS = [
    ("/api/attention", {"layer": "3", "head": "mean"}),
    ("/api/attention", {"layer": "29", "head": "4"}),
    ("/api/token_probs", {"position": "5", "top_n": "20"}),
    ("/api/hidden_similarity", {}),
    ("/api/embedding_projection", {"layer": "12"}),
    ("/api/run", {}),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("history")


def make_client(lm, **cfg):
    eng = Engine(lm, ServerConfig(max_new_tokens=16, **cfg))
    return eng, create_app(eng).test_client()


@pytest.fixture(scope="module")
def first(default_lm, data_dir):
    eng, client = make_client(default_lm, data_dir=data_dir)
    resp = client.post("/api/generate", json={"prompt": "Name a colour. </script> & <b>", "temperature": 0.8,
                                              "seed": 7, "max_new_tokens": 8})
    assert resp.status_code == 200, resp.get_json()
    return eng, client, resp.get_json()


def view(client, path, query, run_id):
    resp = client.get(path, query_string={"run_id": run_id, **query})
    assert resp.status_code == 200, (path, resp.get_json())
    return resp.get_json()


def same_view(a: dict, b: dict) -> bool:
    """Two answers about the same run under different ids (an import always gets a fresh one)."""
    drop = {"run_id", "saved", "save_error"}
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def assert_same_run(a, b):
    """Two Run objects hold identical data (ids, stats, hidden states, metadata)."""
    assert a.ids == b.ids and a.segments == b.segments and a.num_prompt == b.num_prompt
    assert a.params == b.params and a.finish_reason == b.finish_reason and a.timing == b.timing
    assert a.created == b.created and a.model_name == b.model_name and a.status == b.status
    assert a.hidden.dtype == b.hidden.dtype and torch.equal(a.hidden, b.hidden)
    for name, arr in a.result.stats.__dict__.items():
        other = getattr(b.result.stats, name)
        assert arr.dtype == other.dtype and np.array_equal(arr, other, equal_nan=True), name
    assert a.result.step_s == b.result.step_s and a.result.params == b.result.params
    assert torch.equal(a.result.final_residual, b.result.final_residual)


def test_runs_survive_a_restart_with_every_view(default_lm, data_dir, first):
    eng1, client1, run = first
    eng2, client2 = make_client(default_lm, data_dir=data_dir)  # a new server on the same folder
    assert len(eng2.store) == 0
    for path, query in VIEWS:
        assert view(client2, path, query, run["run_id"]) == view(client1, path, query, run["run_id"]), path
    assert_same_run(eng1.get_run(run["run_id"]), eng2.get_run(run["run_id"]))
    listing = client2.get("/api/history").get_json()
    assert listing["enabled"] and listing["total"] >= 1
    row = next(r for r in listing["runs"] if r["run_id"] == run["run_id"])
    assert row["title"].startswith("Name a colour.") and row["same_model"] and row["nbytes"] > 0
    assert row["num_tokens"] == len(run["tokens"])


def test_evicted_from_memory_is_reloaded_from_history(default_lm, data_dir, first):
    _, _, run = first
    eng, client = make_client(default_lm, data_dir=data_dir, store_budget_bytes=8 << 20)
    for _ in range(2):  # each ~3 MB: the store keeps at most two, the history keeps all
        client.post("/api/generate", json={"prompt": "Hi", "temperature": 0, "max_new_tokens": 2})
    assert view(client, "/api/run", {}, run["run_id"])["tokens"] == run["tokens"]


def test_export_import_round_trip_is_identical(default_lm, first):
    eng1, client1, run = first
    resp = client1.get(f"/api/runs/{run['run_id']}/export")
    assert resp.status_code == 200 and resp.mimetype == "application/octet-stream"
    assert f"llmvis-{run['run_id']}.llmvis" in resp.headers["Content-Disposition"]
    bundle = resp.data
    eng2, client2 = make_client(default_lm)  # no history: memory only
    imported = client2.post("/api/import", data=bundle, content_type="application/octet-stream")
    assert imported.status_code == 200, imported.get_json()
    body = imported.get_json()
    new_id = body["run_id"]
    assert new_id != run["run_id"] and body["imported"] is True  # the id inside a bundle is never kept
    assert_same_run(eng1.get_run(run["run_id"]), eng2.get_run(new_id))
    for path, query in VIEWS:
        assert same_view(view(client2, path, query, new_id), view(client1, path, query, run["run_id"])), path
    # exporting the imported run again gives the same tensors and metadata (but the save time)
    again = client2.get(f"/api/runs/{new_id}/export").data
    from safetensors.torch import load

    a, b = load(bundle), load(again)
    assert a.keys() == b.keys()
    for k in a:  # bit-identical, NaN (undefined statistics) included
        assert a[k].dtype == b[k].dtype and torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k


def test_import_by_multipart_twice_gives_two_runs_with_the_same_content(default_lm, first):
    _, client1, run = first
    bundle = client1.get(f"/api/runs/{run['run_id']}/export").data
    eng2, client2 = make_client(default_lm)
    ids = []
    for _ in range(2):
        resp = client2.post("/api/import", data={"file": (io.BytesIO(bundle), "run.llmvis")},
                            content_type="multipart/form-data")
        assert resp.status_code == 200, resp.get_json()
        ids.append(resp.get_json()["run_id"])
    assert len(set(ids) | {run["run_id"]}) == 3  # a fresh id each time, never the bundle's
    assert_same_run(eng2.get_run(ids[0]), eng2.get_run(ids[1]))


def _rewrite(bundle: bytes, change) -> bytes:
    from safetensors.torch import load, save

    from llmvis.keep.bundle import bundle_header

    meta = bundle_header(bundle)
    tensors = load(bundle)
    change(meta, tensors)
    return save(tensors, metadata={"format": "llmvis-run", "version": "1", "meta": json.dumps(meta)})


def test_bad_bundles_are_refused_with_clear_errors(default_lm, first, assert_error):
    _, client1, run = first
    bundle = client1.get(f"/api/runs/{run['run_id']}/export").data
    eng, client = make_client(default_lm)
    post = lambda data: client.post("/api/import", data=data, content_type="application/octet-stream")  # noqa: E731
    assert "not a llmvis bundle" in assert_error(post(b"PK\x03\x04 certainly not a bundle"), 400, "bundle")["error"]
    assert_error(post(b""), 400, "bundle")
    assert_error(post(bundle[: len(bundle) // 2]), 400, "bundle")  # truncated
    other = _rewrite(bundle, lambda m, t: m["model"].update(name="Qwen3-4B", hidden_size=2560))
    assert "was made with model 'Qwen3-4B'" in assert_error(post(other), 400, "bundle")["error"]
    shapes = _rewrite(bundle, lambda m, t: t.update(hidden=t["hidden"][:, :-1].contiguous()))
    assert "tensor hidden" in assert_error(post(shapes), 400, "bundle")["error"]
    ids = _rewrite(bundle, lambda m, t: t["ids"].__setitem__(0, 10**9))
    assert "token ids" in assert_error(post(ids), 400, "bundle")["error"]
    segs = _rewrite(bundle, lambda m, t: m["run"].update(segments=["nope"]))
    assert "segments" in assert_error(post(segs), 400, "bundle")["error"]
    nofile = client.post("/api/import", data={"other": (io.BytesIO(bundle), "x")}, content_type="multipart/form-data")
    assert_error(nofile, 400, "file")
    eng.config.max_import_bytes = 1000
    try:
        assert "import limit" in assert_error(post(bundle), 413, "bundle")["error"]
    finally:
        eng.config.max_import_bytes = ServerConfig.max_import_bytes
    residual = _rewrite(bundle, lambda m, t: t.update(final_residual=t["final_residual"][:-1].contiguous()))
    assert "tensor final_residual" in assert_error(post(residual), 400, "bundle")["error"]
    # a bundle far above the 1 MiB JSON body cap is still accepted by /api/import
    assert len(bundle) > 1 << 20 and post(bundle).status_code == 200


def test_bundle_without_final_residual_still_loads(default_lm, first):
    """Bundles saved before the pre-norm last state was recorded: the similarity of the last
    layer pair falls back to hidden[L] (after the final norm); every other view is the same."""
    _, client1, run = first
    old = _rewrite(client1.get(f"/api/runs/{run['run_id']}/export").data, lambda m, t: t.pop("final_residual"))
    eng, client = make_client(default_lm)
    resp = client.post("/api/import", data=old, content_type="application/octet-stream")
    assert resp.status_code == 200
    rid = resp.get_json()["run_id"]
    assert eng.get_run(rid).result.final_residual is None
    new = view(client1, "/api/hidden_similarity", {}, run["run_id"])
    fallback = view(client, "/api/hidden_similarity", {}, rid)
    assert fallback["per_layer"][:29] == pytest.approx(new["per_layer"][:29], abs=1e-6)
    assert fallback["per_layer"][29] < new["per_layer"][29] - 0.2  # the final norm's artefact
    assert view(client, "/api/attention", {"layer": "3"}, rid) == view(client1, "/api/attention", {"layer": "3"}, run["run_id"])


def test_rename_and_delete(default_lm, tmp_path, assert_error):
    eng, client = make_client(default_lm, data_dir=tmp_path)
    run = client.post("/api/generate", json={"prompt": "Hello", "temperature": 0, "max_new_tokens": 2}).get_json()
    rid = run["run_id"]
    renamed = client.patch(f"/api/history/{rid}", json={"title": "  my   favourite run "})
    assert renamed.status_code == 200 and renamed.get_json()["title"] == "my favourite run"
    assert client.get("/api/history").get_json()["runs"][0]["title"] == "my favourite run"
    assert_error(client.patch(f"/api/history/{rid}", json={"title": ""}), 400, "title")
    assert_error(client.patch(f"/api/history/{rid}", json={"title": 5}), 400, "title")
    assert_error(client.patch(f"/api/history/{rid}", json={"title": "x" * 201}), 400, "title")
    assert_error(client.patch(f"/api/history/{rid}", data="nope"), 415, "Content-Type")
    assert_error(client.patch(f"/api/history/{rid}", data="nope", content_type="application/json"), 400, "body")
    assert_error(client.patch("/api/history/0123456789abcdef", json={"title": "x"}), 404, "run_id")
    assert_error(client.patch("/api/history/NOT-HEX", json={"title": "x"}), 400, "run_id")
    assert client.delete(f"/api/history/{rid}").get_json() == {"run_id": rid, "deleted": True}
    assert not (tmp_path / "runs" / f"{rid}.llmvis").exists()
    assert_error(client.get("/api/run", query_string={"run_id": rid}), 404, "run_id")
    assert_error(client.delete(f"/api/history/{rid}"), 404, "run_id")
    assert client.get("/api/history").get_json()["total"] == 0


def test_ids_never_reach_the_filesystem(first, assert_error):
    _, client, _ = first
    for bad in ("..%2F..%2Fetc%2Fpasswd", "ABCDEF0123456789", "0123", "abc.llmvis", "g" * 16):
        resp = client.get(f"/api/runs/{bad}/export")
        assert resp.status_code in (400, 404), bad
        assert resp.is_json
    assert_error(client.get("/api/runs/0123456789abcdef/export"), 404, "run_id")
    assert_error(client.get("/api/history", query_string={"limit": "0"}), 400, "limit")
    assert_error(client.get("/api/history", query_string={"offset": "x"}), 400, "offset")


def test_no_history_server(default_lm, assert_error):
    eng, client = make_client(default_lm)
    assert client.get("/api/history").get_json() == {"enabled": False, "runs": [], "total": 0,
                                                    "total_bytes": 0, "budget_bytes": 0}
    run = client.post("/api/generate", json={"prompt": "Hi", "temperature": 0, "max_new_tokens": 2}).get_json()
    assert_error(client.patch(f"/api/history/{run['run_id']}", json={"title": "x"}), 400, "history")


def test_share_html_is_self_contained_and_escaped(first, assert_error):
    _, client, run = first
    resp = client.get(f"/api/runs/{run['run_id']}/share", query_string={"layers": "0,29"})
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "<script src" not in page and "http://" not in page.split("<script>")[0]
    block = re.search(r'<script type="application/json" id="llmvis-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in block and ">" not in block and "&" not in block  # \u003c etc.
    data = json.loads(block)
    assert data["title"].startswith("Name a colour. </script> & <b>")
    assert [t["text"] for t in data["tokens"]] == [t["text"] for t in run["tokens"]]
    assert [a["layer"] for a in data["attention"]["layers"]] == [0, 29]
    att = np.array(data["attention"]["layers"][0]["matrix"]) / data["attention"]["scale"]
    assert att.shape == (len(run["tokens"]),) * 2 and np.allclose(att.sum(1), 1, atol=5e-3)
    assert page.count("</script>") == 3  # data block, ECharts, viewer: nothing closes early
    assert "<title>Name a colour. &lt;/script&gt; &amp; &lt;b&gt;" in page
    assert_error(client.get(f"/api/runs/{run['run_id']}/share", query_string={"layers": "1,x"}), 400, "layers")
    assert_error(client.get(f"/api/runs/{run['run_id']}/share", query_string={"layers": "30"}), 400, "layers")


def test_forks_think_segments_and_links_survive_a_restart(default_lm, tmp_path, assert_error):
    eng, client = make_client(default_lm, data_dir=tmp_path)
    parent = client.post("/api/generate", json={"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>be brief</think>Hello"},
        {"role": "user", "content": "Again"}], "temperature": 0, "max_new_tokens": 4}).get_json()
    assert "think" in {t["segment"] for t in parent["tokens"]}
    pos = parent["num_prompt_tokens"] + 1
    fork = client.post("/api/fork", json={"run_id": parent["run_id"], "position": pos, "token_id": 28,
                                          "max_new_tokens": 3}).get_json()
    _, again = make_client(default_lm, data_dir=tmp_path)  # a restart on the same folder
    p2 = view(again, "/api/run", {}, parent["run_id"])
    f2 = view(again, "/api/run", {}, fork["run_id"])
    assert fork["run_id"] in p2["children"]
    assert (f2["kind"], f2["parent_id"], f2["fork_position"]) == ("fork", parent["run_id"], pos)
    assert [t["segment"] for t in p2["tokens"]] == [t["segment"] for t in parent["tokens"]]
    bundle = again.get(f"/api/runs/{fork['run_id']}/export").data
    _, fresh = make_client(default_lm)
    post = lambda data: fresh.post("/api/import", data=data, content_type="application/octet-stream")  # noqa: E731
    bad_links = _rewrite(bundle, lambda m, t: m["run"].update(links=["x"]))
    assert "run.links" in assert_error(post(bad_links), 400, "bundle")["error"]
    bad_kind = _rewrite(bundle, lambda m, t: m["run"].update(kind="weird"))
    assert "run.kind" in assert_error(post(bad_kind), 400, "bundle")["error"]
    bad_children = _rewrite(bundle, lambda m, t: m["run"].update(children=["../../etc"]))
    assert "run.children" in assert_error(post(bad_children), 400, "bundle")["error"]
