"""The server's side of Open Inference Protocol v2 infer bodies: strict request parsing and
the response encoder, over the shared tensor codec of :mod:`inferno.protocol`.

Parsing is strict and every refusal names the input, what was expected and what was found:
the server answers it as 400 and keeps serving. Nested JSON ``data`` must be its shape level
by level (flat data of the right count is fine), output names are unique. JSON cannot carry NaN or Inf: binary
tensors carry them exactly both ways, and a JSON output that holds them is refused rather
than written as ``null``. Nothing here knows about models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import orjson

from inferno.errors import UserInputError
from inferno.protocol.codec import (
    HEADER_LENGTH,
    json_values,
    objects,
    split_body,
    tensor_bytes,
    tensor_from_bytes,
)
from inferno.protocol.datatypes import DATATYPES, datatype_of

__all__ = [
    "InferRequest", "InputTensor", "OutputTensor", "RequestedOutput", "encode_infer_response",
    "input_tensor", "json_object", "parse_infer_request", "requested_outputs",
]

MAX_NESTING = 32
"""Most levels of lists JSON ``data`` may nest."""

@dataclass(frozen=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    """Shaped as ``shape``; BYTES tensors hold ``bytes`` objects."""

    def raw(self) -> bytes:
        """The tensor's content as bytes (the response cache's key material)."""
        return tensor_bytes(self.data, self.datatype)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0
    """Top-k classes as ``"score:index"`` strings instead of the tensor (0: the tensor)."""


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, InputTensor]
    outputs: tuple[RequestedOutput, ...] | None
    """None: every output, in the default format."""
    binary_output: bool
    """The request's ``binary_data_output``: the default format of outputs."""
    id: str | None = None
    timeout_us: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputTensor:
    name: str
    data: np.ndarray
    binary: bool = False


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse an infer body; ``header_length`` is the ``Inference-Header-Content-Length`` header."""
    header, binary = split_body(body, header_length)
    doc = json_object(header, "request body")
    params = _parameters(doc.get("parameters"), "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise UserInputError(f"'inputs': expected a non-empty list of tensors, got {_kind(raw_inputs)}")
    inputs: dict[str, InputTensor] = {}
    offset = 0
    for i, raw in enumerate(raw_inputs):
        tensor, offset = _input(raw, i, binary, offset)
        if tensor.name in inputs:
            raise UserInputError(f"input {tensor.name!r}: expected unique input names, got {tensor.name!r} twice")
        inputs[tensor.name] = tensor
    if offset != len(binary):
        raise UserInputError(
            f"binary data: expected {offset} bytes after the JSON header (the inputs' binary_data_size "
            f"added up), got {len(binary)}"
        )
    binary_output = _flag(params.get("binary_data_output", False), "parameter 'binary_data_output'")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise UserInputError(f"'id': expected a string, got {_kind(request_id)}")
    timeout = params.get("timeout")
    if timeout is not None and (not _is_int(timeout) or timeout < 0):
        raise UserInputError(f"parameter 'timeout': expected microseconds (an integer >= 0), got {timeout!r}")
    return InferRequest(inputs, _outputs(doc.get("outputs"), binary_output), binary_output,
                        request_id, timeout, params)


def json_object(raw: bytes, where: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object; a UserInputError naming ``where`` otherwise."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UserInputError(f"{where}: expected JSON, got invalid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise UserInputError(f"{where}: expected a JSON object, got {_kind(doc)}")
    return doc


def input_tensor(name: Any, datatype: Any, shape: Any, *, raw: bytes | None = None,
                 values: list[Any] | None = None) -> InputTensor:
    """One input from another transport (gRPC): its bytes as in the binary extension (``raw``),
    or its values as a flat list; checked as strictly as a JSON input."""
    if not isinstance(name, str) or not name:
        raise UserInputError(f"input name: expected a non-empty string, got {name!r}")
    where = f"input {name!r}"
    datatype, shape, count = _checked(where, datatype, shape)
    if raw is not None:
        array = tensor_from_bytes(raw, datatype, count, where)
    elif values is not None:
        array = _from_json(values, datatype, shape, count, where)
    else:
        raise UserInputError(f"{where}: expected its contents or raw bytes, got neither")
    return InputTensor(name, datatype, tuple(shape), array.reshape(shape))


def requested_outputs(names_and_classes: list[tuple[Any, Any]]) -> tuple[RequestedOutput, ...] | None:
    """Requested outputs from another transport, as ``(name, class_count)``, checked like JSON's."""
    items = [{"name": n, "parameters": {"classification": k}} for n, k in names_and_classes]
    return _outputs(items, True)


