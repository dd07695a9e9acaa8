"""The Python API: `llmvis.trace(...)`, `llmvis.load(path)` and the Trace object they return.

It runs on the same Engine as the server (same validation, decode loop, views and bundle
format); a model is loaded once per (model, device, dtype) and kept for the process, so
repeated calls in a notebook are fast.

    import llmvis
    run = llmvis.trace("Why is the sky blue?", temperature=0, max_new_tokens=32)
    run.tokens[5]["prob"], run.attention(layer=3, head="mean"), run.token_probs(10)
    run.save("sky.llmvis"); again = llmvis.load("sky.llmvis")
"""
from __future__ import annotations

import atexit
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from llmvis.core.config import ModelConfig, ServerConfig
from llmvis.core.errors import BadRequest, LlmvisError
from llmvis.core.lens import LENS_TOP_K
from llmvis.core.metrics import score_summary
from llmvis.engine.engine import Engine
from llmvis.keep.bundle import bundle_header, read_bundle
from llmvis.keep.history import atomic_write
from llmvis.keep.library import export_bundle, model_spec
from llmvis.model.loading import load_model
from llmvis.web import serialize
from llmvis.web.notebook import InlineHTML, inline_view_html, trace_html
from llmvis.web.share import share_html
from llmvis.web.validate import parse_bool, parse_head, parse_messages, parse_sampling

_ENGINES: dict[tuple, object] = {}
_LOCK = threading.Lock()
MAX_NEW_TOKENS = 8192  # the API's own cap; the model's context bounds it further


def engine_for(model: str = "default", device: str = "auto", dtype: str = "auto"):
    """The Engine for a model spec, loaded on first use and cached for the process."""
    key = (str(model), device, dtype)
    with _LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            lm = load_model(ModelConfig(model=str(model), device=device, dtype=dtype))
            eng = Engine(lm, ServerConfig(max_new_tokens=MAX_NEW_TOKENS))  # the model's context still bounds it
            _ENGINES[key] = eng
    return eng


