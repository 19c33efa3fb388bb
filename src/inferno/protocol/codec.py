"""Tensors on the wire, both ways: JSON ``data`` and Triton's binary tensor extension.

The element codec (:func:`tensor_bytes`, :func:`tensor_from_bytes`, :func:`json_values`,
:func:`split_body`) is the server's and the clients' alike; the server's strict parsing of
whole infer requests is in :mod:`inferno.serving.protocol`. A client builds its requests
with :func:`encode_request` and reads answers with :func:`response_outputs`.

In the binary extension a body is the JSON header (its length in the
``Inference-Header-Content-Length`` header) followed by each binary tensor's bytes in the
order the header lists them, each tensor's size in its ``parameters.binary_data_size``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from inferno.errors import UserInputError
from inferno.protocol.datatypes import BF16, DATATYPES
from inferno.protocol.metadata import TensorSpec

HEADER_LENGTH = "inference-header-content-length"
"""The binary extension's header (lower case, as ASGI and ``http.client`` give headers)."""


def tensor_bytes(data: np.ndarray, datatype: str) -> bytes:
    """A tensor as the binary extension and gRPC's raw contents carry it.

    Row-major, little-endian; ``BYTES`` elements are a 4-byte little-endian length then the
    bytes (a ``str`` element as UTF-8); ``BF16`` is the top two bytes of each FP32 value.
    """
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (as_bytes(x) for x in data.reshape(-1)))
    if datatype == BF16:
        bits = np.ascontiguousarray(data, dtype="<f4").view("<u4") >> 16
        return bits.astype("<u2").tobytes()
    return np.ascontiguousarray(data, dtype=DATATYPES[datatype]).tobytes()


def tensor_from_bytes(chunk: bytes, datatype: str, count: int, where: str) -> np.ndarray:
    """``count`` elements of ``datatype`` from their binary form, flat (BYTES: ``bytes`` objects).

    Raises:
        UserInputError: naming ``where``, when ``chunk`` is not exactly ``count`` elements.
    """
    if datatype == "BYTES":
        items: list[bytes] = []
        pos = 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                raise UserInputError(
                    f"{where}: BYTES element {len(items)}: expected a 4-byte length, got {len(chunk) - pos} bytes"
                )
            (length,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + length > len(chunk):
                raise UserInputError(
                    f"{where}: BYTES element {len(items)}: expected at most {len(chunk) - pos} bytes "
                    f"(all that remain), got a length that claims {length} bytes"
                )
            items.append(chunk[pos:pos + length])
            pos += length
        if len(items) != count:
            raise UserInputError(f"{where}: expected {count} elements (its shape), got {len(items)} in the binary data")
        return objects(items)
    dtype = DATATYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise UserInputError(
            f"{where}: expected {count * dtype.itemsize} bytes ({count} {datatype} elements), "
            f"got binary_data_size {len(chunk)}"
        )
    # NaN and Inf stay: a model may take them (missing values), and the server's data
    # validation (validation: count | reject) is where they are counted or refused
    return np.frombuffer(chunk, dtype=dtype)


def json_values(data: np.ndarray, datatype: str, name: str) -> Any:
    """An output's values for JSON ``data``, flat (orjson writes the array as it is).

    Raises:
        UserInputError: a float output holds NaN or Inf, which JSON cannot carry.
    """
    if datatype == "BYTES":
        return [as_bytes(x).decode("utf-8", "replace") for x in data.reshape(-1)]
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        # orjson would write them as null: an FP32 tensor of nulls breaks the datatype contract
        raise UserInputError(
            f"output {name!r}: expected finite values for a JSON output, got NaN or Inf in it "
            f"(the model produced non-finite values); ask for it with parameters.binary_data true: "
            f"binary data carries them exactly"
        )
    if datatype == "FP16":
        return data.astype(np.float32).reshape(-1)
    return np.ascontiguousarray(data).reshape(-1)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """``(JSON header, binary data)`` of a body; ``header_length`` is the extension's header.

    Raises:
        UserInputError: the header length is not a number between 1 and the body's size.
    """
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 < n <= len(body):
        raise UserInputError(
            f"header Inference-Header-Content-Length: expected a length between 1 and the body size "
            f"{len(body)}, got {header_length!r}"
        )
    return body[:n], body[n:]


def objects(items: list[bytes]) -> np.ndarray:
    """A flat ``object`` array of ``items`` (numpy would make a 2-D array of equal-length lists)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


# -- a client's side ---------------------------------------------------------------------------


def encode_request(
    inputs: Iterable[tuple[str, str, np.ndarray]],
    *,
    binary: bool = False,
    binary_output: bool | None = None,
    outputs: Sequence[str] = (),
) -> tuple[bytes, int]:
    """An infer body of ``(name, datatype, array)`` inputs, and its JSON header's length.

    ``binary``: the inputs in the binary extension (else JSON ``data``, flat, the header being
    the whole body). ``binary_output``: the request's ``binary_data_output`` parameter and the
    ``binary_data`` of each output named in ``outputs`` (None: neither is sent, the server's
    default: JSON). ``outputs``: the outputs asked for (none: every output).
    """
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, datatype, array in inputs:
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = tensor_bytes(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            tensor["data"] = [x if isinstance(x, str) else as_bytes(x).decode("utf-8", "replace")
                              for x in array.reshape(-1).tolist()]
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    doc: dict[str, Any] = {"inputs": tensors}
    if binary_output is not None:
        doc["parameters"] = {"binary_data_output": binary_output}
    if outputs:
        doc["outputs"] = [{"name": n} if binary_output is None else
                          {"name": n, "parameters": {"binary_data": binary_output}} for n in outputs]
    header = orjson.dumps(doc)
    return header + b"".join(chunks), len(header)


def request_headers(binary: bool, header_length: int) -> dict[str, str]:
    """``Content-Type`` of an infer body, and the extension's header length when ``binary``."""
    if not binary:
        return {"Content-Type": "application/json"}
    return {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)}


