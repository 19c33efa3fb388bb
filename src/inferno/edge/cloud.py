"""The cloud side of a cascade: a small synchronous Open Inference Protocol v2 client.

Requests go over persistent ``http.client`` connections (one per calling thread at a time,
kept for reuse), with the inputs and the requested output as binary tensors (Triton's
binary tensor extension) unless ``binary=False``. Everything that can go wrong at the
cloud — refused connection, timeout, a 4xx/5xx answer, a body that is not a v2 response —
is a :class:`CloudError` naming the URL and the status; nothing else escapes.
"""

from __future__ import annotations

import http.client
import logging
import queue
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import orjson

from inferno.bench.config import check_url
from inferno.bench.metadata import error_text
from inferno.errors import CloudError
from inferno.serving.protocol import DATATYPES, HEADER_LENGTH, datatype_of

log = logging.getLogger(__name__)

IDLE_CONNECTIONS = 8
"""Connections kept open for reuse; more concurrent callers open (and then drop) their own."""


@dataclass(frozen=True)
class CloudTensor:
    """An input or output as the cloud's model metadata shows it (``-1``: variable)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class CloudModel:
    """What the cascade needs of the cloud's model: its inputs, outputs and batch limit."""

    name: str
    inputs: tuple[CloudTensor, ...]
    outputs: tuple[CloudTensor, ...]
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
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(IDLE_CONNECTIONS)
        self._model: CloudModel | None = None

    @property
    def named(self) -> str:
        return f"model {self.model!r}" + (f" version {self.version!r}" if self.version else "")

    def _path(self, suffix: str = "") -> str:
        path = f"/v2/models/{quote(self.model, safe='')}"
        if self.version:
            path += f"/versions/{quote(self.version, safe='')}"
        return path + suffix

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
            inputs = tuple(_tensor(t) for t in doc["inputs"])
            outputs = tuple(_tensor(t) for t in doc["outputs"])
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
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise CloudError(f"{self.url}: the infer response of {self.named} is not a v2 response with "
                             f"output {self.output!r} ({type(exc).__name__}: {exc})", self.url, status) from None

    # -- transport -------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange on a kept connection; one retry on a fresh connection when a
        kept one turns out to be closed by the server.

        Raises:
            CloudError: no connection, no answer within ``timeout_s``.
        """
        all_headers = {**self._headers, **(headers or {})}
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                reply = conn.getresponse()
                data = reply.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise self._unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise self._unreachable(exc) from None
            if reply.will_close:
                conn.close()
            else:
                self._keep(conn)
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, data
        raise AssertionError("unreachable: the loop returns or raises")

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        try:
            return self._idle.get_nowait(), True
        except queue.Empty:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            return kind(self._host, self._port, timeout=self.timeout_s), False

    def _keep(self, conn: http.client.HTTPConnection) -> None:
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def _unreachable(self, exc: BaseException) -> CloudError:
        if isinstance(exc, (TimeoutError, socket.timeout)):
            why = f"no answer within {self.timeout_s:g} s"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(exc, OSError) and exc.strerror:
            why = exc.strerror.lower()
        else:
            why = str(exc) or type(exc).__name__
        return CloudError(f"cannot reach the cloud at {self.url}: {why} — is `inferno serve` running there?",
                          self.url)

    def close(self) -> None:
        """Close the kept connections (the client opens new ones if used again)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def classification_output(model: CloudModel, url: str) -> str:
    """The first float ``[batch, classes]`` output of the cloud's model.

    Raises:
        CloudError: it has none (it is not a classifier).
    """
    for out in model.outputs:
        if out.datatype.startswith(("FP", "BF")) and len(out.shape) == 2 and out.shape[1] > 1:
            return out.name
    found = ", ".join(f"{o.name} {o.datatype} {list(o.shape)}" for o in model.outputs) or "none"
    raise CloudError(f"cloud model {model.name!r} at {url}: expected a float [batch, classes] output, "
                     f"found {found}", url, 200)


def encode_request(inputs: dict[str, np.ndarray], output: str, binary: bool) -> tuple[bytes, dict[str, str]]:
    """A v2 infer body asking for ``output`` (every output when empty), and its headers."""
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in inputs.items():
        tensor: dict[str, Any] = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if binary:
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = np.ascontiguousarray(array).reshape(-1)
        tensors.append(tensor)
    doc: dict[str, Any] = {"inputs": tensors, "parameters": {"binary_data_output": binary}}
    if output:
        doc["outputs"] = [{"name": output, "parameters": {"binary_data": binary}}]
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(header))
    return header + b"".join(chunks), headers


def decode_output(body: bytes, header_length: str | None, output: str) -> np.ndarray:
    """The named output (the first float 2-D one when ``output`` is empty) of a v2 response.

    Raises:
        KeyError, ValueError, TypeError: the body is not such a response.
    """
    n = int(header_length) if header_length is not None else len(body)
    doc = orjson.loads(body[:n])
    offset = n
    for tensor in doc["outputs"]:
        datatype, shape = tensor["datatype"], [int(d) for d in tensor["shape"]]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        wanted = tensor["name"] == output or (not output and datatype.startswith("FP") and len(shape) == 2)
        if wanted:
            dtype = DATATYPES[datatype]
            if size is not None:
                array = np.frombuffer(body[offset:offset + int(size)], dtype=dtype)
            else:
                array = np.asarray(tensor["data"], dtype=dtype)
            return array.reshape(shape)
        offset += int(size or 0)
    raise KeyError(f"no output {output or 'of float [batch, classes]'} in the response")


def _tensor(doc: dict[str, Any]) -> CloudTensor:
    return CloudTensor(str(doc["name"]), str(doc["datatype"]).upper(), tuple(int(d) for d in doc["shape"]))
