"""Small domain exceptions. Each carries its HTTP status, which llmvis.web.errors answers with."""


class LlmvisError(Exception):
    """Base class of every error llmvis raises on purpose."""

    status = 500


class BadRequest(LlmvisError):
    """A request parameter is missing, of the wrong type or out of range."""

    status = 400

    def __init__(self, field: str, problem: str):
        self.field = field
        super().__init__(f"{field}: {problem}")


class Unauthorized(LlmvisError):
    """The server needs its token and the request did not carry the right one."""

    status = 401


class Forbidden(LlmvisError):
    """The request came from another site or named a host this server does not serve."""

    status = 403


class UnsupportedMediaType(LlmvisError):
    """The request body has a Content-Type this endpoint does not take."""

    status = 415


class RunNotFound(LlmvisError):
    """No run with this id was ever stored on this server."""

    status = 404


class RunExpired(LlmvisError):
    """The run existed but was evicted from the bounded run store."""

    status = 404


class PayloadTooLarge(LlmvisError):
    """The request (or the run it would create) exceeds a configured budget."""

    status = 413


class ModelLoadError(LlmvisError):
    """A model path is missing or does not hold a loadable causal LM."""

    status = 500


class RunFailed(LlmvisError):
    """The run's generation raised; it has no data to show."""

    status = 409


class HistoryUnavailable(LlmvisError):
    """The history folder cannot be read or written (read-only, full, or gone)."""

    status = 503


class Busy(LlmvisError):
    """The generation queue is full; the client should retry later."""

    status = 503
    retry_after = 5


class Cancelled(LlmvisError):
    """A view's job was cancelled by its client before it finished (what it had done is kept)."""

    status = 409


class GenerationFailed(LlmvisError):
    """The model raised in the middle of a run; the run is marked failed."""

    status = 500

    def __init__(self, message: str, run_id: str):
        self.run_id = run_id
        super().__init__(message)
