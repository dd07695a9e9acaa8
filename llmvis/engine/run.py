"""Run: the unit of everything. Tokens with their statistics, cached hidden states, lazy views.

Attention is never materialised for all layers. For layer L it is recomputed from the
cached input to layer L (hidden_states[L]) through the layer's own attention module
(llmvis.model.capture), and cached on the run per (layer, head): one (T, T) float32 matrix
for a query head, or the mean or max over heads, within the run's attention budget.
Other views (lens, head statistics, rows) are cached in `view_cache` by llmvis.engine.
Every cache counts in `nbytes`, which the run store's budget reads.
"""
from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from llmvis.core.attention import causal_attention_view
from llmvis.core.errors import BadRequest
from llmvis.core.vectors import cosine_consecutive, pca_2d
from llmvis.engine.decode import DecodeResult
from llmvis.model.capture import layer_attention_reduce

RUN_TOKEN_BYTES = 64  # per-token bookkeeping (ids list, segment names) counted in Run.nbytes

@dataclass
class Run:
    """One generation (or scored text) and everything derived from it."""

    id: str
    model_name: str
    params: dict
    ids: list[int]
    num_prompt: int
    segments: list[str]
    result: DecodeResult
    finish_reason: str
    timing: dict
    created: float = field(default_factory=time.time)
    status: str = "done"                                  # done | cancelled
    kind: str = "generate"                                # generate | fork | score
    links: dict = field(default_factory=dict)             # fork: parent_id, fork_position, forced_token_id
    children: list = field(default_factory=list)          # ids of runs forked from this one
    attention_cache: OrderedDict = field(default_factory=OrderedDict)  # (layer, head) -> (T, T) float32, LRU
    attention_budget: int = 512 << 20                     # bytes of attention this run may cache
    similarity_cache: torch.Tensor | None = None          # (L, T)
    view_cache: dict = field(default_factory=dict)        # name -> cached view result with .nbytes (insights)
    saved: bool | None = None                             # whether the history kept it (None: no history)
    save_error: str | None = None                         # why it was not kept

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    @property
    def hidden(self) -> torch.Tensor:
        return self.result.hidden  # (L+1, T, H)

    @property
    def nbytes(self) -> int:
        """Bytes this run holds, as counted against the run store's budget."""
        total = self.hidden.numel() * self.hidden.element_size() + self.result.stats.nbytes
        residual = self.result.final_residual
        if residual is not None:
            total += residual.numel() * residual.element_size()
        total += self._attention_bytes()
        total += sum(int(getattr(v, "nbytes", 0)) for v in list(self.view_cache.values()))
        if self.similarity_cache is not None:
            total += self.similarity_cache.numel() * self.similarity_cache.element_size()
        total += RUN_TOKEN_BYTES * len(self.ids)
        return total

    # ---- views -------------------------------------------------------------------
    def check_position(self, position: int, field_name: str = "position") -> None:
        if not 0 <= position < self.num_tokens:
            raise BadRequest(field_name, f"must be in [0, {self.num_tokens - 1}], got {position}")

    def attention_matrix(self, model, layer: int, head: int | str) -> torch.Tensor:
        """(T, T) attention of one head, or the mean / max over heads, of `layer`; cached per
        (layer, head) within the run's attention budget, least recently viewed dropped first."""
        key = (layer, head)
        cached = self.attention_cache.get(key)
        if cached is None:
            cached = layer_attention_reduce(
                model, self.hidden[layer], layer,
                lambda q, k, scale, softcap, window: causal_attention_view(q, k, scale, head, softcap, window),
            ).cpu()
            self.attention_cache[key] = cached
            while len(self.attention_cache) > 1 and self._attention_bytes() > self.attention_budget:
                self.attention_cache.popitem(last=False)
        self.attention_cache.move_to_end(key)
        return cached

    def _attention_bytes(self) -> int:
        return sum(a.numel() * a.element_size() for a in self.attention_cache.values())

    def similarity(self) -> torch.Tensor:
        """(L, T) cosine similarity of each token's state between consecutive layers."""
        if self.similarity_cache is None:
            self.similarity_cache = cosine_consecutive(self.hidden, self.result.final_residual).cpu()
        return self.similarity_cache

    def projection(self, layer: int, fit_start: int = 1) -> tuple[torch.Tensor, list[float]]:
        return pca_2d(self.hidden[layer].cpu(), fit_start=fit_start)


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