class Trace:
    """One traced run: tokens with their statistics, and views computed on demand."""

    def __init__(self, engine, run):
        self.engine = engine
        self.run = run
        self._dict = None

    # ---- data --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The run exactly as GET /api/run returns it."""
        if self._dict is None:
            self._dict = serialize.run_dict(self.engine, self.run)
        return self._dict

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def tokens(self) -> list[dict]:
        """One dict per position: position, id, text, source, prob, rank, entropy, sample_prob, ..."""
        return self.to_dict()["tokens"]

    @property
    def text(self) -> str:
        """The generated text."""
        return self.to_dict()["generated_text"]

    @property
    def params(self) -> dict:
        return dict(self.run.params)

    @property
    def finish_reason(self) -> str:
        return self.run.finish_reason

    @property
    def num_prompt_tokens(self) -> int:
        return self.run.num_prompt

    @property
    def hidden_states(self):
        """(num_layers + 1, num_tokens, hidden_size) read-only numpy array; index 0 is the embedding
        output, the last is after the final norm (as transformers gives them). A view of the run's
        own states (float32/float16 models; bfloat16 is converted to float32, a copy)."""
        hidden = self.run.hidden.detach().cpu()
        if hidden.dtype == torch.bfloat16:
            hidden = hidden.float()
        view = hidden.numpy()
        view.flags.writeable = False  # the views are computed from these: they must not change
        return view

    # ---- views -------------------------------------------------------------------
    def attention(self, layer: int, head: int | str = "mean"):
        """Attention of `layer` as a numpy array: (T, T) for one query head or the `mean` / `max`
        over heads; (H, T, T) float32 for head="all", every query head computed in one pass."""
        if head == "all":
            return self.engine.attention_heads(self.run, int(layer), out_dtype=torch.float32).numpy()
        return self.engine.attention(self.run, int(layer), head).float().numpy()

    def attention_all(self):
        """Yield (layer, (H, T, T) array) for every layer, one layer at a time (nothing is cached,
        so a loop over a long run holds one layer's attention, not all of them)."""
        for layer in range(self.engine.lm.num_layers):
            yield layer, self.attention(layer, "all")

    def logit_lens(self, start: int = 0, end: int | None = None, top_k: int = 5) -> dict:
        """The logit lens of positions [start, end), as GET /api/logit_lens returns it."""
        end = self.run.num_tokens if end is None else int(end)
        if not 1 <= int(top_k) <= LENS_TOP_K:
            raise BadRequest("top_k", f"must be in [1, {LENS_TOP_K}], got {top_k}")
        lens, took = self.engine.logit_lens(self.run, int(start), end)
        return serialize.logit_lens(self.engine, self.run, lens, int(start), end, int(top_k), took)

    def head_stats(self) -> dict:
        """Per layer and query head attention statistics, as GET /api/attention_insights returns them."""
        stats, took = self.engine.head_stats(self.run)
        return serialize.head_insights(self.engine, self.run, stats, took)

    def token_probs(self, position: int, top_n: int = 10) -> dict:
        """What the model considered at `position`: entropy, cut_mass and the top_n candidates."""
        if not 1 <= int(top_n) <= self.engine.config.max_top_n:
            raise BadRequest("top_n", f"must be in [1, {self.engine.config.max_top_n}], got {top_n}")
        return serialize.token_probs(self.engine, self.run, int(position), int(top_n))

    def hidden_similarity(self) -> dict:
        """Cosine similarity of consecutive layers, as GET /api/hidden_similarity returns it."""
        return serialize.similarity(self.engine, self.run, self.engine.similarity(self.run))

    similarity = hidden_similarity

    def attention_row(self, position: int, head: int | str = "mean") -> dict:
        """Which earlier tokens `position` attends to in every layer, as GET /api/attention_row."""
        head = parse_head(head if isinstance(head, str) else str(int(head)), self.engine.lm.num_heads)
        row, took = self.engine.attention_row(self.run, int(position))
        return serialize.attention_row(self.engine, self.run, row, head, took)

    def projection(self, layer: int | None = None) -> dict:
        """2D PCA of one layer's states (default: the last), as GET /api/embedding_projection."""
        layer = self.engine.lm.num_layers if layer is None else int(layer)
        coords, variance, fit_start = self.engine.projection(self.run, layer)
        return serialize.projection(self.engine, self.run, layer, "pca", coords, variance, fit_start)

    def explain(self, position: int, target: int | None = None, contrast: int | None = None,
                method: str = "logit", steps: int = 16, threshold: float = 0.05) -> dict:
        """Why the token at `position` (or `target`, rather than `contrast`) was predicted, as the
        GET /api/explain/* answers (docs/EXPLAIN.md). method: "logit" (direct logit attribution
        to the embedding, every head and MLP), "grad_x_input", "integrated_gradients" (`steps`),
        "value_norm", "direct" (input attribution over the earlier tokens) or "flow" (the
        information-flow graph pruned at `threshold`).

            run.explain(5, contrast=run.token_probs(5)["candidates"][1]["id"])["heads"]
        """
        eng, run, position = self.engine, self.run, int(position)
        target = None if target is None else int(target)
        contrast = None if contrast is None else int(contrast)
        if method == "logit":
            attr, took = eng.explain_logit(run, position, target, contrast)
            return serialize.explain_logit(eng, run, position, attr, took)
        if method in ("value_norm", "direct"):
            attr, took = eng.explain_logit(run, position, target, contrast)
            return serialize.explain_inputs(eng, run, position, method, attr, took)
        if method in ("grad_x_input", "integrated_gradients"):
            attr, took = eng.explain_gradients(run, position, target, contrast, method, int(steps))
            return serialize.explain_inputs(eng, run, position, method, attr, took)
        if method == "flow":
            graph, took = eng.explain_flow(run, position, float(threshold))
            return serialize.explain_flow(eng, run, position, graph, took)
        raise BadRequest("method", "must be logit, grad_x_input, integrated_gradients, value_norm, direct or flow, "
                                   f"got {method!r}")

    # ---- interventions (issue 15; docs/INTERVENE.md) ------------------------------
    def ablate(self, heads=(), kv_groups=(), mlp=(), attention=(), mode: str = "zero", free: bool = False) -> "Trace":
        """Re-run this run with query heads [(layer, head)], KV groups [(layer, group)], MLPs
        [layer] or attention layers [layer] set to zero or to their mean over this run's
        positions; teacher-forced (free=False) or free. A linked Trace of kind "intervention",
        as POST /api/intervene/ablate makes it."""
        targets = ([{"kind": "head", "layer": int(l), "head": int(h)} for l, h in heads]
                   + [{"kind": "kv_group", "layer": int(l), "group": int(g)} for l, g in kv_groups]
                   + [{"kind": "mlp", "layer": int(l)} for l in mlp]
                   + [{"kind": "attention", "layer": int(l)} for l in attention])
        return Trace(self.engine, self.engine.ablate(self.run, targets, mode, bool(free)))

    def effects(self, align: str = "auto", top: int = 10) -> dict:
        """For an intervention Trace: per position, the parent token's log-prob change and
        KL(parent || intervened), and the most affected positions (GET /api/intervene/effects)."""
        return serialize.effects(self.engine, self.engine.intervention_effects(self.run, align, int(top)))

    def steer(self, layer: int, vector, alpha, from_position: int | None = None, free: bool = True,
              normalize: bool = False):
        """Generate with alpha * vector added to the residual stream at `layer` from `from_position`
        on (default: the last prompt token). vector: hidden_size numbers, a token id, a one-token
        string, or a dict as the API's `vector`. A linked Trace, or a list of them when alpha is a list."""
        if isinstance(vector, dict):
            spec = dict(vector)
        elif isinstance(vector, (int, np.integer)) and not isinstance(vector, bool):
            spec = {"source": "token", "token_id": int(vector)}
        elif isinstance(vector, str):
            spec = {"source": "token", "token": vector}
        else:
            spec = {"source": "raw", "values": [float(x) for x in np.asarray(vector, dtype=np.float64).ravel()]}
        many = isinstance(alpha, (list, tuple, np.ndarray))
        alphas = [float(a) for a in (alpha if many else [alpha])]
        _, runs = self.engine.steer(self.run, int(layer), spec, alphas, from_position, bool(free), bool(normalize))
        traces = [Trace(self.engine, r) for r in runs]
        return traces if many else traces[0]

    # ---- files -------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the run as a `.llmvis` bundle (what `llmvis show` and the page's import read)."""
        path = Path(path).expanduser()
        if not path.parent.is_dir():
            raise LlmvisError(f"cannot write {path}: folder {path.parent} does not exist")
        atomic_write(path, export_bundle(self.engine, self.run))
        return path

    def share_html(self, path, layers: list[int] | None = None) -> Path:
        """Write the self-contained HTML view of the run."""
        path = Path(path).expanduser()
        atomic_write(path, share_html(self.engine, self.run, layers).encode("utf-8"))
        return path

    def open(self, url: str | None = None, token: str | None = None, browser: bool = True) -> str:
        """Open this run in the web app: import it into the llmvis server at `url` (default
        http://127.0.0.1:5000), or, when none answers there and no url was given, start one on a
        free port with this run's model. Returns the page URL (`/?run=<new id>`) and opens it in the
        default browser unless browser=False. `token`: the server's token, if it has one."""
        base = (url or DEFAULT_SERVER).rstrip("/")
        if url is None and not _server_answers(base, token):
            base = _start_server(model_spec(self.engine))
        bundle = export_bundle(self.engine, self.run)
        headers = {"Content-Type": "application/octet-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(base + "/api/import", data=bundle, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                run_id = json.loads(resp.read())["run_id"]
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read()).get("error", err.reason)
            except ValueError:
                message = err.reason
            raise LlmvisError(f"the server at {base} refused the run: {message}") from None
        except OSError as exc:
            raise LlmvisError(f"no llmvis server answers at {base}: {exc}") from None
        page = f"{base}/?run={run_id}"
        if browser:
            webbrowser.open(page)
        return page

    # ---- notebooks ---------------------------------------------------------------
    def _repr_html_(self) -> str:
        """Jupyter shows a Trace as a summary line and its tokens coloured by probability."""
        return trace_html(self.engine, self.run)

    def show(self, view: str = "attention", layers: list[int] | None = None, height: int = 720,
             position: int | None = None) -> InlineHTML:
        """The offline viewer (the Share HTML) inline in a notebook, opened at `view`: tokens,
        probs, entropy, attention (`layers`: up to 8, default first, middle, last), lens (the
        logit lens of the last 128 positions), heads (entropy, sink and previous-token share of
        every head) or explain (the direct logit attribution of the token at `position`, default
        the first generated one). No server, no network: a sandboxed iframe. Display it by making
        it a cell's last expression."""
        return InlineHTML(inline_view_html(self.engine, self.run, view, layers, height, position))

    def __repr__(self) -> str:
        gen = self.run.num_tokens - self.run.num_prompt
        return f"<llmvis.Trace {self.run.id}: {self.run.num_prompt} prompt + {gen} generated tokens, {self.run.model_name}>"


