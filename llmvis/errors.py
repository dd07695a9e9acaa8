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
