"""Keeping runs: history persistence, export and import, shared by the server, the CLI and the
Python API. The Engine never imports this module: `attach_history` (called by the web app
factory when a data folder is configured) opens the History and registers two callbacks in the
Engine's hook lists, `on_run_stored` (after a finished run enters the run store) and
`run_loaders` (asked for a run id the store lacks).
"""
from __future__ import annotations

import logging
import threading

from llmvis.core.errors import BadRequest, Busy, HistoryUnavailable, LlmvisError, PayloadTooLarge
from llmvis.engine.run import new_run_id
from llmvis.keep.bundle import bundle_header, check_model, check_run_id, dump_bundle, read_bundle, valid_run_id
from llmvis.keep.history import History
from llmvis.model.loading import DEFAULT_NAME

log = logging.getLogger("llmvis.library")
TITLE_CHARS = 80   # a default title: the start of the user's text
TITLE_MAX = 200    # what the history keeps of any title
_IMPORT_SLOT = threading.Lock()  # one bundle parsed at a time


def attach_history(engine) -> History:
    """Open the history in engine.config.data_dir and hook it into the engine."""
    hist = History(engine.config.data_dir, engine.config.history_budget_bytes)
    engine.history = hist
    engine.on_run_stored.append(lambda run: persist_run(engine, run))
    engine.run_loaders.append(lambda run_id: restore_run(engine, run_id))
    return hist


def model_spec(engine) -> str:
    """The --model value that loads this engine's model again."""
    src = engine.lm.source
    return "default" if src.name == DEFAULT_NAME else str(src.path)


def run_title(engine, run) -> str:
    """A default title: the start of the user's text (or of the whole prompt)."""
    for wanted in ("user", None):
        ids = [i for i, s in zip(run.ids[: run.num_prompt], run.segments) if wanted is None or s == wanted]
        text = " ".join(engine.lm.tokenizer.decode(ids, skip_special_tokens=True).split())
        if text:
            return text[:TITLE_CHARS] + ("…" if len(text) > TITLE_CHARS else "")
    return f"run {run.id}"


def history_row(run, title: str) -> dict:
    return {
        "id": run.id, "title": title, "created": float(run.created), "model": run.model_name,
        "kind": getattr(run, "kind", "generate"), "num_tokens": run.num_tokens, "num_prompt": run.num_prompt,
        "finish_reason": run.finish_reason,
        "parent_id": run.links.get("parent_id"), "fork_position": run.links.get("fork_position"),
    }


def saved_title(engine, run) -> str:
    """The run's title in the history, else its default title (also when the history fails)."""
    hist = getattr(engine, "history", None)
    try:
        row = hist.get(run.id) if hist is not None else None
    except HistoryUnavailable:
        row = None
    return row["title"] if row else run_title(engine, run)


def export_bundle(engine, run, title: str | None = None) -> bytes:
    """The run as `.llmvis` bundle bytes (its history title when it has one)."""
    if title is None:
        title = saved_title(engine, run)
    return dump_bundle(run, engine.model_info(), title=title, model_spec=model_spec(engine))


def persist_run(engine, run, title: str | None = None) -> None:
    """Write a finished run into the history. A failure is logged and the run stays in memory."""
    hist = getattr(engine, "history", None)
    if hist is None:
        return
    try:
        title = title or run_title(engine, run)
        hist.save(history_row(run, title), export_bundle(engine, run, title))
        run.saved, run.save_error = True, None
    except (OSError, LlmvisError, ValueError) as exc:
        log.error("could not save run %s to the history in %s: %s", run.id, hist.folder, exc)
        run.saved, run.save_error = False, str(exc)[:300]


def restore_run(engine, run_id: str):
    """The run from the history as a Run, or None when the history does not hold it."""
    hist = getattr(engine, "history", None)
    if hist is None or not valid_run_id(run_id):
        return None
    data = hist.read(run_id)
    if data is None:
        return None
    try:
        run, _ = read_bundle(data, engine.model_info(), attention_budget=engine.config.attention_cache_bytes,
                             dtype=engine.lm.dtype)
    except BadRequest as exc:
        raise BadRequest("run_id", f"run {run_id} is in the history but cannot be opened here: {exc}") from None
    run.id = run_id
    run.saved = True  # it came from the history
    return run


def import_bundle(engine, data: bytes):
    """Add a bundle's run to the store (and the history) under a fresh id; returns the Run.

    The id inside a bundle is never trusted (it would let the bundle's author know, or collide
    with, a run id here). Everything the run holds is counted against the store budget before it
    is accepted. One import is parsed at a time (each briefly holds a second copy of the bundle);
    another one meanwhile answers 503.
    """
    if not _IMPORT_SLOT.acquire(blocking=False):
        raise Busy("bundle: another import is being read; retry shortly")
    try:
        meta = bundle_header(data)
        check_model(meta, engine.model_info())
        run, meta = read_bundle(data, engine.model_info(), run_id=new_run_id(),
                                attention_budget=engine.config.attention_cache_bytes, dtype=engine.lm.dtype)
    finally:
        _IMPORT_SLOT.release()
    if run.nbytes > engine.config.store_budget_bytes:
        raise PayloadTooLarge(
            f"bundle: this run needs {run.nbytes >> 20} MiB, over the run store budget of "
            f"{engine.config.store_budget_bytes >> 20} MiB"
        )
    engine.store.put(run)
    title = meta.get("title")
    title = " ".join(title.split())[:TITLE_MAX] if isinstance(title, str) and title.strip() else None
    persist_run(engine, run, title)
    return run


def rename_run(engine, run_id: str, title) -> dict:
    check_run_id(run_id)
    if not isinstance(title, str) or not title.strip():
        raise BadRequest("title", "is required and must be a non-empty string")
    if len(title) > TITLE_MAX:
        raise BadRequest("title", f"must be at most {TITLE_MAX} characters, got {len(title)}")
    hist = _require_history(engine)
    return hist.rename(run_id, " ".join(title.split()))


def delete_run(engine, run_id: str) -> None:
    check_run_id(run_id)
    _require_history(engine).delete(run_id)
    engine.store.remove(run_id)


def _require_history(engine) -> History:
    hist = getattr(engine, "history", None)
    if hist is None:
        raise BadRequest("history", "is disabled on this server (started with --no-history)")
    return hist
