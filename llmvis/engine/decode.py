"""The decode loop and per-step recording (the sampler lives here).

One prefill pass over the prompt gives the KV cache, the hidden states of every layer
for the prompt and the teacher-forced statistics of prompt tokens. Each decode step then
feeds one token, records the new token's hidden states (all layers) and computes the
next-token statistics from one row of logits. No attention is materialised and no
full-vocabulary tensor is kept after a step.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from llmvis.core.metrics import RowScratch, sampling_distribution
from llmvis.model.introspect import final_norm_input, logits_from_hidden

PROMPT_CHUNK = 256  # prompt rows turned into full-vocabulary logits at a time
STAT_NAMES = ("prob", "rank", "entropy", "sample_prob", "sample_entropy", "cut_mass")  # scalar per position


@dataclass
class GenerationParams:
    temperature: float = 0.7       # 0 = greedy
    top_k: int = 50                # 0 = off
    top_p: float = 0.95            # 1 = off
    max_new_tokens: int = 128      # generation stops here or at EOS
    seed: int | None = None        # None = pick one at random (and report it)

    def as_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


@dataclass
class StepStats:
    """Per-position statistics, position 0 first; NaN / -1 where undefined."""

    prob: np.ndarray            # (T,) raw softmax prob of the token given the prefix
    rank: np.ndarray            # (T,) 1-based rank under the raw distribution
    entropy: np.ndarray         # (T,) entropy (nats) of the raw distribution that predicted it
    sample_prob: np.ndarray     # (T,) prob under the sampling distribution (NaN for prompt)
    sample_entropy: np.ndarray  # (T,) entropy of the sampling distribution (NaN for prompt)
    cut_mass: np.ndarray        # (T,) mass removed by top-k/top-p (NaN for prompt)
    top_ids: np.ndarray         # (T, K) top-K alternative ids by raw prob
    top_probs: np.ndarray       # (T, K) their raw probs
    top_sample: np.ndarray      # (T, K) their sampling probs (NaN for prompt)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.__dict__.values())


@dataclass
class DecodeResult:
    ids: list[int]              # prompt + generated ids
    num_prompt: int             # number of prompt tokens
    stats: StepStats
    hidden: torch.Tensor        # (L+1, T, H) every layer's hidden state, index 0 = embeddings
    finish_reason: str          # "eos" | "length" | "cancelled"
    params: GenerationParams    # effective parameters (seed filled in)
    generate_s: float           # wall time of prefill + decode
    step_s: list[float] = field(default_factory=list)  # per decode-step wall time
    # (T, H) the last layer's output before the final norm; hidden[L] is after it (transformers
    # 5.x), so cos(hidden[L-1], hidden[L]) would measure the norm, not the last layer.
    # None for bundles saved before it was recorded, and for models without a final `norm`.
    final_residual: torch.Tensor | None = None


class _Recorder:
    """Collects per-position statistics in preallocated numpy buffers."""

    def __init__(self, capacity: int, k: int):
        self.k = k
        self.prob = np.full(capacity, np.nan, np.float32)
        self.rank = np.full(capacity, -1, np.int64)
        self.entropy = np.full(capacity, np.nan, np.float32)
        self.sample_prob = np.full(capacity, np.nan, np.float32)
        self.sample_entropy = np.full(capacity, np.nan, np.float32)
        self.cut_mass = np.full(capacity, np.nan, np.float32)
        self.top_ids = np.full((capacity, k), -1, np.int32)
        self.top_probs = np.full((capacity, k), np.nan, np.float32)
        self.top_sample = np.full((capacity, k), np.nan, np.float32)
        self.scratch = RowScratch()

    def teacher_forced(self, positions: slice, logits: torch.Tensor, next_ids: torch.Tensor) -> None:
        """Stats of tokens next_ids given rows of logits (c, V); fills `positions`. The
        full-vocabulary temporaries live in one RowScratch per recorder (reused chunk after chunk)."""
        logp = self.scratch.log_softmax(logits)  # (c, V), valid until the next chunk
        top_l, top_i = torch.topk(logp, self.k, dim=-1)  # (c, K)
        chosen = logp.gather(1, next_ids.unsqueeze(1))  # (c, 1)
        self.prob[positions] = chosen.squeeze(1).exp().numpy()
        self.rank[positions] = self.scratch.rank(logp, next_ids).numpy()
        self.entropy[positions] = self.scratch.entropy(logp).numpy()
        self.top_ids[positions] = top_i.numpy()
        self.top_probs[positions] = top_l.exp().numpy()

    def sampled(self, pos: int, logits: torch.Tensor, params: GenerationParams, gen: torch.Generator,
                forced: int | None = None) -> int:
        """Sample the token at `pos` from one row of logits (V,) and record its stats.

        With `forced`, that token is taken instead of a sample (a fork); its statistics are
        still those of the distributions it would have been sampled from.
        """
        if params.temperature == 0:
            return self._greedy(pos, logits, forced)
        probs = torch.softmax(logits, -1)  # (V,)
        top_p, top_i = torch.topk(probs, self.k)  # (K,)
        dist = sampling_distribution(logits, params.temperature, params.top_k, params.top_p)
        if forced is not None:
            chosen = int(forced)
        elif dist.ids.numel() == 1:
            chosen = int(dist.ids[0])
        else:
            pick = torch.multinomial(dist.probs, 1, generator=gen)
            chosen = int(dist.ids[pick])
        sample_prob = float(dist.prob_of(torch.tensor([chosen]))[0])
        sample_entropy, cut_mass = dist.entropy, dist.cut_mass
        top_sample = dist.prob_of(top_i)
        p_chosen = probs[chosen]
        in_top = top_i == chosen  # (K,)
        if bool(in_top.any()):
            # every entry above a member of the top K is in the top K: count there, not over V
            self.rank[pos] = int((top_p > p_chosen).sum()) + 1
        else:
            self.rank[pos] = int((probs > p_chosen).sum()) + 1  # = rank_of(probs, chosen)
        self.prob[pos] = float(p_chosen)
        self.entropy[pos] = float(torch.special.entr(probs).sum())  # -sum p ln p, 0 where p == 0
        self.sample_prob[pos] = sample_prob
        self.sample_entropy[pos] = sample_entropy
        self.cut_mass[pos] = cut_mass
        self.top_ids[pos] = top_i.numpy()
        self.top_probs[pos] = top_p.numpy()
        self.top_sample[pos] = top_sample.numpy()
        return chosen

    def _greedy(self, pos: int, logits: torch.Tensor, forced: int | None) -> int:
        """`sampled` at temperature 0, in as few tensor ops as it takes (a decode step's own cost
        beside the forward is mostly per-op overhead): the point mass on the argmax."""
        probs = torch.softmax(logits, -1)  # (V,)
        top_p, top_i = torch.topk(probs, self.k)  # (K,) sorted by prob
        p_np, i_np = top_p.numpy(), top_i.numpy()
        # softmax is monotone: a strictly largest prob is the strictly largest logit, which is
        # torch.argmax's answer; when two probs tie, argmax decides (the first maximal index)
        top_id = int(i_np[0]) if self.k == 1 or p_np[0] > p_np[1] else int(torch.argmax(logits))
        chosen = top_id if forced is None else int(forced)
        where = np.flatnonzero(i_np == chosen)
        if where.size:  # every entry above a member of the top K is in the top K: count there
            p_chosen = float(p_np[where[0]])
            self.rank[pos] = int((p_np > p_chosen).sum()) + 1
        else:
            p_c = probs[chosen]
            p_chosen = float(p_c)
            self.rank[pos] = int((probs > p_c).sum()) + 1  # = rank_of(probs, chosen)
        p_top = float(p_np[0]) if top_id == int(i_np[0]) else float(probs[top_id])
        self.prob[pos] = p_chosen
        self.entropy[pos] = float(torch.special.entr(probs).sum())  # -sum p ln p, 0 where p == 0
        self.sample_prob[pos] = float(chosen == top_id)
        self.sample_entropy[pos] = 0.0
        self.cut_mass[pos] = 1.0 - p_top
        self.top_ids[pos] = i_np
        self.top_probs[pos] = p_np
        self.top_sample[pos] = i_np == top_id
        return chosen

    def row(self, pos: int) -> dict:
        """Scalar statistics of one position (for streaming)."""
        return {name: getattr(self, name)[pos].item() for name in STAT_NAMES}

    def finish(self, n: int) -> StepStats:
        return StepStats(**{name: getattr(self, name)[:n].copy() for name in StepStats.__dataclass_fields__})


def decode(
    model,
    prompt_ids: list[int],
    params: GenerationParams,
    stop_ids: set[int],
    top_k_record: int = 100,
    on_step: Callable[[int, int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_prompt: Callable[[list[dict]], None] | None = None,
    forced: list[int] | None = None,
) -> DecodeResult:
    """Generate from prompt_ids and record everything the views need.

    on_step(position, token_id, stats) is called after each generated token (streaming, fault
    injection); an exception it raises aborts the run.
    should_stop() is polled before each step (for cancellation); on_prompt(rows) gets the
    prompt tokens' teacher-forced statistics once the prefill is done. `forced` ids are taken
    as the first generated tokens instead of samples (forking from a position).
    """
    if params.seed is None:
        params.seed = secrets.randbelow(2**31)
    device = model.get_input_embeddings().weight.device
    base = model.get_decoder()
    vocab = int(model.get_output_embeddings().weight.shape[0])
    head_device = model.get_output_embeddings().weight.device
    k = min(top_k_record, vocab)
    n_prompt = len(prompt_ids)
    capacity = n_prompt + params.max_new_tokens
    rec = _Recorder(capacity, k)
    gen = torch.Generator(device="cpu").manual_seed(int(params.seed))
    ids = list(prompt_ids)
    started = time.perf_counter()
    step_s: list[float] = []
    with torch.inference_mode(), final_norm_input(base) as pre_norm:
        inp = torch.tensor([prompt_ids], device=device)  # (1, P)
        out = base(input_ids=inp, use_cache=True, output_hidden_states=True)
        n_states = len(out.hidden_states)
        hidden_size = out.hidden_states[0].shape[-1]
        hidden = torch.empty(n_states, capacity, hidden_size, dtype=out.hidden_states[0].dtype, device=device)  # (L+1, cap, H)
        for layer, h in enumerate(out.hidden_states):
            hidden[layer, :n_prompt] = h[0]
        residual = None
        if pre_norm:
            residual = torch.empty(capacity, hidden_size, dtype=hidden.dtype, device=device)  # (cap, H)
            residual[:n_prompt] = pre_norm.pop()[0]
        cache = out.past_key_values
        final = out.last_hidden_state[0]  # (P, H)
        nxt = torch.tensor(prompt_ids[1:] + [0])
        last_logits = None
        for a in range(0, n_prompt, PROMPT_CHUNK):
            b = min(n_prompt, a + PROMPT_CHUNK)
            logits = logits_from_hidden(model, final[a:b], rec.scratch.logits_buffer(b - a, vocab, head_device)).cpu()  # (c, V)
            if b == n_prompt:
                last_logits = logits[-1].clone()  # the buffer is reused by the next chunk and dropped after
                logits, rows = logits[:-1], slice(a + 1, b)
            else:
                rows = slice(a + 1, b + 1)
            if logits.shape[0]:
                rec.teacher_forced(rows, logits, nxt[a : a + logits.shape[0]])
        del out, final
        rec.scratch = RowScratch()  # the prompt chunks' buffers (about 113 MB) are not kept through the decode
        if on_prompt is not None:
            on_prompt([rec.row(i) for i in range(n_prompt)])
        finish = "length"
        logits = last_logits
        for step in range(params.max_new_tokens):
            if should_stop is not None and should_stop():
                finish = "cancelled"
                break
            t0 = time.perf_counter()
            pos = len(ids)
            force = forced[step] if forced and step < len(forced) else None
            chosen = rec.sampled(pos, logits, params, gen, force)
            ids.append(chosen)
            if on_step is not None:
                on_step(pos, chosen, rec.row(pos))
            out = base(
                input_ids=torch.tensor([[chosen]], device=device),
                past_key_values=cache,
                use_cache=True,
                output_hidden_states=True,
            )
            hidden[:, pos].copy_(torch.cat(out.hidden_states)[:, -1])  # (L+1, H) in one copy, not L+1
            if residual is not None:
                residual[pos] = pre_norm.pop()[0, -1]
            cache = out.past_key_values
            step_s.append(time.perf_counter() - t0)
            if chosen in stop_ids:
                finish = "eos"
                break
            if step + 1 < params.max_new_tokens:
                logits = logits_from_hidden(model, out.last_hidden_state[0, -1]).cpu()  # (V,)
        del cache
    n = len(ids)
    return DecodeResult(
        ids=ids,
        num_prompt=n_prompt,
        stats=rec.finish(n),
        hidden=hidden[:, :n].clone() if n < capacity else hidden,
        finish_reason=finish,
        params=params,
        generate_s=time.perf_counter() - started,
        step_s=step_s,
        final_residual=None if residual is None else residual[:n].clone() if n < capacity else residual,
    )
