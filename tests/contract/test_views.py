"""The core views of a stored run (token_probs, attention in every form, hidden_similarity,
embedding_projection), each checked against the tiny model's own eager forward pass."""
import numpy as np
import pytest
import torch

from . import reference as R
from .support import HEADS, LAYERS, get


@pytest.fixture(scope="module")
def run(greedy_run, ref):
    ids = [t["id"] for t in greedy_run["tokens"]]
    return greedy_run, ids, ref.forward(ids)


# ---- token_probs -----------------------------------------------------------------------------------
def test_token_probs_candidates_are_the_top_of_the_models_distribution(client, run):
    r, ids, fwd = run
    p = r["num_prompt_tokens"]
    for position in (1, p - 1, p, r["num_tokens"] - 1):
        body = get(client, "/api/token_probs", run_id=r["run_id"], position=position, top_n=100)
        dist = fwd.probs[position - 1]
        top = torch.topk(dist, 100)
        cands = body["candidates"]
        assert body["position"] == position and body["token"] == r["tokens"][position]
        assert body["entropy"] == r["tokens"][position]["entropy"] and body["cut_mass"] == r["tokens"][position]["cut_mass"]
        assert len(cands) == 100
        assert [c["prob"] for c in cands] == sorted((c["prob"] for c in cands), reverse=True)
        assert np.allclose([c["prob"] for c in cands], top.values.numpy(), rtol=1e-4, atol=1e-7)
        # ids agree wherever probabilities are not tied within float noise
        for c, want_id, want_p in zip(cands, top.indices.tolist(), top.values.tolist()):
            assert c["id"] == want_id or abs(float(dist[c["id"]]) - want_p) < 1e-6, (position, c, want_id)
            assert c["prob"] == pytest.approx(float(dist[c["id"]]), rel=1e-4, abs=1e-7)
        if position < p:
            assert all(c["sample_prob"] is None for c in cands)
        else:  # greedy: the chosen (top-1) token has sampling probability 1, every other 0
            assert [c["sample_prob"] for c in cands] == [1.0] + [0.0] * 99
            assert cands[0]["id"] == r["tokens"][position]["id"]


def test_token_probs_default_top_n_is_10(client, run):
    r, _, _ = run
    full = get(client, "/api/token_probs", run_id=r["run_id"], position=3, top_n=100)["candidates"]
    assert get(client, "/api/token_probs", run_id=r["run_id"], position=3)["candidates"] == full[:10]
    assert get(client, "/api/token_probs", run_id=r["run_id"], position=3, top_n=1)["candidates"] == full[:1]


# ---- attention -------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", range(LAYERS))
def test_attention_equals_the_models_eager_attention(client, run, layer):
    r, _, fwd = run
    n = r["num_tokens"]
    want = fwd.attentions[layer]  # (Hq, T, T)
    for head, ref_matrix in [*((str(h), want[h]) for h in range(HEADS)), ("mean", want.mean(0)), ("max", want.amax(0))]:
        body = get(client, "/api/attention", run_id=r["run_id"], layer=layer, head=head)
        got = torch.tensor(body["matrix"], dtype=torch.float64)
        assert body["layer"] == layer and body["head"] == (int(head) if head.isdigit() else head)
        assert body["num_tokens"] == n and got.shape == (n, n) and (body["rows"], body["cols"]) == (n, n)
        assert body["tokens"] == [t["text"] for t in r["tokens"]]
        assert torch.allclose(got, ref_matrix, atol=2e-5), (layer, head, float((got - ref_matrix).abs().max()))
        assert torch.all(torch.triu(got, 1) == 0)
        if head != "max":
            assert torch.allclose(got.sum(1), torch.ones(n, dtype=torch.float64), atol=1e-3)
    default = get(client, "/api/attention", run_id=r["run_id"], layer=layer)
    assert default["head"] == "mean" and default["matrix"] == get(client, "/api/attention", run_id=r["run_id"],
                                                                   layer=layer, head="mean")["matrix"]


