"""Every error inferno raises on purpose.

The tree::

    InfernoError                 base; ``exit_code`` 2 in the CLI, ``http_status`` for the server
    ├── UserInputError           the user's input is wrong (400)
    │   ├── ModelLoadError       a model file/reference cannot be loaded
    │   │   ├── UnknownModelError    a bundled name that does not exist (404)
    │   │   └── UntrustedPickleError a pickle without ``--trust``
    │   ├── DataMismatchError    evaluation data does not fit the model's inputs
    │   └── ConfigError          a setting has a bad value
    │   ├── PayloadTooLargeError a request body over the server's limit (413)
    │   └── UnauthorizedError    a missing or wrong bearer token (401)
    ├── ServiceUnavailableError  the server cannot take the request now (503, with Retry-After)
    │   └── ModelUnavailableError    a model whose loading failed (503 with the reason)
    ├── DeadlineExceededError    a request's timeout ran out before it was served (504)
    ├── CloudError               the cloud server behind an edge cascade cannot answer (502)
    ├── MissingExtraError        an optional dependency is not installed (names the pip command)
    ├── RuntimeUnavailableError  a runtime or execution provider cannot run here
    └── PassError                an optimization pass failed on a graph

Third-party exceptions are translated at the boundary with ``raise ... from exc`` so the
message names the user's input, what was expected and what was found.
"""

from __future__ import annotations


class InfernoError(Exception):
    """Base of every error inferno raises on purpose."""

    exit_code: int = 2
    http_status: int = 500


class UserInputError(InfernoError):
    """The user's input (a path, a reference, data, an option) is wrong."""

    http_status = 400


class ModelLoadError(UserInputError):
    """A model cannot be loaded: missing, corrupt, unsupported or not importable."""


class UnknownModelError(ModelLoadError):
    """A bundled model name (or a served model name) that does not exist."""

    http_status = 404


class UntrustedPickleError(ModelLoadError):
    """A pickle was given without ``--trust``: unpickling runs arbitrary code."""


class DataMismatchError(UserInputError):
    """Evaluation or request data does not match the model's inputs."""


class ConfigError(UserInputError):
    """A configuration field has a value outside what it accepts."""


class PayloadTooLargeError(UserInputError):
    """A request body larger than the server accepts."""

    http_status = 413


class UnauthorizedError(UserInputError):
    """A request without the bearer token the server was started with."""

    http_status = 401


class ServiceUnavailableError(InfernoError):
    """The server cannot take the request now: a full queue, a model unloading, shutdown."""

    http_status = 503

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelUnavailableError(InfernoError):
    """A model of the repository whose loading failed: requests are told why (500, and no
    Retry-After: the same files fail the same way until someone fixes them and loads again)."""

    http_status = 500


class DeadlineExceededError(InfernoError):
    """A request's timeout ran out while it waited to be served."""

    http_status = 504


class CloudError(InfernoError):
    """The cloud server cannot answer: unreachable, timed out, or it answered an error.

    Attributes:
        url: the server's address. status: its HTTP status, None when there was no answer.
    """

    http_status = 502

    def __init__(self, message: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class MissingExtraError(InfernoError):
    """An optional dependency is missing; the message names the install command."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs {package}, which is not installed: "
            f"pip install 'inferno[{extra}]'"
        )
        self.package = package
        self.extra = extra


class RuntimeUnavailableError(InfernoError):
    """A runtime or execution provider was requested but cannot run on this machine."""


class PassError(InfernoError):
    """An optimization pass could not transform a graph."""
