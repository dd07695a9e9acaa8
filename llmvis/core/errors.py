"""Small domain exceptions. Each maps to one HTTP status in app.py."""


class LlmvisError(Exception):
    """Base class of every error llmvis raises on purpose."""

    status = 500


class BadRequest(LlmvisError):
    """A request parameter is missing, of the wrong type or out of range."""

    status = 400

    def __init__(self, field: str, problem: str):
        self.field = field
        super().__init__(f"{field}: {problem}")


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


class Busy(LlmvisError):
    """The generation queue is full; the client should retry later."""

    status = 503
    retry_after = 5


class GenerationFailed(LlmvisError):
    """The model raised in the middle of a run; the run is marked failed."""

    status = 500

    def __init__(self, message: str, run_id: str):
        self.run_id = run_id
        super().__init__(message)
