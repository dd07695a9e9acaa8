"""The one error shape, `{"error": ..., "status": ...}`, and the handlers that produce it for
llmvis errors, HTTP errors (404, 405, 413) and anything unexpected (500, never a traceback)."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from llmvis.core.errors import Busy, LlmvisError

log = logging.getLogger("llmvis.web")


def error_response(message: str, status: int):
    resp = jsonify({"error": message, "status": status})
    resp.status_code = status
    return resp


def error_body(exc: LlmvisError) -> dict:
    body = {"error": str(exc), "status": exc.status}
    if getattr(exc, "run_id", None):
        body["run_id"] = exc.run_id
    return body


def register_errors(app: Flask) -> None:
    @app.errorhandler(LlmvisError)
    def on_llmvis_error(exc: LlmvisError):
        resp = jsonify(error_body(exc))
        resp.status_code = exc.status
        if isinstance(exc, Busy):
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException):
        messages = {
            404: f"no such endpoint: {request.path[:200]}",
            405: f"method {request.method} is not allowed on {request.path[:200]}",
            413: f"body: request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes",
        }
        resp = error_response(messages.get(exc.code, exc.description or exc.name), exc.code or 500)
        for name, value in exc.get_headers():  # e.g. Allow on a 405 (RFC 9110), keeping our JSON body
            if name.lower() not in ("content-type", "content-length"):
                resp.headers[name] = value
        return resp

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(f"internal error: {type(exc).__name__}", 500)
