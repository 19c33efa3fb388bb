"""Every error inferno raises on purpose.

The tree, with the HTTP status the server answers each with (``http_status``)::

    InfernoError                    base; ``exit_code`` 2 in the CLI (500)
    ├── UserInputError              the user's input is wrong (400)
    │   ├── ModelLoadError          a model file/reference cannot be loaded (400)
    │   │   ├── UnknownModelError   a bundled or served name that does not exist (404)
    │   │   └── UntrustedPickleError  a pickle without ``--trust`` (400)
    │   ├── DataMismatchError       evaluation or request data does not fit the inputs (400)
    │   │   └── ShapeSearchError    no size tried for a graph's dynamic axes ran (400)
    │   ├── ConfigError             a setting has a bad value (400)
    │   │   └── BundleTooLargeError the smallest edge bundle is over the size budget (400)
    │   ├── PayloadTooLargeError    a request body over the server's limit (413)
    │   └── UnauthorizedError       a missing or wrong bearer token (401)
    ├── ServiceUnavailableError     the server cannot take the request now (503, Retry-After)
    ├── ModelUnavailableError       a model whose loading failed (500, the reason, no Retry-After)
    ├── DeadlineExceededError       a request's timeout ran out before it was served (504)
    ├── CloudError                  the cloud server behind an edge cascade cannot answer (502)
    ├── MissingExtraError           an optional dependency is missing (500; names the pip command)
    ├── RuntimeUnavailableError     a runtime or execution provider cannot run here (500)
    ├── PassError                   an optimization pass failed on a graph (500)
    │   └── NothingToDo             measuring showed a pass is not needed: no variant (500)
    └── ClientProcessError          a load-generator process failed or stopped answering (500)

    BatchSizeError                  a ``RuntimeError``, not an InfernoError: an ``execute`` broke
                                    the batcher's contract (a bug: an unexpected error, 500)

Exceptions that never leave their layer (the 404/405 ``NotFound`` and ``MethodNotAllowed`` of
``serving.exchange``, ``serving.grpc_service``'s ``_Refusal``, ``monitoring.predlog``'s
``_IOFailure``, the transport's ``ClientDisconnected``, the v2 client's ``Unreachable`` that
each caller turns into its own error) stay beside the code that raises and
catches them.

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


class ShapeSearchError(DataMismatchError):
    """No size tried for the dynamic axes ran; the message names the input and what to pass."""


class ConfigError(UserInputError):
    """A configuration field has a value outside what it accepts."""


class BundleTooLargeError(ConfigError):
    """The smallest bundle inferno can make is larger than the size budget."""


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


class NothingToDo(PassError):
    """Raised by ``run`` when measuring showed the rewrite is not needed (the graph it would
    write is one another recipe already builds); the variant is then not built, as a no-op."""


class ClientProcessError(InfernoError):
    """A load-generator process failed or stopped answering."""


class BatchSizeError(RuntimeError):
    """``execute`` broke the batch contract (one result per request).

    A ``RuntimeError``, not an ``InfernoError``: it is a bug in the runtime, not a state of
    the user's input or of the server, so the server answers it as an unexpected error."""
