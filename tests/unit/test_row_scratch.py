"""RowScratch (core.metrics): log-softmax, rank and entropy of row chunks written into reused
buffers give the numbers of the plain functions bit for bit, whatever the order of chunk sizes,
with -inf logits (masked vocabulary) and ties; and scoring and the lens use it."""
import torch

from llmvis.core.lens import lens_stats
from llmvis.core.metrics import RowScratch, entropy_of_logp, rank_of


def plain(logits, ids):
    logp = torch.log_softmax(logits.float(), -1)
    chosen = logp.gather(1, ids.unsqueeze(1))
    rank = (logp > chosen).sum(-1) + 1  # written out here, not llmvis's rank_of
    ent = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)
    return logp, rank, ent


def test_reused_buffers_give_the_plain_numbers_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    scratch = RowScratch()
    for rows in (7, 64, 3, 64, 1, 40):  # grows, shrinks, grows back within the buffer
        logits = torch.randn(rows, 1000, generator=g) * 4
        logits[:, 990:] = float("-inf")  # a masked part of the vocabulary: p = 0 there
        logits[:, 5] = logits[:, 6]      # ties
        ids = torch.randint(0, 990, (rows,), generator=g)
        want_logp, want_rank, want_ent = plain(logits, ids)
        logp = scratch.log_softmax(logits)
        assert torch.equal(logp, want_logp)
        assert torch.equal(scratch.rank(logp, ids), want_rank)
        assert torch.equal(scratch.rank(logp, ids), rank_of(logp, ids))
        ent = scratch.entropy(logp)
        assert torch.equal(ent, want_ent) and torch.equal(ent, entropy_of_logp(logp))
        assert torch.isfinite(ent).all()
    assert scratch._logp.shape == (64, 1000)  # grown once to the largest chunk, never per chunk


def test_lens_stats_with_and_without_scratch_agree_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    scratch = RowScratch()
    for rows in (50, 20):
        logits = torch.randn(rows, 500, generator=g) * 3
        nxt = torch.randint(0, 500, (rows,), generator=g)
        nxt[-1] = -1  # the last position has no next token
        a = lens_stats(logits, nxt, 10)
        b = lens_stats(logits, nxt, 10, scratch)
        for x, y in zip(a, b):
            assert torch.equal(x, y) or (torch.isnan(x) == torch.isnan(y)).all() and torch.equal(x.nan_to_num(0), y.nan_to_num(0))


def test_scoring_writes_the_prompt_statistics_through_one_scratch(make_tiny, monkeypatch):
    """A 600-token score (three 256-row chunks) allocates the full-vocabulary buffers once, and
    its statistics equal a plain log-softmax over the model's own logits."""
    from llmvis.engine.decode import GenerationParams, decode

    grown = []
    real = RowScratch._views

    def counting(self, like):
        before = self._logp
        out = real(self, like)
        if self._logp is not before:
            grown.append(like.shape)
        return out

    monkeypatch.setattr(RowScratch, "_views", counting)
    model = make_tiny("llama", layers=2, seed=5)
    ids = torch.randint(4, 200, (600,), generator=torch.Generator().manual_seed(3)).tolist()
    res = decode(model, ids, GenerationParams(0.0, 0, 1.0, 0, seed=0), stop_ids=set())
    assert grown == [(256, model.config.vocab_size)]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    logp, rank, ent = plain(logits, torch.tensor(ids[1:]))
    torch.testing.assert_close(torch.from_numpy(res.stats.entropy[1:]), ent, atol=1e-5, rtol=1e-5)
    assert (torch.from_numpy(res.stats.rank[1:]) == rank).all()
    torch.testing.assert_close(torch.from_numpy(res.stats.prob[1:]), logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].exp(),
                               atol=1e-6, rtol=1e-5)


def test_logits_into_a_reused_buffer_are_the_heads_own_bits(make_tiny):
    """logits_from_hidden(..., out=buffer) equals the LM head module's output bit for bit, with
    and without Gemma 2's final soft-cap, and falls back to the module when the buffer cannot
    serve (wrong shape)."""
    from llmvis.model.introspect import logits_from_hidden

    for kind in ("llama", "gemma2"):
        model = make_tiny(kind, layers=1, seed=7)
        head = model.get_output_embeddings()
        v = head.weight.shape[0]
        scratch = RowScratch()
        g = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for rows in (9, 3, 9):
                h = torch.randn(rows, head.weight.shape[1], generator=g)
                want = logits_from_hidden(model, h)
                buf = scratch.logits_buffer(rows, v, h.device)
                got = logits_from_hidden(model, h, buf)
                assert got.data_ptr() == buf.data_ptr()  # written in place
                assert torch.equal(got, want), kind
                plain = head(h).float()
                cap = getattr(model.config, "final_logit_softcapping", None)
                assert torch.equal(want, torch.tanh(plain / cap) * cap if cap else plain)
            wrong = torch.empty(2, v)
            assert torch.equal(logits_from_hidden(model, h, wrong), want)  # not used: shape differs