def _input(raw: Any, index: int, binary: bytes, offset: int) -> tuple[InputTensor, int]:
    if not isinstance(raw, dict):
        raise UserInputError(f"inputs[{index}]: expected a tensor object, got {_kind(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise UserInputError(f"inputs[{index}].name: expected a non-empty string, got {name!r}")
    where = f"input {name!r}"
    datatype, shape, count = _checked(where, raw.get("datatype"), raw.get("shape"))
    params = _parameters(raw.get("parameters"), where)
    size = params.get("binary_data_size")
    if size is not None:
        if not _is_int(size) or size < 0:
            raise UserInputError(f"{where}: expected binary_data_size as an integer >= 0, got {size!r}")
        if "data" in raw:
            raise UserInputError(f"{where}: expected 'data' or binary_data_size, got both")
        if offset + size > len(binary):
            raise UserInputError(
                f"{where}: expected at most {len(binary) - offset} binary bytes left for it, "
                f"got binary_data_size {size}"
            )
        array = tensor_from_bytes(binary[offset:offset + size], datatype, count, where)
        offset += size
    elif "data" in raw:
        array = _from_json(raw["data"], datatype, shape, count, where)
    else:
        raise UserInputError(f"{where}: expected 'data' or parameters.binary_data_size, got neither")
    return InputTensor(name, datatype, tuple(shape), array.reshape(shape)), offset


def _checked(where: str, datatype: Any, shape: Any) -> tuple[str, list[int], int]:
    """A tensor's datatype and shape, checked; and its element count."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # a dict or list is unhashable
        raise UserInputError(f"{where}: expected a datatype among {', '.join(DATATYPES)}, got {datatype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise UserInputError(f"{where}: expected 'shape' as a list of integers >= 0, got {shape!r}")
    return datatype, shape, math.prod(shape)


def _from_json(data: Any, datatype: str, shape: list[int], count: int, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise UserInputError(f"{where}: expected 'data' as a list, got {_kind(data)}")
    nested = bool(data) and type(data[0]) is list
    flat = _flatten(data, shape, where) if nested else data
    if len(flat) != count:
        raise UserInputError(f"{where}: expected {count} elements (its shape), got {len(flat)} in 'data'")
    types = set(map(type, flat))  # one pass at C speed; orjson makes exact int, float, bool, str
    if nested and list in types:
        index = next(i for i, v in enumerate(flat) if type(v) is list)
        raise _not_its_shape(where, shape, "a value", _path(index, shape), flat[index])
    if datatype == "BYTES":
        if not types <= {str}:
            bad = next(s for s in flat if type(s) is not str)
            raise UserInputError(f"{where}: BYTES data: expected strings, got {_kind(bad)}")
        return objects([s.encode("utf-8", "surrogatepass") for s in flat])
    if datatype == "BOOL":
        if not types <= {bool}:
            bad = next(v for v in flat if type(v) is not bool)
            raise UserInputError(f"{where}: BOOL data: expected true/false values, got {_kind(bad)} {str(bad)[:40]}")
    elif not types <= {int, float}:
        bad = next(v for v in flat if type(v) not in (int, float))
        raise UserInputError(f"{where}: {datatype} data: expected numbers, got {_kind(bad)} {str(bad)[:40]!r}")
    try:
        with np.errstate(over="raise", invalid="raise"):
            array = np.asarray(flat, dtype=DATATYPES[datatype])
    except (OverflowError, ValueError, TypeError, FloatingPointError) as exc:
        raise UserInputError(f"{where}: expected values that fit {datatype}, got one outside ({exc})") from None
    if datatype.startswith(("INT", "UINT")) and float in types:
        bad = next(v for v in flat if type(v) is float)
        raise UserInputError(f"{where}: {datatype} data: expected integers, got {bad!r}")
    return array


def _flatten(data: list[Any], shape: list[int], where: str) -> list[Any]:
    """Nested ``data`` as a flat list, when each level's lists are as long as that dimension.

    Level by level, so the cost is one check per inner list (not per value) and the depth is
    bounded by the shape; the leaves are left to the value checks (a list among them is
    nesting deeper than the shape).
    """
    item, depth = data, 0
    while type(item) is list and item and depth <= MAX_NESTING:
        item, depth = item[0], depth + 1
    if depth > MAX_NESTING:
        raise UserInputError(f"{where}: expected 'data' nested at most {MAX_NESTING} levels deep, got deeper")
    level: list[Any] = [data]
    for k, dim in enumerate(shape):
        if not all(type(x) is list and len(x) == dim for x in level):
            index = next(i for i, x in enumerate(level) if type(x) is not list or len(x) != dim)
            raise _not_its_shape(where, shape, f"a list of {dim}", _path(index, shape[:k]), level[index])
        level = list(chain.from_iterable(level))
    return level


def _not_its_shape(where: str, shape: list[int], expected: str, path: str, found: Any) -> UserInputError:
    got = f"a list of {len(found)}" if isinstance(found, list) else _kind(found)
    return UserInputError(
        f"{where}: expected 'data' flat or nested as its shape {shape}: {expected} at data{path}, got {got}"
    )


def _path(index: int, dims: list[int]) -> str:
    """``[i][j]`` of the ``index``-th element in row-major order over ``dims``."""
    parts = []
    for dim in reversed(dims):
        index, j = divmod(index, dim)
        parts.append(f"[{j}]")
    return "".join(reversed(parts))


def _outputs(raw: Any, binary_default: bool) -> tuple[RequestedOutput, ...] | None:
    if raw is None or raw == []:  # none named: every output, as Triton and KServe do
        return None
    if not isinstance(raw, list):
        raise UserInputError(f"'outputs': expected a list of {{name, parameters}}, got {_kind(raw)}")
    outputs = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise UserInputError(f"outputs[{i}]: expected an object with a string 'name', got {str(item)[:60]!r}")
        name = item["name"]
        if name in seen:  # each copy would serialize the whole tensor again: response amplification
            raise UserInputError(f"outputs[{i}]: expected unique output names, got {name!r} again")
        seen.add(name)
        params = _parameters(item.get("parameters"), f"output {name!r}")
        binary = _flag(params.get("binary_data", binary_default), f"output {name!r} parameter 'binary_data'")
        k = params.get("classification", 0)
        if not _is_int(k) or k < 0:
            raise UserInputError(f"output {name!r}: expected classification as an integer >= 0, got {k!r}")
        outputs.append(RequestedOutput(name, binary, k))
    return tuple(outputs)


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserInputError(f"{where}: expected 'parameters' as an object, got {_kind(raw)}")
    return raw


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserInputError(f"{where}: expected true or false, got {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def encode_infer_response(
    model: str, version: str, outputs: list[OutputTensor], request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (the header length when any output is binary)."""
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in outputs:
        datatype = datatype_of(out.data.dtype)
        tensor: dict[str, Any] = {"name": out.name, "datatype": datatype, "shape": list(out.data.shape)}
        if out.binary:
            raw = tensor_bytes(out.data, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = json_values(out.data, datatype, out.name)
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request_id:
        doc["id"] = request_id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {}
    return header + b"".join(chunks), {HEADER_LENGTH: str(len(header))}
