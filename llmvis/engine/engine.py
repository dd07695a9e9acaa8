"""Engine: one loaded model, one run store, one job queue, and every operation on them.

All model work happens here, under the model's lock: the decode loop, attention recomputation,
the logit lens, head statistics, attention rows and the diff. Views are cached on the run
(`Run.attention_cache`, `Run.view_cache`) and the store re-measures the run when one grows.
The Engine returns tensors, numpy arrays and plain values; turning them into JSON is the job of
llmvis.web.serialize (the API, the share HTML and the Python API all use it). Keeping runs on
disk is llmvis.keep's: it registers callbacks in `on_run_stored` and `run_loaders`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import torch

from llmvis.core.attention import pool_block, pool_matrix
from llmvis.core.config import ServerConfig
from llmvis.core.errors import BadRequest, Cancelled, GenerationFailed, PayloadTooLarge, RunExpired, RunFailed, RunNotFound
from llmvis.core.heads import AttentionStats, RowAttention
from llmvis.core.lens import LENS_TOP_K, LensResult
from llmvis.core.segments import think_segments
from llmvis.core.tokens import Prompt, TokenTexts, build_prompt
from llmvis.engine.decode import PROMPT_CHUNK, GenerationParams, decode
from llmvis.engine.explain import (
    FlowGraph, GradientAttribution, RowAttribution, check_target, flow_graph, gradient_at, input_embeddings,
    row_attribution, score_at,
)
from llmvis.engine import intervene
from llmvis.engine.jobs import Admission, FailedRun, Job, JobQueue, ReadJob, inherit_parent_steps
from llmvis.engine.run import RUN_TOKEN_BYTES, Run, new_run_id
from llmvis.engine.store import RunStore, release_freed_memory
from llmvis.engine.views import attention_row_all_layers, attention_stats, diff_runs, logit_lens
from llmvis.model.capture import layer_attention
from llmvis.model.introspect import eos_ids
from llmvis.model.loading import LoadedModel

log = logging.getLogger("llmvis.engine")
MAX_CACHED_ROWS = 16   # query rows of all-layer attention kept per run (and explanations of each kind)
MAX_IG_STEPS = 128     # integrated-gradients steps one request may ask for
LENS_STEP = 64         # logit-lens positions computed per hold of the model lock (a generate waits at most one step)
MAX_READ_JOBS = 64     # named view jobs remembered for progress queries
StepCallback = Callable[[int, int, dict], None]  # (position, token id, scalar statistics)


class Engine:
    fault_hook: Callable[[int], None] | None = None  # tests inject faults here; called at each step

    def __init__(self, lm: LoadedModel, config: ServerConfig | None = None):
        self.lm = lm
        self.config = config or ServerConfig()
        self.jobs = JobQueue(self.config.max_queue)
        self.reads = Admission(self.config.max_heavy_reads, "heavy views")  # views that compute, at once
        self.read_jobs: dict[str, ReadJob] = {}  # named long views, by job id (recent ones kept for progress)
        self._read_jobs_lock = threading.Lock()
        self.store = RunStore(self.config.store_budget_bytes)
        self.texts = TokenTexts(lm.tokenizer)
        self.stop_ids = eos_ids(lm.model, lm.tokenizer)
        ctx = lm.context_length or self.config.max_context
        self.max_context = min(self.config.max_context, ctx)
        self.on_run_stored: list[Callable[[Run], None]] = []       # called with each finished run (history)
        self.run_loaders: list[Callable[[str], Run | None]] = []   # asked for ids the store lacks (history)
        self.history = None  # a llmvis.keep.history.History once llmvis.keep.library.attach_history ran

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
        """Bytes a run of num_tokens holds in the store before any view is cached (Run.nbytes)."""
        lm = self.lm
        # every layer's state plus the last layer's pre-norm output: (L + 2) x (T, H)
        hidden = (lm.num_layers + 2) * num_tokens * int(lm.config.hidden_size) * lm.dtype.itemsize
        k = min(self.config.max_top_n, int(lm.config.vocab_size))
        # StepStats: prob, entropy, sample_prob, sample_entropy, cut_mass float32 + rank int64;
        # top_ids int32, top_probs and top_sample float32 for K alternatives
        stats = num_tokens * (5 * 4 + 8 + k * 12)
        return hidden + stats + RUN_TOKEN_BYTES * num_tokens

    def estimate(self, messages: list[dict], params: GenerationParams, use_chat_template: bool | None = None) -> dict:
        """Memory a generation would take, before running it (the page shows this as you type).

        run_bytes is what the store will hold (Run.nbytes). attention_layer_bytes is one cached
        attention view: a (T, T) float32 matrix for one (layer, head) or head reduction; a run
        caches up to attention_cache_bytes of them. peak_bytes adds, to the run, the larger of
        the generation's transients (KV cache, the prefill's hidden states and a chunk of
        full-vocabulary logits) and an attention view's (its cache, the GQA-expanded keys and
        two (Hq, 256, T) float32 score buffers).
        """
        lm = self.lm
        prompt = self._build(messages, use_chat_template)[0]
        n = len(prompt.ids)
        t = n + params.max_new_tokens
        hidden_size = int(lm.config.hidden_size)
        head_dim = int(getattr(lm.config, "head_dim", None) or hidden_size // lm.num_heads)
        item = lm.dtype.itemsize
        run = self.estimate_run_bytes(t)
        kv = 2 * lm.num_layers * lm.num_kv_heads * head_dim * t * item
        prefill = (lm.num_layers + 1) * n * hidden_size * item + 3 * min(n, PROMPT_CHUNK) * int(lm.config.vocab_size) * 4
        view = t * t * 4  # one (T, T) float32 attention view
        cache = max(view, min(self.config.attention_cache_bytes, lm.num_layers * (lm.num_heads + 2) * view))
        view_work = lm.num_heads * t * head_dim * 4 + 2 * lm.num_heads * min(t, 256) * t * 4
        budget = self.config.store_budget_bytes
        fits_context = t <= self.max_context
        out = {
            "num_prompt_tokens": n, "num_tokens": t, "run_bytes": run, "kv_cache_bytes": kv,
            "attention_layer_bytes": view, "attention_cache_bytes": cache,
            "peak_bytes": run + max(kv + prefill, cache + view_work),
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
        return self.jobs.admit(job)

    def execute(self, job: Job, on_token: StepCallback | None = None,
                on_prompt: Callable[[list[dict]], None] | None = None) -> Run:
        """Run a prepared job to completion, cancellation or failure; always leaves the queue.

        on_token(position, token_id, stats) follows each generated token; on_prompt(rows) gets the
        prompt tokens' statistics once the prefill is done (llmvis.web.serialize shapes both).
        """
        def step(pos: int, token_id: int, stats: dict) -> None:
            if self.fault_hook is not None:
                self.fault_hook(pos)
            if on_token is not None:
                on_token(pos, token_id, stats)

        try:
            with self.lm.lock:
                job.status = "running"
                result = decode(self.lm.model, job.prompt.ids, job.params, self.stop_ids, self.config.max_top_n,
                                on_step=step, should_stop=job.cancel.is_set,
                                on_prompt=on_prompt,
                                forced=job.forced)
        except Exception as exc:
            job.status = "failed"
            job.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.exception("run %s failed", job.id)
            self.store.put(FailedRun(job.id, job.error))
            raise GenerationFailed(f"generation failed: {job.error}", run_id=job.id) from exc
        finally:
            self.jobs.finish(job.id)
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
            segments=think_segments(self.texts.texts(result.ids), job.prompt.segments + ["assistant"] * gen_count),
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
        """Ask a queued or running generation, or a named view job, to stop before its next step."""
        job = self.jobs.get(run_id)
        if job is not None:
            job.cancel.set()
            return {"run_id": run_id, "cancelled": True, "status": job.status}
        with self._read_jobs_lock:
            read = self.read_jobs.get(run_id)
        if read is not None:
            read.cancel.set()
            return {"run_id": run_id, "cancelled": read.status == "running", "status": read.status}
        try:
            run = self.store.get(run_id)  # a failed run is fine here: its status says so
        except (RunNotFound, RunExpired) as exc:
            raise type(exc)(f"run_id: {exc}") from None
        return {"run_id": run_id, "cancelled": False, "status": run.status}

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


    # ---- views -------------------------------------------------------------------
    def cached_view(self, run: Run, key: str, compute, complete=None):
        """run.view_cache[key], computed under the model lock the first time; the store re-measures.

        A view filled in parts (the lens, by windows of positions) passes complete(hit) -> bool,
        and compute(hit) gets the partial result to extend (None the first time).
        Returns (value, seconds spent computing it now).
        """
        def ready(hit) -> bool:
            return hit is not None and (complete is None or complete(hit))

        hit = run.view_cache.get(key)
        if ready(hit):
            return hit, 0.0
        with self.reads.slot(), self.lm.lock:  # 503 when too many views are computing or waiting
            hit = run.view_cache.get(key)
            if ready(hit):
                return hit, 0.0
            t0 = time.perf_counter()
            hit = compute() if complete is None else compute(hit)
            took = time.perf_counter() - t0
            run.view_cache[key] = hit
            self._trim_views(run, key)
        self.store.resize(run)
        return hit, took

    @staticmethod
    def _trim_views(run: Run, key: str) -> None:
        """Per-position views (keys "kind:..."): keep the MAX_CACHED_ROWS most recent of each kind."""
        if ":" not in key:
            return
        kind = key.split(":", 1)[0] + ":"
        same = [k for k in run.view_cache if k.startswith(kind)]
        for old in same[: max(0, len(same) - MAX_CACHED_ROWS)]:
            run.view_cache.pop(old, None)

    def attention(self, run: Run, layer: int, head) -> torch.Tensor:
        """(T, T) float32 attention of one query head, or the mean / max over heads, of `layer`."""
        self._check_layer(layer, self.lm.num_layers - 1)
        if not isinstance(head, str):
            if not 0 <= head < self.lm.num_heads:
                raise BadRequest("head", f"must be mean, max or in [0, {self.lm.num_heads - 1}], got {head}")
        if (layer, head) in run.attention_cache:
            with self.lm.lock:  # cached: no admission needed, but the LRU order changes under the lock
                return run.attention_matrix(self.lm.model, layer, head)
        with self.reads.slot(), self.lm.lock:
            matrix = run.attention_matrix(self.lm.model, layer, head)
        self.store.resize(run)
        return matrix

    def attention_heads(self, run: Run, layer: int, out_dtype=torch.float16) -> torch.Tensor:
        """(Hq, T, T) attention of every query head of `layer`, in one chunked pass (each KV head's
        keys meet its whole query group in one matmul). Not cached: a notebook loop over layers
        (`Trace.attention_all`) holds one layer at a time."""
        self._check_layer(layer, self.lm.num_layers - 1)
        with self.reads.slot(), self.lm.lock:
            return layer_attention(self.lm.model, run.hidden[layer], layer, out_dtype=out_dtype)

    def attention_view(self, run: Run, layer: int, head, window=None, pool: int | None = None,
                       pool_mode: str = "max") -> dict:
        """A window of the attention matrix (full resolution) or a pooled overview.

        window = (q_start, q_end, k_start, k_end), half-open; pool = the largest number of rows
        or columns to return (tiles of block x block are reduced with pool_mode).
        """
        n = run.num_tokens
        q0, q1, k0, k1 = window or (0, n, 0, n)
        for start_name, end_name, lo, hi in (("q_start", "q_end", q0, q1), ("k_start", "k_end", k0, k1)):
            if not 0 <= lo < hi <= n:
                name = end_name if 0 <= lo < n else start_name  # the bound that is wrong
                raise BadRequest(name, f"window must satisfy 0 <= {start_name} < {end_name} <= {n}, got [{lo}, {hi})")
        block = pool_block(q1 - q0, k1 - k0, pool)[0]
        if head == "all":
            full = self.attention_heads(run, layer)  # (Hq, T, T) float16
            sub = full[:, q0:q1, k0:k1]  # (Hq, q, k)
            matrix = torch.stack([pool_matrix(h.float(), block, pool_mode) for h in sub]) if block > 1 else sub
            return {"matrix": matrix, "block": block, "q_start": q0, "k_start": k0, "heads": int(matrix.shape[0]),
                    "rows": int(matrix.shape[1]), "cols": int(matrix.shape[2])}
        full = self.attention(run, layer, head)  # (T, T)
        sub = full[q0:q1, k0:k1]  # (q, k)
        matrix = pool_matrix(sub, block, pool_mode) if block > 1 else sub
        return {"matrix": matrix, "block": block, "q_start": q0, "k_start": k0,
                "rows": int(matrix.shape[0]), "cols": int(matrix.shape[1])}

    def logit_lens(self, run: Run, start: int, end: int, job_id: str | None = None) -> tuple[LensResult, float]:
        """The lens of positions [start, end); only positions not computed before cost anything.

        Computed LENS_STEP positions per hold of the model lock. With job_id, the range is a job
        its client can follow (`read_job`) and cancel (`cancel`) between steps; what was done
        before a cancel stays cached.
        """
        if not 0 <= start < end <= run.num_tokens:
            raise BadRequest("end", f"window must satisfy 0 <= start < end <= {run.num_tokens}, got [{start}, {end})")
        done = run.view_cache.get("lens")
        if done is not None and not len(done.missing(start, end)):
            return done, 0.0
        job = self._start_read_job(job_id, "logit_lens", run, end - start)

        def step(done, a: int, b: int):
            if job is not None and job.cancel.is_set():  # checked again once the model lock is ours
                job.status = "cancelled"
                raise Cancelled(f"job_id: job {job.id} was cancelled after {job.done} of {job.total} positions")
            return logit_lens(self.lm.model, run.hidden, run.ids, LENS_TOP_K, start=a, end=b, into=done)

        took = 0.0
        try:
            with self.reads.slot():  # one admission for the whole range; the lock is taken per step
                for a in range(start, end, LENS_STEP):
                    b = min(end, a + LENS_STEP)
                    lens, t = self.cached_view(run, "lens", lambda done, a=a, b=b: step(done, a, b),
                                               complete=lambda hit, a=a, b=b: not len(hit.missing(a, b)))
                    took += t
                    if job is not None:
                        job.done = b - start
        except Exception:
            if job is not None and job.status == "running":
                job.status = "failed"
            raise
        if job is not None:
            job.status = "done"
        return lens, took

    def _start_read_job(self, job_id: str | None, kind: str, run: Run, total: int) -> ReadJob | None:
        if job_id is None:
            return None
        job = ReadJob(job_id, kind, run.id, total)
        with self._read_jobs_lock:
            old = self.read_jobs.get(job_id)
            if old is not None and old.status == "running":
                raise BadRequest("job_id", f"job {job_id} is already running")
            self.read_jobs[job_id] = job
            while len(self.read_jobs) > MAX_READ_JOBS:  # keep the most recent for progress queries
                self.read_jobs.pop(next(iter(self.read_jobs)))
        return job

    def read_job(self, job_id: str) -> dict:
        """Progress of a named view job: done of total positions, and its status."""
        with self._read_jobs_lock:
            job = self.read_jobs.get(job_id)
        if job is None:
            raise RunNotFound(f"job_id: unknown job {job_id[:64]}")
        return job.as_dict()

    def head_stats(self, run: Run) -> tuple[AttentionStats, float]:
        """Per layer and query head statistics of attention, and per-segment shares (cached)."""
        segs = self.segments(run)
        return self.cached_view(run, "attn_stats",
                                lambda: attention_stats(self.lm.model, run.hidden, segs, run.num_prompt))

    def attention_row(self, run: Run, position: int) -> tuple[RowAttention, float]:
        """Query row `position` of every layer and head (the last MAX_CACHED_ROWS are cached)."""
        run.check_position(position)
        return self.cached_view(run, f"row:{position}",
                                lambda: attention_row_all_layers(self.lm.model, run.hidden, position))

    def segments(self, run: Run) -> list[str]:
        """The run's segments with <think> blocks tagged (idempotent)."""
        return think_segments(self.token_texts(run), list(run.segments))

    def diff(self, run_a: Run, run_b: Run, align: str = "position") -> dict:
        """Alignment and per-position KL of two runs (llmvis.engine.views.diff_runs)."""
        if align not in intervene.ALIGNS:
            raise BadRequest("align", f"must be one of {', '.join(intervene.ALIGNS)}, got {str(align)[:40]!r}")
        with self.reads.slot(), self.lm.lock:
            return diff_runs(self.lm.model, run_a, run_b, align=align)

    def similarity(self, run: Run) -> torch.Tensor:
        """(L, T) cosine similarity of each token's state between consecutive layers (cached)."""
        grew = run.similarity_cache is None
        sim = run.similarity()
        if grew:
            self.store.resize(run)
        return sim

    def projection(self, run: Run, layer: int, include_first: bool = False) -> tuple[torch.Tensor, list[float], int]:
        """PCA of layer `layer`'s states: (coords (T, 2), explained variance, first fitted position).

        Fitted on positions 1.. (position 0 is an attention sink with a huge norm); all projected.
        """
        self._check_layer(layer, self.lm.num_layers)
        fit_start = 0 if include_first or run.num_tokens < 3 else 1
        coords, var = run.projection(layer, fit_start=0 if include_first else 1)
        return coords, var, fit_start

    def token_texts(self, run: Run) -> list[str]:
        return self.texts.texts(run.ids)

    @staticmethod
    def _check_layer(layer: int, hi: int) -> None:
        if not 0 <= layer <= hi:
            raise BadRequest("layer", f"must be in [0, {hi}], got {layer}")

    # ---- explain (issue 14) --------------------------------------------------------
    def explain_args(self, run: Run, position: int, target: int | None, contrast: int | None) -> tuple[int, int, int | None]:
        """Validate an explain request: (query row, target id, contrast id or None).

        position is the token explained (1 .. T-1), predicted from the state at position - 1."""
        if not 1 <= position < run.num_tokens:
            raise BadRequest("position", f"must be in [1, {run.num_tokens - 1}] (the token explained; "
                                         f"position 0 has no prediction), got {position}")
        if run.result.final_residual is None:
            raise BadRequest("run_id", "this run has no final-norm input recorded, so it cannot be explained")
        vocab = int(self.lm.config.vocab_size)
        target = run.ids[position] if target is None else target
        check_target(vocab, "target", target)
        check_target(vocab, "contrast", contrast)
        if contrast is not None and contrast == target:
            raise BadRequest("contrast", "must differ from the target")
        return position - 1, target, contrast

    def explain_logit(self, run: Run, position: int, target: int | None = None,
                      contrast: int | None = None) -> tuple[RowAttribution, float]:
        """Direct logit attribution of the token at `position` (or `target`, minus `contrast`) to
        the embedding, every query head and every MLP, plus value-norm and direct input
        attribution of the same row (one pass over the layers; cached per query, target, contrast)."""
        q, target, contrast = self.explain_args(run, position, target, contrast)
        return self.cached_view(run, f"explain:{q}:{target}:{contrast}", lambda: row_attribution(
            self.lm.model, run.hidden, run.result.final_residual, q, target, contrast))

    def explain_gradients(self, run: Run, position: int, target: int | None = None, contrast: int | None = None,
                          method: str = "grad_x_input", steps: int = 16,
                          job_id: str | None = None) -> tuple[GradientAttribution, float]:
        """Gradient × input (one backward pass) or integrated gradients (`steps` midpoints of the
        straight path from the baseline, baseline_token()'s embedding at every position) of the
        target logit (difference) at row position - 1.

        The model lock is held one pass at a time, so a generation waits at most one step; with
        job_id the passes are a job its client can follow and cancel."""
        q, target, contrast = self.explain_args(run, position, target, contrast)
        if method not in ("grad_x_input", "integrated_gradients"):
            raise BadRequest("method", f"must be grad_x_input or integrated_gradients, got {method!r}")
        if method == "grad_x_input":
            steps = 1
        elif not 1 <= steps <= MAX_IG_STEPS:
            raise BadRequest("steps", f"must be in [1, {MAX_IG_STEPS}], got {steps}")
        key = f"grad:{method}:{q}:{target}:{contrast}:{steps}"
        hit = run.view_cache.get(key)
        if hit is not None:
            return hit, 0.0
        job = self._start_read_job(job_id, method, run, steps)
        model = self.lm.model
        t0 = time.perf_counter()
        base_id = self.baseline_token() if method == "integrated_gradients" else None
        try:
            with self.reads.slot():
                with self.lm.lock:
                    x = input_embeddings(model, run.ids[: q + 1])  # (1, q+1, H)
                    b = input_embeddings(model, [base_id] * (q + 1)) if method == "integrated_gradients" else None
                total = torch.zeros(x.shape[1], x.shape[2])
                value = base = None
                for k in range(steps):
                    if job is not None and job.cancel.is_set():
                        job.status = "cancelled"
                        raise Cancelled(f"job_id: job {job.id} was cancelled after {job.done} of {job.total} steps")
                    point = x if b is None else b + ((k + 0.5) / steps) * (x - b)  # midpoints of the straight path
                    with self.lm.lock:
                        grad, f = gradient_at(model, point, target, contrast)
                    total += grad
                    if b is None:
                        value = f
                    if job is not None:
                        job.done = k + 1
                delta = x if b is None else x - b
                if b is not None:
                    with self.lm.lock:
                        value = score_at(model, x, target, contrast)
                        base = score_at(model, b, target, contrast)
                scores = (delta[0].float().cpu() * (total / steps)).sum(-1).numpy()
        except Exception:
            if job is not None and job.status == "running":
                job.status = "failed"
            raise
        result = GradientAttribution(method, q, target, contrast, scores, steps, float(value), base,
                                     base_id if method == "integrated_gradients" else None)
        run.view_cache[key] = result
        self._trim_views(run, key)
        self.store.resize(run)
        if job is not None:
            job.status = "done"
        return result, time.perf_counter() - t0

    def baseline_token(self) -> int:
        """The integrated-gradients baseline token: the tokenizer's EOS, else BOS, else pad, skipping
        any whose embedding row is zero (a padding_idx row), else the first non-zero row.

        Not the all-zero embedding: RMS norms make f(alpha·x) nearly constant but for a jump near
        alpha = 0, so a zero baseline's Riemann sum converges badly (docs/EXPLAIN.md)."""
        tok = self.lm.tokenizer
        with self.lm.lock:
            rows = self.lm.model.get_input_embeddings().weight
            vocab = int(rows.shape[0])
            for value in (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id):
                if isinstance(value, int) and 0 <= value < vocab and bool(rows[value].detach().abs().sum() > 0):
                    return value
            nonzero = torch.nonzero(rows.detach().abs().sum(-1) > 0).flatten()
            return int(nonzero[0]) if len(nonzero) else 0

    def explain_flow(self, run: Run, position: int, threshold: float = 0.05) -> tuple[FlowGraph, float]:
        """The information-flow graph of the prediction of the token at `position` (cached per threshold)."""
        q, _, _ = self.explain_args(run, position, None, None)
        if not 0.0 < threshold <= 1.0:
            raise BadRequest("threshold", f"must be in (0, 1], got {threshold}")
        return self.cached_view(run, f"flow:{q}:{threshold:.6g}", lambda: flow_graph(
            self.lm.model, run.hidden, run.result.final_residual, q, threshold))

    # ---- interventions (issue 15) --------------------------------------------------
    # Thin: the work is in llmvis.engine.intervene (validation, hooks, runs, effects, sweeps).
    def intervention_dims(self) -> dict:
        return {k: self.lm.info()[k] for k in ("num_layers", "num_heads", "num_kv_heads", "hidden_size", "vocab_size")}

    def ablate(self, parent: Run, targets: list, mode: str = "zero", free: bool = False) -> Run:
        """A linked run of kind "intervention": `parent` re-run with query heads, KV groups, MLPs
        or attention layers set to zero or to their mean over the parent's positions."""
        spec = intervene.check_ablation({"type": "ablate", "mode": mode, "free": free, "targets": targets},
                                        self.intervention_dims())
        return intervene.run_intervention(self, parent, spec,
                                          lambda model: intervene.ablation_hooks(model, spec, parent.ids))

    def steer(self, parent: Run, layer: int, vector: dict, alphas: list, from_position: int | None = None,
              free: bool = True, normalize: bool = False) -> tuple[dict, list[Run]]:
        """One linked run per alpha: alpha * v added to the residual stream at `layer` from
        `from_position` on (default: the last prompt token). Returns (the vector's summary, runs)."""
        dims = self.intervention_dims()
        intervene.check_steer_request(layer, alphas, from_position, parent.num_tokens, dims)
        fp = max(0, parent.num_prompt - 1) if from_position is None else from_position
        with self.reads.slot(), self.lm.lock:
            vec = intervene.steering_vector(self.lm.model, self.lm.tokenizer, layer, vector, dims)
        values, summary = intervene.finish_vector(vec, normalize)
        runs = []
        for alpha in alphas:
            spec = intervene.check_steering({"type": "steer", "layer": layer, "alpha": alpha, "from_position": fp,
                                             "free": free, "vector": summary | {"values": values}}, dims)
            runs.append(intervene.run_intervention(self, parent, spec, lambda model, s=spec: intervene.steering_hooks(s)))
        return summary | {"layer": layer}, runs

    def intervention_effects(self, run: Run, align: str = "auto", top: int = 10) -> dict:
        """Per position: the parent token's log-prob change and KL(parent || intervened); the top."""
        if run.kind != "intervention" or "parent_id" not in run.links:
            raise BadRequest("run_id", f"run {run.id} is not an intervention run")
        if align not in intervene.ALIGNS:
            raise BadRequest("align", f"must be one of {', '.join(intervene.ALIGNS)}, got {str(align)[:40]!r}")
        if not 1 <= top <= 100:
            raise BadRequest("top", f"must be in [1, 100], got {top}")
        parent = self.get_run(run.links["parent_id"], "parent_id")
        with self.reads.slot(), self.lm.lock:
            out = intervene.effects(self.lm.model, parent, run, align, top)
        return {"run_id": run.id, "parent_id": parent.id, "intervention": run.links.get("intervention")} | out

    def tokenize(self, text: str, use_chat_template: bool = False, system: str | None = None) -> Prompt:
        """A text as POST /api/tokenize and the patching texts tokenize it."""
        prompt = intervene.plain_prompt_ids(self.lm.tokenizer, text, use_chat_template, system)
        if len(prompt.ids) > self.max_context:
            raise BadRequest("text", f"is {len(prompt.ids)} tokens, longer than the model's context of {self.max_context}")
        return prompt

    def single_token(self, value, field_name: str) -> int:
        """A token id, or a string that encodes to exactly one token."""
        return intervene.single_token(self.lm.tokenizer, value, int(self.lm.config.vocab_size), field_name)

    def patch(self, clean_ids: list[int], corrupted_ids: list[int], metric: dict, sweep: str,
              head_position="all", job_id: str | None = None, owner: str = "") -> dict:
        """An activation patching sweep (llmvis.engine.intervene.patch_sweep), as a job with
        progress (`read_job`) and cancel (`cancel`) when job_id is given."""
        metric, head_position = intervene.check_patch(clean_ids, corrupted_ids, metric, sweep, head_position,
                                                      self.intervention_dims(), self.lm.tokenizer)
        if metric["type"] == "logprob" and metric.get("token") is None:
            with self.reads.slot(), self.lm.lock:
                metric["token"] = intervene.top_token(self.lm.model, clean_ids[: metric["position"] + 1])
        n_layers = self.lm.num_layers
        total = n_layers * (len(clean_ids) if sweep == "residual" else self.lm.num_heads)
        job = None
        if job_id is not None:  # a named job: progress in read_job, stop with cancel
            job = ReadJob(job_id, "patch", owner, total)
            with self._read_jobs_lock:
                old = self.read_jobs.get(job_id)
                if old is not None and old.status == "running":
                    raise BadRequest("job_id", f"job {job_id} is already running")
                self.read_jobs[job_id] = job
                while len(self.read_jobs) > MAX_READ_JOBS:
                    self.read_jobs.pop(next(iter(self.read_jobs)))
        try:
            with self.reads.slot():
                out = intervene.patch_sweep(self, clean_ids, corrupted_ids, metric, sweep, head_position, job)
        except Exception:
            if job is not None and job.status == "running":
                job.status = "failed"
            raise
        if job is not None:
            job.status = "done"
        return out | {"metric": metric, "head_position": head_position if sweep == "heads" else None}
