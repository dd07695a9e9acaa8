"""What every route needs from the request: the app's Engine, the JSON body, the run named by
`run_id`. One copy of each, used by all blueprints."""
from __future__ import annotations

from flask import current_app, request

from llmvis.core import jsondoc
from llmvis.core.errors import BadRequest, UnsupportedMediaType
from llmvis.web.validate import query_str

ENGINE_KEY = "llmvis.engine"


def engine():
    """The Engine this app was created around."""
    return current_app.extensions[ENGINE_KEY]


def json_body() -> dict:
    """The request's JSON object; 415 unless it says Content-Type: application/json (a cross-site
    form or no-cors fetch cannot), 400 unless it parses to an object."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(f"body: Content-Type must be application/json, got {request.mimetype[:60]!r}")
    try:  # NaN and Infinity parse; each numeric field refuses them by name (validate.py)
        body = jsondoc.loads(request.get_data(cache=True), allow_constants=True)
    except jsondoc.JsonError as exc:
        raise BadRequest("body", f"must be a JSON object; it {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    return body


def query_run():
    """The run named by the `run_id` query parameter (404 unknown or expired, 409 failed)."""
    return engine().get_run(query_str(request.args, "run_id"))


def attachment(data, mimetype: str, filename: str):
    resp = current_app.response_class(data, mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp
