"""Keeping runs: history persistence, export and import, shared by the server, the CLI and the
Python API. The Engine never imports this module: `attach_history` (called by the web app
factory when a data folder is configured) opens the History and registers two callbacks in the
Engine's hook lists, `on_run_stored` (after a finished run enters the run store) and
`run_loaders` (asked for a run id the store lacks).
"""
from __future__ import annotations

import logging

from safetensors.torch import load

from llmvis.core.errors import BadRequest, LlmvisError, PayloadTooLarge, RunExpired, RunNotFound
from llmvis.engine.run import new_run_id
from llmvis.keep.bundle import bundle_header, check_model, check_run_id, dump_bundle, read_bundle, valid_run_id
from llmvis.keep.history import History
from llmvis.model.loading import DEFAULT_NAME

log = logging.getLogger("llmvis.library")
TITLE_CHARS = 80


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
    }


def export_bundle(engine, run, title: str | None = None) -> bytes:
    """The run as `.llmvis` bundle bytes (its history title when it has one)."""
    if title is None:
        row = engine.history.get(run.id) if getattr(engine, "history", None) else None
        title = row["title"] if row else run_title(engine, run)
    return dump_bundle(run, engine.model_info(), title=title, model_spec=model_spec(engine))


def persist_run(engine, run, title: str | None = None) -> None:
    """Write a finished run into the history. A failure is logged and the run stays in memory."""
    hist = getattr(engine, "history", None)
    if hist is None:
        return
    try:
        title = title or run_title(engine, run)
        hist.save(history_row(run, title), export_bundle(engine, run, title))
    except (OSError, LlmvisError, ValueError) as exc:
        log.error("could not save run %s to the history in %s: %s", run.id, hist.folder, exc)


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
    return run


def _taken(engine, run_id: str):
    """The run already known under run_id (memory or history), or None."""
    try:
        return engine.get_run(run_id)
    except (RunNotFound, RunExpired, BadRequest):
        return None


def import_bundle(engine, data: bytes):
    """Add a bundle's run to the store (and the history); returns the Run.

    The bundle's run id is kept when it is free here. When it is taken by the same run (same id and
    creation time: the bundle was exported from here or imported before), that run is returned;
    otherwise the import gets a fresh id.
    """
    meta = bundle_header(data)
    check_model(meta, engine.model_info())
    bid = meta["run"].get("id")
    run_id = None
    if valid_run_id(bid):
        existing = _taken(engine, bid)
        if existing is None:
            run_id = bid
        elif abs(float(existing.created) - float(meta["run"].get("created") or -1)) < 1e-6 \
                and list(existing.ids) == _ids_of(data):
            return existing
    run, meta = read_bundle(data, engine.model_info(), run_id=run_id or new_run_id(),
                            attention_budget=engine.config.attention_cache_bytes, dtype=engine.lm.dtype)
    if run.nbytes > engine.config.store_budget_bytes:
        raise PayloadTooLarge(
            f"bundle: this run needs {run.nbytes >> 20} MiB, over the run store budget of "
            f"{engine.config.store_budget_bytes >> 20} MiB"
        )
    engine.store.put(run)
    title = meta.get("title") if isinstance(meta.get("title"), str) and meta["title"].strip() else None
    persist_run(engine, run, title)
    return run


def _ids_of(data: bytes) -> list[int]:
    return load(data)["ids"].tolist()


def rename_run(engine, run_id: str, title) -> dict:
    check_run_id(run_id)
    if not isinstance(title, str) or not title.strip():
        raise BadRequest("title", "is required and must be a non-empty string")
    if len(title) > 200:
        raise BadRequest("title", f"must be at most 200 characters, got {len(title)}")
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
