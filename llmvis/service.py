"""Engine: one loaded model, one run store, and the operations the API exposes.

Routes in app.py only parse input and call these methods; every model use happens here
under the model's lock, so generation and attention recomputation are serialised.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .config import ServerConfig
from .analysis import pool_matrix
from .compare import diff_runs, score_summary
from .insights import think_segments
from .errors import BadRequest, Busy, GenerationFailed, PayloadTooLarge, RunExpired, RunFailed, RunNotFound
from .generation import STAT_NAMES, GenerationParams, decode, eos_ids
from .models import LoadedModel
from .store import RunStore, release_freed_memory
from .tokens import Prompt, TokenTexts, build_prompt
from .runs import Run, float_or_none, new_run_id

log = logging.getLogger("llmvis.service")


@dataclass
class Job:
    """A generation admitted to the queue; its id becomes the run id."""

    id: str
    prompt: Prompt
    params: GenerationParams
    use_chat_template: bool
    cancel: threading.Event = field(default_factory=threading.Event)
    status: str = "queued"          # queued | running | done | cancelled | failed
    error: str | None = None
    kind: str = "generate"          # generate | fork | score
    forced: list[int] | None = None  # ids taken instead of the first samples (fork)
    parent: Run | None = None       # the run a fork branches from
    fork_position: int | None = None

    def __post_init__(self):
        if self.parent is not None:
            self.kind = "fork"


@dataclass
class FailedRun:
    """What the store keeps of a run whose generation raised."""

    id: str
    error: str
    status: str = "failed"
    nbytes: int = 256


def inherit_parent_steps(result, parent: Run, start: int, stop: int) -> None:
    """A fork re-reads the parent's tokens [start, stop) as its prefix; give them the parent's
    sampled-step statistics (identical model and prefix, so identical distributions)."""
    if stop <= start:
        return
    mine, theirs = result.stats, parent.result.stats
    for name in mine.__dataclass_fields__:
        getattr(mine, name)[start:stop] = getattr(theirs, name)[start:stop]


class Engine:
    fault_hook: Callable[[int], None] | None = None  # tests inject faults here; called at each step

    def __init__(self, lm: LoadedModel, config: ServerConfig | None = None):
        self.lm = lm
        self.jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self.config = config or ServerConfig()
        self.store = RunStore(self.config.store_budget_bytes)
        self.texts = TokenTexts(lm.tokenizer)
        self.stop_ids = eos_ids(lm.model, lm.tokenizer)
        ctx = lm.context_length or self.config.max_context
        self.max_context = min(self.config.max_context, ctx)
        self.on_run_stored: list[Callable[[Run], None]] = []       # called with each finished run (history)
        self.run_loaders: list[Callable[[str], Run | None]] = []   # asked for ids the store lacks (history)
        self.history = None                                        # llmvis.history.History when runs persist
        if self.config.data_dir is not None:
            from .library import attach_history
            attach_history(self)

    # ---- info --------------------------------------------------------------------
    def model_info(self) -> dict:
        return self.lm.info()

    def limits(self) -> dict:
        return {
            "max_new_tokens": self.config.max_new_tokens,
            "max_context": self.max_context,
            "max_body_bytes": self.config.max_body_bytes,
            "store_budget_bytes": self.config.store_budget_bytes,
            "max_top_n": self.config.max_top_n,
            "max_queue": self.config.max_queue,
            "attention_cache_bytes": self.config.attention_cache_bytes,
        }

    def estimate_run_bytes(self, num_tokens: int) -> int:
        """Bytes a run of num_tokens holds before any attention is cached."""
        lm = self.lm
        # every layer's state plus the last layer's pre-norm output: (L + 2) x (T, H)
        hidden = (lm.num_layers + 2) * num_tokens * int(lm.config.hidden_size) * lm.dtype.itemsize
        stats = num_tokens * (6 * 4 + self.config.max_top_n * 12)
        return hidden + stats

    def estimate(self, messages: list[dict], params: GenerationParams, use_chat_template: bool | None = None) -> dict:
        """Memory a generation would take, before running it (the page shows this as you type)."""
        lm = self.lm
        prompt = self._build(messages, use_chat_template)[0]
        n = len(prompt.ids)
        t = n + params.max_new_tokens
        head_dim = int(getattr(lm.config, "head_dim", None) or lm.config.hidden_size // lm.num_heads)
        run = self.estimate_run_bytes(t)
        kv = 2 * lm.num_layers * lm.num_kv_heads * head_dim * t * lm.dtype.itemsize
        attention = lm.num_heads * t * t * 2  # one layer's float16 cache
        budget = self.config.store_budget_bytes
        fits_context = t <= self.max_context
        out = {
            "num_prompt_tokens": n, "num_tokens": t, "run_bytes": run, "kv_cache_bytes": kv,
            "attention_layer_bytes": attention, "peak_bytes": run + kv + attention + t * t * 4,
            "store_budget_bytes": budget, "fits": run <= budget and fits_context,
        }
        if run > budget:
            out["message"] = f"needs about {run >> 20} MiB, over the run store budget of {budget >> 20} MiB"
        elif not fits_context:
            out["message"] = f"{t} tokens exceed the context of {self.max_context}"
        return out

    def _build(self, messages: list[dict], use_chat_template: bool | None):
        has_template = bool(getattr(self.lm.tokenizer, "chat_template", None))
        if use_chat_template is None:
            use_chat_template = has_template
        if use_chat_template and not has_template:
            raise BadRequest("use_chat_template", "this model's tokenizer has no chat template")
        return build_prompt(self.lm.tokenizer, messages, use_chat_template), use_chat_template

    # ---- generation --------------------------------------------------------------
    def prepare(self, messages: list[dict], params: GenerationParams, use_chat_template: bool | None = None) -> Job:
        """Validate against the model and the budgets, and admit a job to the queue (or refuse)."""
        prompt, use_chat_template = self._build(messages, use_chat_template)
        return self._admit(Job(new_run_id(), prompt, params, use_chat_template))

    def prepare_fork(self, parent: Run, position: int, token_id: int, params: GenerationParams) -> Job:
        """A new run: the parent's tokens before `position`, then `token_id` forced, then sampling."""
        if not 1 <= position < parent.num_tokens + 1:
            raise BadRequest("position", f"must be in [1, {parent.num_tokens}], got {position}")
        if not 0 <= token_id < int(self.lm.config.vocab_size):
            raise BadRequest("token_id", f"must be in [0, {int(self.lm.config.vocab_size) - 1}], got {token_id}")
        prompt = Prompt(parent.ids[:position], parent.segments[:position], "", bool(parent.params.get("use_chat_template")))
        job = Job(new_run_id(), prompt, params, prompt.chat, forced=[token_id], parent=parent, fork_position=position)
        return self._admit(job)

    def prepare_score(self, text: str, use_chat_template: bool = False, system: str | None = None) -> Job:
        """Score existing text: teacher-forced statistics for every token, no generation."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        if use_chat_template and not getattr(self.lm.tokenizer, "chat_template", None):
            raise BadRequest("use_chat_template", "this model's tokenizer has no chat template")
        prompt = build_prompt(self.lm.tokenizer, messages, use_chat_template, generation_prompt=False)
        params = GenerationParams(temperature=0.0, top_k=0, top_p=1.0, max_new_tokens=0, seed=0)
        return self._admit(Job(new_run_id(), prompt, params, use_chat_template, kind="score"))

    def _admit(self, job: Job) -> Job:
        n, new = len(job.prompt.ids), job.params.max_new_tokens
        field_name = "text" if job.kind == "score" else "prompt"
        if n == 0 or (job.kind == "score" and n < 2):
            raise BadRequest(field_name, "tokenizes to too few tokens")
        if n > self.max_context or (n == self.max_context and new > 0):
            raise BadRequest(field_name, f"is {n} tokens, longer than the model's context of {self.max_context}")
        if n + new > self.max_context:
            raise BadRequest(
                "max_new_tokens",
                f"prompt ({n} tokens) + max_new_tokens ({new}) exceeds the context of {self.max_context}",
            )
        need = self.estimate_run_bytes(n + new)
        if need > self.config.store_budget_bytes:
            raise PayloadTooLarge(
                f"max_new_tokens: this run would need about {need >> 20} MiB, over the run store budget of "
                f"{self.config.store_budget_bytes >> 20} MiB"
            )
        with self._jobs_lock:
            if len(self.jobs) >= self.config.max_queue:
                raise Busy(f"generation queue is full ({self.config.max_queue} runs waiting or running); retry shortly")
            self.jobs[job.id] = job
        return job

    def execute(self, job: Job, on_token: Callable[[dict], None] | None = None,
                on_prompt: Callable[[list[dict]], None] | None = None) -> Run:
        """Run a prepared job to completion, cancellation or failure; always leaves the queue."""
        def step(pos: int, token_id: int, stats: dict) -> None:
            if self.fault_hook is not None:
                self.fault_hook(pos)
            if on_token is not None:
                on_token(self.describe_step(job, pos, token_id, stats))

        try:
            with self.lm.lock:
                job.status = "running"
                result = decode(self.lm.model, job.prompt.ids, job.params, self.stop_ids, self.config.max_top_n,
                                on_step=step, should_stop=job.cancel.is_set,
                                on_prompt=None if on_prompt is None else lambda rows: on_prompt(
                                    [self.describe_prompt_token(job, i, row) for i, row in enumerate(rows)]),
                                forced=job.forced)
        except Exception as exc:
            job.status = "failed"
            job.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.exception("run %s failed", job.id)
            self.store.put(FailedRun(job.id, job.error))
            raise GenerationFailed(f"generation failed: {job.error}", run_id=job.id) from exc
        finally:
            with self._jobs_lock:
                self.jobs.pop(job.id, None)
        t0 = time.perf_counter()
        gen_count = len(result.ids) - result.num_prompt
        num_prompt = result.num_prompt
        extra: dict = {}
        if job.kind == "fork":
            num_prompt = min(job.fork_position, job.parent.num_prompt)
            inherit_parent_steps(result, job.parent, num_prompt, job.fork_position)
            extra = {"parent_id": job.parent.id, "fork_position": job.fork_position, "forced_token_id": job.forced[0]}
        elif job.kind == "score":
            result.finish_reason = "scored"
        run = Run(
            id=job.id,
            model_name=self.lm.name,
            params=result.params.as_dict() | {"use_chat_template": job.use_chat_template},
            ids=result.ids,
            num_prompt=num_prompt,
            segments=think_segments([self.texts.describe(i)["text"] for i in result.ids],
                                    job.prompt.segments + ["assistant"] * gen_count),
            result=result,
            finish_reason=result.finish_reason,
            timing={},
            attention_budget=self.config.attention_cache_bytes,
            status="cancelled" if result.finish_reason == "cancelled" else "done",
            kind=job.kind,
            links=extra,
        )
        if job.parent is not None:
            job.parent.children.append(run.id)
        self.store.put(run)
        release_freed_memory()  # the prefill's transient buffers go back to the OS, not to the heap
        job.status = "cancelled" if result.finish_reason == "cancelled" else "done"
        run.timing = {
            "generate_s": result.generate_s,
            "tokens_per_s": gen_count / result.generate_s if result.generate_s > 0 else None,
            "analysis_s": time.perf_counter() - t0,
        }
        for hook in self.on_run_stored:
            hook(run)
            if job.parent is not None:  # the parent's saved copy learns its new child
                hook(job.parent)
        return run

    def generate(self, messages: list[dict], params: GenerationParams, use_chat_template: bool | None = None) -> Run:
        return self.execute(self.prepare(messages, params, use_chat_template))

    def cancel(self, run_id: str) -> dict:
        """Ask a queued or running generation to stop; it stops before its next step."""
        with self._jobs_lock:
            job = self.jobs.get(run_id)
        if job is not None:
            job.cancel.set()
            return {"run_id": run_id, "cancelled": True, "status": job.status}
        try:
            run = self.store.get(run_id)  # a failed run is fine here: its status says so
        except (RunNotFound, RunExpired) as exc:
            raise type(exc)(f"run_id: {exc}") from None
        return {"run_id": run_id, "cancelled": False, "status": run.status}

    def describe_step(self, job: Job, pos: int, token_id: int, stats: dict) -> dict:
        """A generated token as the API shows it, built from the live step statistics."""
        return self._token(pos, token_id, "generated", "assistant", stats)

    def describe_prompt_token(self, job: Job, pos: int, stats: dict) -> dict:
        return self._token(pos, job.prompt.ids[pos], "prompt", job.prompt.segments[pos], stats)

    def _token(self, pos: int, token_id: int, source: str, segment: str, stats: dict) -> dict:
        d = self.texts.describe(token_id)
        rank = int(stats["rank"])
        return {
            "position": pos, "id": int(token_id), "text": d["text"], "source": source,
            "prob": float_or_none(stats["prob"]), "rank": rank if rank > 0 else None,
            "entropy": float_or_none(stats["entropy"]), "sample_prob": float_or_none(stats["sample_prob"]),
            "sample_entropy": float_or_none(stats["sample_entropy"]), "cut_mass": float_or_none(stats["cut_mass"]),
            "special": d["special"], "bytes": d["bytes"], "partial": d["partial"], "segment": segment,
        }

    def get_run(self, run_id: str, field_name: str = "run_id") -> Run:
        """A finished run from the store; unknown/expired answer 404, a failed run 409 (naming the field)."""
        try:
            run = self.store.get(run_id)
        except (RunNotFound, RunExpired) as exc:
            run = next((r for r in (load(run_id) for load in self.run_loaders) if r is not None), None)
            if run is None:
                raise type(exc)(f"{field_name}: {exc}") from None
            self.store.put(run)
        if isinstance(run, FailedRun):
            raise RunFailed(f"{field_name}: run {run_id} failed: {run.error}")
        return run

    # ---- serialisation -----------------------------------------------------------
    def token_dict(self, run: Run, pos: int) -> dict:
        s = run.result.stats
        stats = {name: getattr(s, name)[pos].item() for name in STAT_NAMES}
        source = "prompt" if pos < run.num_prompt else "generated"
        return self._token(pos, run.ids[pos], source, run.segments[pos], stats)

    def run_dict(self, run: Run) -> dict:
        generated = run.ids[run.num_prompt :]
        return {
            "run_id": run.id,
            "model": self.model_info(),
            "params": run.params,
            "tokens": [self.token_dict(run, i) for i in range(run.num_tokens)],
            "generated_text": self.lm.tokenizer.decode(generated, skip_special_tokens=True),
            "finish_reason": run.finish_reason,
            "status": run.status,
            "kind": run.kind,
            "parent_id": run.links.get("parent_id"),
            "fork_position": run.links.get("fork_position"),
            "children": list(run.children),
            **({"score": score_summary(run.result.stats)} if run.kind == "score" else {}),
            "timing": run.timing,
            "num_prompt_tokens": run.num_prompt,
            "num_tokens": run.num_tokens,
        }

    # ---- views -------------------------------------------------------------------
    def token_probs(self, run: Run, position: int, top_n: int) -> dict:
        run.check_position(position)
        if position == 0:
            raise BadRequest("position", "position 0 has no prediction (nothing precedes it)")
        s = run.result.stats
        n = min(top_n, s.top_ids.shape[1])
        cands = []
        for j in range(n):
            tid = int(s.top_ids[position, j])
            d = self.texts.describe(tid)
            cands.append({
                "id": tid,
                "text": d["text"],
                "bytes": d["bytes"],
                "partial": d["partial"],
                "special": d["special"],
                "prob": float(s.top_probs[position, j]),
                "sample_prob": float_or_none(s.top_sample[position, j]),
            })
        token = self.token_dict(run, position)
        return {
            "position": position,
            "token": token,
            "entropy": token["entropy"],
            "cut_mass": token["cut_mass"],
            "candidates": cands,
        }

    def attention(self, run: Run, layer: int, head) -> torch.Tensor:
        self._check_layer(layer, self.lm.num_layers - 1)
        if not isinstance(head, str):
            if not 0 <= head < self.lm.num_heads:
                raise BadRequest("head", f"must be mean, max or in [0, {self.lm.num_heads - 1}], got {head}")
        with self.lm.lock:
            grew = (layer, head) not in run.attention_cache
            matrix = run.attention_matrix(self.lm.model, layer, head)
        if grew:
            self.store.resize(run)
        return matrix

    def attention_view(self, run: Run, layer: int, head, window=None, pool: int | None = None,
                       pool_mode: str = "max") -> dict:
        """A window of the attention matrix (full resolution) or a pooled overview.

        window = (q_start, q_end, k_start, k_end), half-open; pool = the largest number of rows
        or columns to return (tiles of block x block are reduced with pool_mode).
        """
        n = run.num_tokens
        q0, q1, k0, k1 = window or (0, n, 0, n)
        for name, lo, hi in (("q_start", q0, q1), ("k_start", k0, k1)):
            if not 0 <= lo < hi <= n:
                raise BadRequest(name, f"window must satisfy 0 <= start < end <= {n}, got [{lo}, {hi})")
        full = self.attention(run, layer, head)  # (T, T)
        sub = full[q0:q1, k0:k1]  # (q, k)
        block = 1
        if pool is not None:
            block = max(1, -(-max(q1 - q0, k1 - k0) // pool))
        matrix = pool_matrix(sub, block, pool_mode) if block > 1 else sub
        return {"matrix": matrix, "block": block, "q_start": q0, "k_start": k0,
                "rows": int(matrix.shape[0]), "cols": int(matrix.shape[1])}

    def diff(self, run_a: Run, run_b: Run) -> dict:
        with self.lm.lock:
            result = diff_runs(self.lm.model, run_a, run_b)
        n = result["aligned_length"]
        result["run_a"], result["run_b"] = run_a.id, run_b.id
        result["tokens_a"] = [self.token_dict(run_a, i) for i in range(run_a.num_tokens)]
        result["tokens_b"] = [self.token_dict(run_b, i) for i in range(run_b.num_tokens)]
        result["params_a"], result["params_b"] = run_a.params, run_b.params
        result["same"] = [run_a.ids[i] == run_b.ids[i] for i in range(n)]
        return result

    def hidden_similarity(self, run: Run) -> dict:
        sim = run.similarity()  # (L, T)
        return {
            "per_layer": sim.mean(1).tolist(),
            "per_token": torch.round(sim.double(), decimals=5).tolist(),  # 5 decimals: half the JSON, same picture
            "num_layers": int(sim.shape[0]),
            "num_tokens": int(sim.shape[1]),
            "tokens": self.token_texts(run),
        }

    def projection(self, run: Run, layer: int, method: str, include_first: bool = False) -> dict:
        """PCA fitted on positions 1.. (position 0 is an attention sink with a huge norm); all projected."""
        self._check_layer(layer, self.lm.num_layers)
        coords, var = run.projection(layer, fit_start=0 if include_first else 1)
        texts = self.token_texts(run)
        points = [
            {"position": i, "x": float(coords[i, 0]), "y": float(coords[i, 1]), "text": texts[i],
             "source": "prompt" if i < run.num_prompt else "generated"}
            for i in range(run.num_tokens)
        ]
        return {"layer": layer, "method": method, "points": points, "explained_variance": var,
                "fit_positions": [0 if include_first or run.num_tokens < 3 else 1, run.num_tokens]}

    def token_texts(self, run: Run) -> list[str]:
        return [self.texts.describe(i)["text"] for i in run.ids]

    @staticmethod
    def _check_layer(layer: int, hi: int) -> None:
        if not 0 <= layer <= hi:
            raise BadRequest("layer", f"must be in [0, {hi}], got {layer}")
