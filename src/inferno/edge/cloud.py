"""The cloud side of a cascade: a small synchronous Open Inference Protocol v2 client.

Requests go over :class:`inferno.protocol.Client`'s persistent ``http.client`` connections
(one per calling thread at a time, kept for reuse), with the inputs and the requested output
as binary tensors (Triton's binary tensor extension) unless ``binary=False``. Everything that
can go wrong at the cloud — refused connection, timeout, a 4xx/5xx answer, a body that is not
a v2 response — is a :class:`CloudError` naming the URL and the status; nothing else escapes.
Only :mod:`inferno.protocol` is spoken here: importing this module loads no server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from inferno.errors import CloudError, UserInputError
from inferno.protocol.address import check_url
from inferno.protocol.client import Client, Unreachable
from inferno.protocol.codec import HEADER_LENGTH, error_text, request_headers, response_outputs
from inferno.protocol.codec import encode_request as encode_body
from inferno.protocol.datatypes import datatype_of
from inferno.protocol.metadata import TensorSpec, model_path, named

log = logging.getLogger(__name__)

HINT = "is `inferno serve` running there?"


@dataclass(frozen=True)
class CloudModel:
    """What the cascade needs of the cloud's model: its inputs, outputs and batch limit."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int | None
    """Most rows one request may carry (the model configuration's), None when not told."""


class CloudClient:
    """Infer on a model of a v2 server (an ``inferno serve``, Triton, KServe).

    Args:
        url: ``http(s)://host[:port]`` of the server.
        model: the model's name there. version: its version (None: the server's choice).
        timeout_s: most seconds to wait for a connection or an answer.
        token: bearer token, when the server was started with one.
        output: the output to ask for (None: the first float ``[batch, classes]`` output).
        binary: send and receive binary tensors (False: JSON ``data`` lists).
    """

    def __init__(self, url: str, model: str, version: str | None = None, timeout_s: float = 30.0,
                 token: str | None = None, output: str | None = None, binary: bool = True) -> None:
        self.url = check_url(url, "CLOUD_URL")
        self.model = model
        self.version = version
        self.timeout_s = timeout_s
        self.binary = binary
        self.output = output
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = Client(self.url, timeout_s, headers)
        self._model: CloudModel | None = None

    @property
    def named(self) -> str:
        return named(self.model, self.version)

    def _path(self, suffix: str = "") -> str:
        return model_path(self.model, self.version, suffix)

    # -- model metadata --------------------------------------------------------------------------

    def connect(self) -> CloudModel:
        """Read the model's metadata (and its batch limit) once; later calls return it.

        Raises:
            CloudError: unreachable, the model is not served there (404), or nonsense answers.
        """
        if self._model is not None:
            return self._model
        doc = self._get_json(self._path())
        try:
            inputs = tuple(TensorSpec.from_dict(t) for t in doc["inputs"])
            outputs = tuple(TensorSpec.from_dict(t) for t in doc["outputs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CloudError(f"{self.url}: the metadata of {self.named} is not a v2 model metadata "
                             f"document ({type(exc).__name__}: {exc})", self.url, 200) from None
        self._model = CloudModel(self.model, inputs, outputs, self._max_batch_size())
        if self.output is None:
            self.output = classification_output(self._model, self.url)
        return self._model

    def _max_batch_size(self) -> int | None:
        try:
            config = self._get_json(self._path("/config"))
        except CloudError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return None  # a server without the model-configuration extension
            raise
        value = config.get("max_batch_size")
        return value if isinstance(value, int) and value > 0 else None

    def _get_json(self, path: str) -> dict[str, Any]:
        status, _, body = self.request("GET", path)
        if status != 200:
            raise self._refusal(status, body, "metadata request")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            raise CloudError(f"{self.url}{path}: expected a JSON object, got {body[:80]!r}", self.url, status)
        return doc

    def _refusal(self, status: int, body: bytes, what: str) -> CloudError:
        detail = error_text(body)
        if status == 404:
            why = f"{self.named} is not served at {self.url}"
        elif status in (401, 403):
            why = f"{self.url} refused the {what} for {self.named}: pass the server's token"
        else:
            why = f"{what} for {self.named} at {self.url} failed"
        return CloudError(f"{why} (HTTP {status}: {detail})", self.url, status)

    # -- inference -------------------------------------------------------------------------------

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The model's classification output for these rows, in as few requests as its batch
        limit allows (one when it has none or the rows fit).

        Raises:
            CloudError: the server cannot be reached or answers with an error.
        """
        model = self.connect()
        rows = len(next(iter(inputs.values())))
        step = model.max_batch_size or rows or 1
        parts = [self._infer_once({k: v[i:i + step] for k, v in inputs.items()})
                 for i in range(0, max(rows, 1), step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _infer_once(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        body, headers = encode_request(inputs, self.output or "", self.binary)
        status, reply_headers, reply = self.request("POST", self._path("/infer"), body, headers)
        if status != 200:
            raise self._refusal(status, reply, "infer request")
        try:
            return decode_output(reply, reply_headers.get(HEADER_LENGTH), self.output or "")
        except (KeyError, TypeError, ValueError, UserInputError) as exc:
            raise CloudError(f"{self.url}: the infer response of {self.named} is not a v2 response with "
                             f"output {self.output!r} ({type(exc).__name__}: {exc})", self.url, status) from None

    # -- transport -------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange on a kept connection: ``(status, lower-cased headers, body)``.

        Raises:
            CloudError: no connection, no answer within ``timeout_s``.
        """
        try:
            response = self._client.request(method, path, body, headers)
        except Unreachable as exc:
            raise CloudError(exc.line("the cloud at ", HINT), self.url) from None
        return response.status, response.headers, response.body

    def close(self) -> None:
        """Close the kept connections (the client opens new ones if used again)."""
        self._client.close()


def classification_output(model: CloudModel, url: str) -> str:
    """The first float ``[batch, classes]`` output of the cloud's model.

    Raises:
        CloudError: it has none (it is not a classifier).
    """
    for out in model.outputs:
        if out.datatype.startswith(("FP", "BF")) and len(out.shape) == 2 and out.shape[1] > 1:
            return out.name
    found = ", ".join(f"{o.name} {o.describe()}" for o in model.outputs) or "none"
    raise CloudError(f"cloud model {model.name!r} at {url}: expected a float [batch, classes] output, "
                     f"found {found}", url, 200)


def encode_request(inputs: dict[str, np.ndarray], output: str, binary: bool) -> tuple[bytes, dict[str, str]]:
    """A v2 infer body asking for ``output`` (every output when empty), and its headers."""
    body, length = encode_body(((name, datatype_of(a.dtype), a) for name, a in inputs.items()),
                               binary=binary, binary_output=binary, outputs=[output] if output else [])
    return body, request_headers(binary, length)


def decode_output(body: bytes, header_length: str | None, output: str) -> np.ndarray:
    """The named output (the first float 2-D one when ``output`` is empty) of a v2 response.

    Raises:
        KeyError, ValueError, TypeError: the body is not such a response (UserInputError:
            binary data that does not make the output's shape).
    """
    for out in response_outputs(body, header_length):
        spec = out.spec
        if spec.name == output or (not output and spec.datatype.startswith("FP") and len(spec.shape) == 2):
            return out.array()
    raise KeyError(f"no output {output or 'of float [batch, classes]'} in the response")
