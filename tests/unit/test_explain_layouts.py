"""Direct logit attribution on every tiny layout (GQA, q/k norms, biases, sliding windows,
Gemma's (1 + w) norms, post-attention norms and soft-caps, a multimodal checkpoint): the parts
sum to the model's own logit difference, computed here by a plain forward with one hook."""
import pytest
import torch

from llmvis.engine.explain import flow_graph, row_attribution

TINY_KINDS = ("qwen3", "llama", "qwen2", "mistral", "gemma", "gemma2", "gemma3", "gemma3_mm")


def plain_forward(model, ids):
    """(logits (T, V) before any final soft-cap, the final norm's input (T, H), every layer's input)."""
    seen = []
    base = model.get_decoder()

    def keep(module, args):
        seen.append(args[0][0].detach())

    handle = base.norm.register_forward_pre_hook(keep)
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
    finally:
        handle.remove()
    with torch.no_grad():
        pre_cap = model.get_output_embeddings()(base.norm(seen[0]))  # the LM head alone: before any soft-cap
    return pre_cap.double(), seen[0], torch.stack(out.hidden_states)[:, 0]


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_parts_sum_to_the_logit_difference(make_tiny, kind):
    model = make_tiny(kind, layers=3, seed=2)
    ids = torch.randint(4, 200, (14,), generator=torch.Generator().manual_seed(5)).tolist()
    logits, resid, hidden = plain_forward(model, ids)
    for q, target, contrast in ((9, ids[10], 7), (13, 11, None), (0, 5, 6)):
        attr = row_attribution(model, hidden, resid, q, target, contrast)
        want = float(logits[q, target] - (logits[q, contrast] if contrast is not None else 0))
        assert abs(attr.direction.logit - want) < 1e-4, (kind, attr.direction.logit, want)
        assert abs(attr.total - want) < 1e-3, (kind, attr.total, want)
        assert abs(attr.heads.sum(1) + attr.o_bias - attr.attention).max() < 1e-5
        assert abs(attr.direct.sum(1) - attr.heads.sum(1)).max() < 1e-5  # the sources make up each layer's heads
        assert attr.value_norm.shape == (3, q + 1) and (attr.value_norm >= 0).all()
    cap = getattr(model.config.get_text_config(decoder=True), "final_logit_softcapping", None)
    assert attr.direction.softcap == (float(cap) if cap else None)


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_flow_graph_keeps_only_edges_over_the_threshold(make_tiny, kind):
    model = make_tiny(kind, layers=3, seed=2)
    ids = torch.randint(4, 200, (12,), generator=torch.Generator().manual_seed(1)).tolist()
    _, resid, hidden = plain_forward(model, ids)
    graph = flow_graph(model, hidden, resid, 11, 0.1)
    nodes = set(graph.nodes)
    assert (3, 11) in nodes
    for e in graph.edges:
        assert e["weight"] >= 0.1 and tuple(e["source"]) in nodes and tuple(e["target"]) in nodes


def test_the_query_stand_in_is_always_removed(make_tiny):
    """Only the asked rows of q are projected inside the pass; the model is restored after, also on error."""
    from llmvis.model.capture import layer_attention_values

    model = make_tiny("qwen3", layers=2, seed=2)
    ids = list(range(4, 14))
    _, resid, hidden = plain_forward(model, ids)
    originals = [layer.self_attn.q_proj for layer in model.get_decoder().layers]
    row_attribution(model, hidden, resid, 7, 5, None)

    def boom(q, k, v, scale, softcap, window):
        assert not q[:, :7].any() and q[:, 7].abs().sum() > 0  # the other rows were never projected
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        layer_attention_values(model, hidden[1], 1, boom, query_rows=[7])
    assert [layer.self_attn.q_proj for layer in model.get_decoder().layers] == originals
    assert all(type(p) is torch.nn.Linear for p in originals)