@dataclass(frozen=True)
class ResponseOutput:
    """One output of an infer response, decoded only when asked (:meth:`array`)."""

    spec: TensorSpec
    raw: bytes | None
    """Its bytes in the binary extension; None: its values are in ``data``."""
    data: Any = None

    def array(self) -> np.ndarray:
        """The output's values, shaped.

        Raises:
            KeyError: a datatype that cannot be decoded (``BF16``, unknown).
            ValueError: values that do not make its shape or datatype (UserInputError for binary).
        """
        spec = self.spec
        if self.raw is not None:
            where = f"output {spec.name!r}"
            return tensor_from_bytes(self.raw, spec.datatype, math.prod(spec.shape), where).reshape(spec.shape)
        return np.asarray(self.data, dtype=DATATYPES[spec.datatype]).reshape(spec.shape)


def response_outputs(body: bytes, header_length: str | None) -> Iterator[ResponseOutput]:
    """The outputs of an infer response (JSON or binary extension), in order.

    Raises:
        KeyError, TypeError, ValueError: the body is not a v2 infer response.
    """
    n = int(header_length) if header_length is not None else len(body)
    doc = orjson.loads(body[:n])
    offset = n
    for tensor in doc["outputs"]:
        spec = TensorSpec.from_dict(tensor)
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            yield ResponseOutput(spec, None, tensor["data"])
        else:
            yield ResponseOutput(spec, body[offset:offset + int(size)])
            offset += int(size)


def error_body(message: str) -> bytes:
    """``{"error": message}``: the body of every error answer."""
    return orjson.dumps({"error": message})


def error_text(body: bytes) -> str:
    """The ``error`` of a JSON error body, or the start of the body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "empty body"
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])
    return str(doc)[:200]
