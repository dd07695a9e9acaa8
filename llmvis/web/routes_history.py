"""Routes for keeping runs: the history list, rename, delete, export, share and import."""
from __future__ import annotations

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from llmvis.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from llmvis.keep.bundle import SUFFIX, check_run_id
from llmvis.keep.library import delete_run, export_bundle, import_bundle, rename_run, saved_title
from llmvis.web import serialize
from llmvis.web.context import attachment, engine, json_body
from llmvis.web.share import parse_layers, share_html
from llmvis.web.validate import query_int

history_api = Blueprint("history_api", __name__, url_prefix="/api")
IMPORT_TYPES = ("multipart/form-data", "application/octet-stream")


@history_api.get("/history")
def history_list():
    """Saved runs, newest first."""
    eng = engine()
    limit = query_int(request.args, "limit", default=100, lo=1, hi=1000)
    offset = query_int(request.args, "offset", default=0, lo=0, hi=10**9)
    hist = eng.history
    if hist is None:
        return jsonify({"enabled": False, "runs": [], "total": 0, "total_bytes": 0, "budget_bytes": 0})
    rows, total, nbytes = hist.list(limit, offset)
    return jsonify({"enabled": True, "runs": [serialize.history_row(eng, r) for r in rows], "total": total,
                    "total_bytes": nbytes, "budget_bytes": hist.budget})


@history_api.patch("/history/<run_id>")
def history_rename(run_id: str):
    body = json_body()
    eng = engine()
    return jsonify(serialize.history_row(eng, rename_run(eng, run_id, body.get("title"))))


@history_api.delete("/history/<run_id>")
def history_delete(run_id: str):
    delete_run(engine(), run_id)
    return jsonify({"run_id": run_id, "deleted": True})


@history_api.get("/runs/<run_id>/export")
def export_run(run_id: str):
    """The run as one `.llmvis` bundle (safetensors + JSON metadata)."""
    eng = engine()
    run = eng.get_run(check_run_id(run_id))
    return attachment(export_bundle(eng, run), "application/octet-stream", f"llmvis-{run.id}{SUFFIX}")


@history_api.get("/runs/<run_id>/share")
def share_run(run_id: str):
    """One self-contained HTML file showing the run with no server."""
    eng = engine()
    run = eng.get_run(check_run_id(run_id))
    layers = parse_layers(request.args.get("layers"), eng.lm.num_layers)
    page = share_html(eng, run, layers, title=saved_title(eng, run))
    return attachment(page.encode("utf-8"), "text/html", f"llmvis-{run.id}.html")


def _import_cap() -> int:
    return int(engine().config.max_import_bytes)


@history_api.post("/import")
def import_run():
    """A bundle as multipart/form-data (field `file`) or as an application/octet-stream body.

    Other content types answer 415 (a cross-site form or no-cors fetch cannot send these two
    without the Origin the guard checks). The run always gets a fresh id.
    """
    if request.mimetype not in IMPORT_TYPES:
        raise UnsupportedMediaType(f"body: Content-Type must be {' or '.join(IMPORT_TYPES)}, got {request.mimetype[:60]!r}")
    cap = _import_cap()
    too_big = PayloadTooLarge(f"bundle: larger than the import limit of {cap} bytes (--max-import-mb)")
    if request.content_length is not None and request.content_length > cap + 64 * 1024:
        raise too_big
    request.max_content_length = cap + 64 * 1024  # this route's own cap, above the app-wide JSON one
    try:
        if request.mimetype == "multipart/form-data":
            upload = request.files.get("file")
            if upload is None:
                raise BadRequest("file", "multipart upload needs a field named file")
            data = upload.read(cap + 1)
        else:
            data = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise too_big from None
    if len(data) > cap:
        raise too_big
    if not data:
        raise BadRequest("bundle", "is empty: send a .llmvis file")
    eng = engine()
    run = import_bundle(eng, data)
    return jsonify(serialize.run_dict(eng, run) | {"imported": True})