def test_attention_f16_is_raw_little_endian_with_shape_headers(client, run):
    r, _, fwd = run
    n = r["num_tokens"]
    resp = client.get("/api/attention", query_string={"run_id": r["run_id"], "layer": 1, "head": 2, "format": "f16"})
    assert resp.status_code == 200 and resp.mimetype == "application/octet-stream"
    h = resp.headers
    assert (int(h["X-Llmvis-Rows"]), int(h["X-Llmvis-Cols"]), int(h["X-Llmvis-Num-Tokens"])) == (n, n, n)
    assert (h["X-Llmvis-Layer"], h["X-Llmvis-Head"], h["X-Llmvis-Block"]) == ("1", "2", "1")
    assert (h["X-Llmvis-Q-Start"], h["X-Llmvis-K-Start"]) == ("0", "0")
    assert len(resp.data) == n * n * 2
    got = np.frombuffer(resp.data, dtype="<f2").reshape(n, n).astype(np.float64)
    assert np.allclose(got, fwd.attentions[1][2].numpy(), atol=1e-3)


def _pool(m: np.ndarray, block: int, mode: str) -> np.ndarray:
    rows, cols = -(-m.shape[0] // block), -(-m.shape[1] // block)
    out = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            tile = m[i * block:(i + 1) * block, j * block:(j + 1) * block]
            out[i, j] = tile.max() if mode == "max" else tile.mean()
    return out


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_attention_pooled_overview(client, run, mode):
    r, _, fwd = run
    n = r["num_tokens"]
    body = get(client, "/api/attention", run_id=r["run_id"], layer=0, head="mean", pool=16, pool_mode=mode)
    block = -(-n // 16)
    assert block >= 2 and body["block"] == block
    want = _pool(fwd.attentions[0].mean(0).numpy(), block, mode)
    assert (body["rows"], body["cols"]) == want.shape == (len(body["matrix"]), len(body["matrix"][0]))
    assert np.allclose(np.array(body["matrix"]), want, atol=2e-5)
    f16 = client.get("/api/attention", query_string={"run_id": r["run_id"], "layer": 0, "pool": 16, "pool_mode": mode,
                                                     "format": "f16"})
    assert int(f16.headers["X-Llmvis-Block"]) == block and len(f16.data) == want.size * 2
    big = get(client, "/api/attention", run_id=r["run_id"], layer=0, pool=n + 100)  # no pooling needed
    assert big["block"] == 1 and big["rows"] == n


def test_attention_window_at_full_resolution(client, run):
    r, _, fwd = run
    n = r["num_tokens"]
    body = get(client, "/api/attention", run_id=r["run_id"], layer=1, head=3, q_start=5, q_end=9, k_start=2, k_end=6)
    assert (body["rows"], body["cols"], body["q_start"], body["k_start"], body["block"]) == (4, 4, 5, 2, 1)
    assert np.allclose(np.array(body["matrix"]), fwd.attentions[1][3][5:9, 2:6].numpy(), atol=2e-5)
    tail = get(client, "/api/attention", run_id=r["run_id"], layer=1, q_start=n - 3)  # other bounds default
    assert (tail["rows"], tail["cols"]) == (3, n)
    assert np.allclose(np.array(tail["matrix"]), fwd.attentions[1].mean(0)[n - 3:].numpy(), atol=2e-5)


# ---- hidden similarity and projection --------------------------------------------------------------
def test_hidden_similarity_is_the_cosine_of_consecutive_layers(client, run):
    r, _, fwd = run
    n = r["num_tokens"]
    body = get(client, "/api/hidden_similarity", run_id=r["run_id"])
    assert (body["num_layers"], body["num_tokens"]) == (LAYERS, n) and body["tokens"] == [t["text"] for t in r["tokens"]]
    # the last layer's own output (before the final norm) stands in for hidden_states[L]
    uppers = [fwd.hidden[layer + 1] for layer in range(LAYERS - 1)] + [fwd.pre_norm]
    for layer in range(LAYERS):
        want = torch.nn.functional.cosine_similarity(fwd.hidden[layer], uppers[layer], dim=-1)  # (T,)
        assert np.allclose(body["per_token"][layer], want.numpy(), atol=2e-5), layer
        assert body["per_layer"][layer] == pytest.approx(float(want.mean()), abs=2e-5)
    assert len(body["per_layer"]) == LAYERS and all(len(row) == n for row in body["per_token"])


def test_the_pre_norm_state_is_what_the_final_norm_turns_into_the_last_hidden_state(ref, run):
    """Guards the reference itself: hidden_states[L] == norm(pre_norm) in this transformers."""
    _, _, fwd = run
    assert torch.allclose(ref.norm(fwd.pre_norm), fwd.hidden[LAYERS], atol=1e-5)


@pytest.mark.parametrize("layer, include_first", [(LAYERS, False), (0, False), (1, True)])
def test_embedding_projection_is_the_pca_of_that_layer(client, run, layer, include_first):
    r, _, fwd = run
    n = r["num_tokens"]
    query = {"run_id": r["run_id"], "layer": layer} | ({"include_first": 1} if include_first else {})
    if layer == LAYERS:
        query.pop("layer")  # the default is the last layer
    body = get(client, "/api/embedding_projection", **query)
    assert (body["layer"], body["method"]) == (layer, "pca")
    start = 0 if include_first else 1
    assert body["fit_positions"] == [start, n]
    x = fwd.hidden[layer]  # (T, H)
    comps, variance = R.pca_2d(x[start:])
    mean = x[start:].mean(0, keepdim=True)
    want = ((x - mean) @ comps.T).numpy()  # (T, 2)
    got = np.array([[pt["x"], pt["y"]] for pt in body["points"]])
    scale = np.abs(want).max()
    for c in range(2):  # a component's sign is a convention
        sign = np.sign(np.dot(got[:, c], want[:, c])) or 1.0
        assert np.allclose(sign * got[:, c], want[:, c], atol=1e-3 * scale), (layer, c)
    assert body["explained_variance"] == pytest.approx(variance, rel=1e-3)
    assert [(pt["position"], pt["text"], pt["source"]) for pt in body["points"]] == [
        (t["position"], t["text"], t["source"]) for t in r["tokens"]]


# ---- bad input -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_queries(greedy_run):
    rid, n = greedy_run["run_id"], greedy_run["num_tokens"]
    return [
        ("/api/token_probs", {"run_id": rid}, "position"),
        ("/api/token_probs", {"run_id": rid, "position": n}, "position"),
        ("/api/token_probs", {"run_id": rid, "position": 0}, "position"),
        ("/api/token_probs", {"run_id": rid, "position": -1}, "position"),
        ("/api/token_probs", {"run_id": rid, "position": "1.5"}, "position"),
        ("/api/token_probs", {"run_id": rid, "position": "NaN"}, "position"),
        ("/api/token_probs", {"run_id": rid, "position": "9" * 400}, "position"),
        ("/api/token_probs", {"run_id": rid, "position": 1, "top_n": 101}, "top_n"),
        ("/api/token_probs", {"run_id": rid, "position": 1, "top_n": 0}, "top_n"),
        ("/api/token_probs", {"run_id": rid, "position": 1, "top_n": "ten"}, "top_n"),
        ("/api/attention", {"run_id": rid}, "layer"),
        ("/api/attention", {"run_id": rid, "layer": LAYERS}, "layer"),
        ("/api/attention", {"run_id": rid, "layer": -1}, "layer"),
        ("/api/attention", {"run_id": rid, "layer": "x"}, "layer"),
        ("/api/attention", {"run_id": rid, "layer": "1e3"}, "layer"),
        ("/api/attention", {"run_id": rid, "layer": 0, "head": HEADS}, "head"),
        ("/api/attention", {"run_id": rid, "layer": 0, "head": -1}, "head"),
        ("/api/attention", {"run_id": rid, "layer": 0, "head": "avg"}, "head"),
        ("/api/attention", {"run_id": rid, "layer": 0, "format": "png"}, "format"),
        ("/api/attention", {"run_id": rid, "layer": 0, "pool": 3}, "pool"),
        ("/api/attention", {"run_id": rid, "layer": 0, "pool": -16}, "pool"),
        ("/api/attention", {"run_id": rid, "layer": 0, "pool": 8193}, "pool"),
        ("/api/attention", {"run_id": rid, "layer": 0, "pool": 16, "pool_mode": "min"}, "pool_mode"),
        ("/api/attention", {"run_id": rid, "layer": 0, "q_start": 9, "q_end": 5}, "q_start"),
        ("/api/attention", {"run_id": rid, "layer": 0, "q_start": n}, "q_start"),
        ("/api/attention", {"run_id": rid, "layer": 0, "k_start": 4, "k_end": 4}, "k_start"),
        ("/api/attention", {"run_id": rid, "layer": 0, "k_end": n + 1}, "k_end"),
        ("/api/attention", {"run_id": rid, "layer": 0, "q_end": -2}, "q_end"),
        ("/api/attention", {"run_id": rid, "layer": 0, "k_start": "a"}, "k_start"),
        ("/api/embedding_projection", {"run_id": rid, "layer": LAYERS + 1}, "layer"),
        ("/api/embedding_projection", {"run_id": rid, "layer": -1}, "layer"),
        ("/api/embedding_projection", {"run_id": rid, "method": "tsne"}, "method"),
        ("/api/embedding_projection", {"run_id": rid, "include_first": "yes"}, "include_first"),
        ("/api/run", {}, "run_id"),
        ("/api/hidden_similarity", {}, "run_id"),
        ("/api/hidden_similarity", {"run_id": ""}, "run_id"),
    ]


def test_bad_view_queries_answer_400_naming_the_parameter(client, assert_error, bad_queries):
    for path, query, field in bad_queries:
        resp = client.get(path, query_string=query)
        assert resp.status_code == 400, (path, query, resp.get_data(as_text=True)[:300])
        assert_error(resp, 400, field)


# ---- every head of a layer in one call ------------------------------------------------------------
@pytest.mark.parametrize("layer", range(LAYERS))
def test_all_heads_in_one_call_equal_the_models_eager_attention(client, run, layer):
    r, _, fwd = run
    n = r["num_tokens"]
    want = fwd.attentions[layer].numpy()  # (Hq, T, T)
    resp = client.get("/api/attention", query_string={"run_id": r["run_id"], "layer": layer, "head": "all", "format": "f16"})
    assert resp.status_code == 200
    h = resp.headers
    assert (h["X-Llmvis-Head"], int(h["X-Llmvis-Heads"]), int(h["X-Llmvis-Rows"]), int(h["X-Llmvis-Cols"])) == ("all", HEADS, n, n)
    got = np.frombuffer(resp.data, dtype="<f2").reshape(HEADS, n, n).astype(np.float64)
    assert np.allclose(got, want, atol=1e-3)
    body = get(client, "/api/attention", run_id=r["run_id"], layer=layer, head="all")
    assert body["heads"] == HEADS and np.allclose(np.array(body["matrix"]), want, atol=1e-3)
    pooled = get(client, "/api/attention", run_id=r["run_id"], layer=layer, head="all", pool=16)
    block = pooled["block"]
    assert np.array(pooled["matrix"]).shape == (HEADS, -(-n // block), -(-n // block))
    assert np.allclose(np.array(pooled["matrix"])[1], _pool(want[1], block, "max"), atol=1e-3)


def test_all_heads_json_counts_every_head_against_the_cap(make_server, assert_error):
    _, c = make_server(max_json_cells=HEADS * 10 * 10)
    r = c.post("/api/generate", json={"prompt": "Count to three.", "temperature": 0, "max_new_tokens": 4}).get_json()
    n = r["num_tokens"]
    assert n > 10
    assert_error(c.get("/api/attention", query_string={"run_id": r["run_id"], "layer": 0, "head": "all"}), 413, "format")
    window = {"q_start": 0, "q_end": 10, "k_start": 0, "k_end": 10}
    assert c.get("/api/attention", query_string={"run_id": r["run_id"], "layer": 0, "head": "all", **window}).status_code == 200
    assert c.get("/api/attention", query_string={"run_id": r["run_id"], "layer": 0, "head": "all", "format": "f16"}).status_code == 200


def test_the_python_api_gives_every_head_and_the_lens(engine, greedy_run, ref):
    from llmvis.pyapi import Trace

    ids = [t["id"] for t in greedy_run["tokens"]]
    fwd = ref.forward(ids)
    trace = Trace(engine, engine.get_run(greedy_run["run_id"]))
    layers = list(trace.attention_all())
    assert [layer for layer, _ in layers] == list(range(LAYERS))
    for layer, heads in layers:
        assert heads.shape == (HEADS, len(ids), len(ids)) and heads.dtype == np.float32
        assert np.allclose(heads, fwd.attentions[layer].numpy(), atol=2e-5)  # float32: exact
        assert np.allclose(trace.attention(layer, 1), heads[1], atol=1e-6)
    lens = trace.logit_lens(top_k=3)
    last = np.array(lens["chosen_prob"][LAYERS][:-1], dtype=np.float64)
    model = np.array([fwd.probs[i][ids[i + 1]].item() for i in range(len(ids) - 1)])
    assert np.allclose(last, model, rtol=1e-4, atol=6e-7)  # the last layer is the model's output (6 decimals)
    stats = trace.head_stats()
    assert np.array(stats["sink"]).shape == (LAYERS, HEADS)


def test_the_python_api_answers_what_the_http_api_answers(client, engine, greedy_run):
    """Trace methods and the HTTP endpoints give the same numbers (one serialiser behind both)."""
    from llmvis.pyapi import Trace

    rid = greedy_run["run_id"]
    trace = Trace(engine, engine.get_run(rid))
    n = greedy_run["num_tokens"]
    assert trace.to_dict()["tokens"] == get(client, "/api/run", run_id=rid)["tokens"]
    assert trace.token_probs(3, top_n=7) == get(client, "/api/token_probs", run_id=rid, position=3, top_n=7)
    assert trace.similarity() == get(client, "/api/hidden_similarity", run_id=rid)
    assert trace.projection(1) == get(client, "/api/embedding_projection", run_id=rid, layer=1)
    for head in ("mean", "max", 2):
        mine = trace.attention_row(n - 1, head=head)
        theirs = get(client, "/api/attention_row", run_id=rid, position=n - 1, head=head)
        assert {k: v for k, v in mine.items() if k != "compute_s"} == {k: v for k, v in theirs.items() if k != "compute_s"}
    lens = get(client, "/api/logit_lens", run_id=rid, start=2, end=6, top_k=4)
    assert {k: v for k, v in trace.logit_lens(2, 6, 4).items() if k != "compute_s"} == \
        {k: v for k, v in lens.items() if k != "compute_s"}
    stats = get(client, "/api/attention_insights", run_id=rid)
    assert {k: v for k, v in trace.head_stats().items() if k != "compute_s"} == \
        {k: v for k, v in stats.items() if k != "compute_s"}
    hidden = trace.hidden_states
    assert hidden.shape == (LAYERS + 1, n, 64) and not hidden.flags.writeable
    with pytest.raises(ValueError):
        hidden[0, 0, 0] = 1.0
    with pytest.raises(Exception, match="head"):
        trace.attention_row(2, head="all")


def test_a_trace_renders_inline_in_a_notebook(make_server):
    from html.parser import HTMLParser

    from llmvis.core.errors import BadRequest
    from llmvis.pyapi import Trace

    eng, client = make_server()
    hostile = 'Say </script><img src=x onerror=alert(1)> & "quotes"'
    r = client.post("/api/generate", json={"prompt": hostile, "temperature": 0, "max_new_tokens": 4}).get_json()
    trace = Trace(eng, eng.get_run(r["run_id"]))

    class Chips(HTMLParser):
        def __init__(self):
            super().__init__()
            self.chips, self.tags, self.text = [], [], ""

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            a = dict(attrs)
            if "llmvis-tok" in (a.get("class") or ""):
                self.chips.append(a)

        def handle_data(self, data):
            self.text += data

    page = trace._repr_html_()
    parsed = Chips()
    parsed.feed(page)
    assert len(parsed.chips) == r["num_tokens"] and "img" not in parsed.tags and "script" not in parsed.tags
    assert [int(c["data-position"]) for c in parsed.chips] == list(range(r["num_tokens"]))
    chip = parsed.chips[r["num_prompt_tokens"]]  # the first generated token: its numbers and alternatives
    tok = r["tokens"][r["num_prompt_tokens"]]
    assert f"p = {tok['prob']:.4f} · rank {tok['rank']}" in chip["title"] and "alternatives:" in chip["title"]
    assert "tiny-llama" in parsed.text and f"{r['num_prompt_tokens']} prompt + 4 generated tokens" in parsed.text
    assert "</script><img" in parsed.text.replace("↵", "")  # shown as text, never as markup
    view = trace.show("entropy", layers=[0, 1])
    assert view._repr_html_() == str(view) and view.html.startswith('<iframe class="llmvis-view" sandbox="allow-scripts"')

    class Frame(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "iframe":
                self.srcdoc = dict(attrs)["srcdoc"]

    frame = Frame()
    frame.feed(view.html)
    assert '"focus":"confidence"' in frame.srcdoc and frame.srcdoc.startswith("<!doctype html>")
    assert "<img src=x" not in frame.srcdoc  # the run's data stays escaped inside the viewer document
    for bad, field in ((dict(view="nope"), "view"), (dict(height=5), "height"), (dict(layers=[9]), "layer")):
        with pytest.raises(BadRequest, match=field):
            trace.show(**bad)