DEFAULT_SERVER = "http://127.0.0.1:5000"
_STARTED: dict[str, str] = {}  # model spec -> base URL of a server this process started


def _server_answers(base: str, token: str | None) -> bool:
    req = urllib.request.Request(base + "/api/model", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def _start_server(spec: str, timeout_s: float = 180.0) -> str:
    """Start `llmvis serve --model spec` on a free loopback port (once per spec per process) and
    wait until it answers; it stops when this process exits."""
    base = _STARTED.get(spec)
    if base is not None and _server_answers(base, None):
        return base
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--model", spec, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(proc.terminate)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while not _server_answers(base, None):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise LlmvisError(f"could not start an llmvis server for model {spec!r}")
        time.sleep(0.3)
    _STARTED[spec] = base
    return base


def parse_request(prompt=None, **fields):
    """(messages, GenerationParams, use_chat_template) validated exactly as POST /api/generate's body."""
    body = {"prompt": prompt, **fields}
    return parse_messages(body), parse_sampling(body, MAX_NEW_TOKENS), parse_bool(body, "use_chat_template", None)


def trace(prompt: str | None = None, model: str = "default", *, messages: list[dict] | None = None,
          system: str | None = None, temperature: float = 0.7, top_k: int = 50, top_p: float = 0.95,
          max_new_tokens: int = 128, seed: int | None = None, use_chat_template: bool | None = None,
          device: str = "auto", dtype: str = "auto",
          on_token: Callable[[dict], None] | None = None) -> Trace:
    """Generate from `prompt` (or `messages`) and trace everything, as POST /api/generate does.

    Arguments are validated exactly like the API's fields (bad values raise llmvis.errors.BadRequest
    naming the field). `on_token(token_dict)` is called for each generated token.
    """
    msgs, params, template = parse_request(prompt, messages=messages, system=system, temperature=temperature,
                                           top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                                           use_chat_template=use_chat_template)  # before the (slow) model load
    eng = engine_for(model, device, dtype)
    step = None if on_token is None else lambda pos, tid, stats: on_token(serialize.step_token(eng, pos, tid, stats))
    run = eng.execute(eng.prepare(msgs, params, template), on_token=step)
    return Trace(eng, run)


def score(text: str, model: str = "default", *, system: str | None = None, use_chat_template: bool = False,
          device: str = "auto", dtype: str = "auto") -> Trace:
    """Score existing text, as POST /api/score does: teacher-forced statistics of every token, no
    generation. `run.to_dict()["score"]` holds perplexity and GLTR buckets."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("text", "is required and must be a non-empty string")
    eng = engine_for(model, device, dtype)
    return Trace(eng, eng.execute(eng.prepare_score(text, bool(use_chat_template), system)))


def text_summary(trace: Trace, surprising: int = 5) -> dict:
    """One scored text in numbers: perplexity, mean NLL, mean prediction entropy, GLTR buckets and
    its `surprising` least likely tokens (position, text, prob, rank)."""
    stats = trace.run.result.stats
    out = score_summary(stats)
    ent = stats.entropy[1:]
    ent = ent[~np.isnan(ent)]
    out["mean_entropy"] = float(ent.mean()) if ent.size else None
    out["num_tokens"] = trace.run.num_tokens
    order = np.argsort(stats.prob[1:], kind="stable")[:surprising] + 1  # lowest probability first
    picked = [serialize.token_dict(trace.engine, trace.run, int(i)) for i in order]
    out["surprising"] = [{k: tok[k] for k in ("position", "text", "prob", "rank")} for tok in picked]
    return out


def score_many(texts, model: str = "default", *, use_chat_template: bool = False, surprising: int = 5,
               device: str = "auto", dtype: str = "auto", on_result: Callable[[int, dict], None] | None = None,
               keep: bool = False, as_dataframe: bool | None = None):
    """Score many texts with one model load. Returns one dict per text (see text_summary, plus
    `index`), or a pandas DataFrame when pandas is installed (as_dataframe=None) or asked for.

    Runs are dropped from memory after their numbers are taken, unless keep=True (then
    `result["run_id"]` names each run in the engine's store).
    """
    eng = engine_for(model, device, dtype)
    results = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise BadRequest(f"texts[{i}]", "must be a non-empty string")
        trace = Trace(eng, eng.execute(eng.prepare_score(text, bool(use_chat_template))))
        row = {"index": i} | text_summary(trace, surprising)
        if keep:
            row["run_id"] = trace.id
        else:
            eng.store.remove(trace.id)
        results.append(row)
        if on_result is not None:
            on_result(i, row)
    if as_dataframe is False:
        return results
    try:
        import pandas  # optional: only for the DataFrame form
    except ImportError:
        if as_dataframe:
            raise LlmvisError("as_dataframe=True needs pandas (pip install pandas)") from None
        return results
    return pandas.DataFrame(results)


def patch(clean, corrupted, metric: dict, sweep: str = "residual", head_position="all", model: str = "default",
          use_chat_template: bool = False, device: str = "auto", dtype: str = "auto") -> dict:
    """An activation patching sweep, as POST /api/intervene/patch answers it. clean, corrupted: a
    Trace (all its tokens) or a text (tokenized as POST /api/tokenize); the same number of tokens.
    numpy.array(result["normalized"], dtype=float) is the heatmap (1 = clean, 0 = corrupted)."""
    traces = [s for s in (clean, corrupted) if isinstance(s, Trace)]
    eng = traces[0].engine if traces else engine_for(model, device, dtype)

    def ids_of(side, name: str) -> tuple[list[int], str]:
        if isinstance(side, Trace):
            return list(side.run.ids), side.id
        if isinstance(side, str) and side.strip():
            return list(eng.tokenize(side, bool(use_chat_template)).ids), ""
        raise BadRequest(name, "must be a Trace or a non-empty text")

    clean_ids, owner = ids_of(clean, "clean")
    corrupted_ids, _ = ids_of(corrupted, "corrupted")
    out = eng.patch(clean_ids, corrupted_ids, dict(metric) if isinstance(metric, dict) else metric, sweep,
                    head_position, None, owner)
    return serialize.patching(eng, out, sweep, clean_ids, corrupted_ids, None)


def read_bundle_file(path) -> bytes:
    """The bytes of a bundle file, or LlmvisError with one line (missing, a folder, unreadable)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LlmvisError(f"no such file: {path}")
    if not path.is_file():
        raise LlmvisError(f"not a file: {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LlmvisError(f"cannot read {path}: {exc.strerror or exc}") from None


def bundle_model(meta: dict, model: str | None) -> str:
    """The --model spec to open a bundle with: the given one, else the one it was made with."""
    if model:
        return model
    spec = meta.get("model_spec")
    if spec == "default":
        return spec
    if isinstance(spec, str) and spec and Path(spec).exists():
        return spec
    name = (meta.get("model") or {}).get("name") if isinstance(meta.get("model"), dict) else None
    raise LlmvisError(f"the bundle was made with model {name or spec!r}, which is not available here; "
                      "pass model=/path/to/it (CLI: --model)")


def load(path, model: str | None = None, device: str = "auto", dtype: str = "auto") -> Trace:
    """Open a `.llmvis` bundle. The model it was made with is loaded (or `model`, if given)."""
    data = read_bundle_file(path)
    meta = bundle_header(data)
    eng = engine_for(bundle_model(meta, model), device, dtype)
    run, _ = read_bundle(data, eng.model_info(), attention_budget=eng.config.attention_cache_bytes, dtype=eng.lm.dtype)
    eng.store.put(run)
    return Trace(eng, run)
