"""Property: whatever body reaches the parser, it returns a consistent request or refuses it.

``parse_infer_request`` either returns an ``InferRequest`` whose tensors hold ``prod(shape)``
elements shaped as their shape, with unique output names, or raises
``UserInputError`` (a 400). Never anything else: an ``IndexError`` or a numpy error here
would be a 500 in the server. The end-to-end fuzz over a running server is
``tests/e2e/serving/test_fuzz.py``; this one is in-process and fast.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from inferno.errors import UserInputError
from inferno.protocol.datatypes import DATATYPES
from inferno.serving.protocol import (
    OutputTensor,
    encode_infer_response,
    parse_infer_request,
)

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NUMERIC = [d for d in DATATYPES if d not in ("BYTES", "BOOL")]
RANGES = {
    name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    for name, dtype in DATATYPES.items()
    if dtype.kind in "iu"
}


def check(body: bytes, header_length: str | None) -> None:
    """The property: a consistent request, or a UserInputError; anything else fails the test."""
    try:
        request = parse_infer_request(body, header_length)
    except UserInputError as exc:
        assert str(exc), "a refusal says why"
        event("refused")
        return
    event("parsed")
    assert request.inputs
    for name, tensor in request.inputs.items():
        assert tensor.name == name
        assert tensor.datatype in DATATYPES
        assert all(isinstance(d, int) and d >= 0 for d in tensor.shape)
        assert tensor.data.shape == tensor.shape
        assert tensor.data.size == math.prod(tensor.shape)
        assert tensor.data.dtype == DATATYPES[tensor.datatype]
        if tensor.datatype == "BYTES":
            assert all(isinstance(b, bytes) for b in tensor.data.reshape(-1))
    if request.outputs is not None:
        names = [out.name for out in request.outputs]
        assert len(names) == len(set(names)), names
    # what was accepted can be sent back as binary, and as JSON where its floats are finite
    outputs = [
        OutputTensor(t.name, t.data, binary)
        for t in request.inputs.values()
        for binary in (False, True)
    ]
    json_outputs = [o for o in outputs[::2] if o.data.dtype.kind != "f" or np.isfinite(o.data).all()]
    raw, headers = encode_infer_response("m", "1", json_outputs)
    orjson.loads(raw)
    raw, headers = encode_infer_response("m", "1", outputs[1::2])
    assert int(headers["inference-header-content-length"]) <= len(raw)


# -- strategies ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson can write
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
names = st.sampled_from(["x", "y", "text", ""]) | st.text(max_size=6)
datatypes = st.sampled_from(list(DATATYPES)) | st.sampled_from(["BF16", "FLOAT32", "", "fp32"])
shapes = st.lists(st.integers(0, 4), max_size=4)
odd_shapes = st.lists(st.integers(-3, 2**40), max_size=5) | json_values


def values(datatype: str, binary: bool) -> st.SearchStrategy[Any]:
    """One element of ``datatype``; now and then one that does not fit it."""
    if datatype == "BYTES":
        good: st.SearchStrategy[Any] = st.text(max_size=6)
    elif datatype == "BOOL":
        good = st.booleans()
    elif datatype in RANGES:
        lo, hi = RANGES[datatype]
        good = st.integers(lo, hi)
    else:  # floats; binary data can hold NaN and Inf, which the parser refuses
        width = {"FP16": 16, "FP32": 32, "FP64": 64}.get(datatype, 64)
        good = st.floats(width=width, allow_nan=binary, allow_infinity=binary)
    if binary:
        return good
    return st.one_of(good, good, good, good, good, good, good, json_values)


def nest(flat: list[Any], shape: list[int]) -> list[Any]:
    """``flat`` nested as ``shape`` (row-major), the way a client builds nested data."""
    if len(shape) <= 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def ragged(draw: st.DrawFn, data: list[Any]) -> list[Any]:
    """Break the nesting somewhere: move, drop or add an element one level down."""
    rows = [row for row in data if isinstance(row, list)]
    if not rows:
        return [data]
    row = draw(st.sampled_from(rows))
    how = draw(st.sampled_from(["drop", "add", "wrap", "unwrap"]))
    if how == "drop" and row:
        row.pop()
    elif how == "add":
        row.append(row[0] if row else 0)
    elif how == "wrap" and row:
        row[0] = [row[0]]
    elif how == "unwrap":
        data[data.index(row)] = row[0] if row else 0
    return data


def pack(datatype: str, items: list[Any]) -> bytes:
    """Binary-extension bytes of ``items`` (a datatype the parser does not know: float32 bytes)."""
    if datatype == "BYTES":
        raw = [s.encode("utf-8", "surrogatepass") for s in items]
        return b"".join(struct.pack("<I", len(b)) + b for b in raw)
    dtype = DATATYPES.get(datatype, np.dtype("<f4"))
    with np.errstate(all="ignore"):
        return np.array(items, dtype=dtype).tobytes()


@st.composite
def tensors(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """A tensor that mostly looks valid (JSON data flat or nested, or binary), and its bytes."""
    datatype = draw(st.sampled_from(list(DATATYPES)) if draw(st.integers(0, 9)) else datatypes)
    shape = draw(shapes)
    tensor: dict[str, Any] = {"name": draw(names), "datatype": datatype, "shape": shape}
    count = math.prod(shape)
    binary = draw(st.booleans())
    element = values(datatype if datatype in DATATYPES else "FP32", binary)
    flat = draw(st.lists(element, min_size=count, max_size=count))
    blob = b""
    mutation = draw(st.sampled_from(["none"] * 6 + ["count", "ragged", "shape", "drop", "random"]))
    if mutation == "count" and flat:
        flat = flat[: draw(st.integers(0, len(flat) - 1))]
    elif mutation == "count":
        flat = [draw(element)]
    if binary:
        blob = pack(datatype, flat)
        size = len(blob) + draw(st.sampled_from([0] * 8 + [-4, -1, 1, 2**20]))
        tensor["parameters"] = {"binary_data_size": size}
    else:
        data: Any = nest(flat, shape) if len(shape) > 1 and draw(st.booleans()) else flat
        if mutation == "ragged":
            data = ragged(draw, data)
        tensor["data"] = data
    if mutation == "shape":
        tensor["shape"] = draw(odd_shapes)
    elif mutation == "drop":
        del tensor[draw(st.sampled_from(["name", "datatype", "shape"]))]
    elif mutation == "random":
        tensor[draw(st.sampled_from(["data", "parameters", "name"]))] = draw(json_values)
    return tensor, blob


outputs = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["y", "z", "embedding"]) | st.text(max_size=4)},
        optional={
            "parameters": st.fixed_dictionaries(
                {},
                optional={
                    "binary_data": st.booleans() | json_values,
                    "classification": st.integers(-1, 5) | json_values,
                },
            )
        },
    ),
    max_size=5,
)


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A JSON header of 1-3 tensors (some binary), then their bytes; and the header length."""
    parts = draw(st.lists(tensors(), min_size=1, max_size=3))
    doc: dict[str, Any] = {"inputs": [tensor for tensor, _ in parts]}
    if draw(st.booleans()):
        doc["outputs"] = draw(outputs | json_values)
    if draw(st.booleans()):
        doc["parameters"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "binary_data_output": st.booleans() | json_values,
                    "timeout": st.integers(-5, 10**7) | json_values,
                },
            )
        )
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=6) | json_values)
    header = orjson.dumps(doc)
    blob = b"".join(chunk for _, chunk in parts) + draw(
        st.sampled_from([b""] * 8 + [b"\x00", b"junk"])
    )
    choice = draw(st.sampled_from(["right"] * 6 + ["none", "off", "random"]))
    if choice == "right":
        length: str | None = str(len(header)) if blob or draw(st.booleans()) else None
    elif choice == "none":
        length = None
    elif choice == "off":
        length = str(len(header) + draw(st.integers(-40, 40)))
    else:
        length = draw(
            st.integers(-(2**66), 2**66).map(str) | st.text("0123456789+-_ xe.", max_size=10)
        )
    return header + blob, length


# -- the properties ------------------------------------------------------------------------------


@FUZZ
@given(request=infer_bodies())
def test_structured_bodies_parse_consistently_or_are_refused(
    request: tuple[bytes, str | None],
) -> None:
    check(*request)


@FUZZ
@given(doc=json_values, header_length=st.none() | st.integers(-2, 64).map(str))
def test_random_json_is_refused_or_parsed(doc: Any, header_length: str | None) -> None:
    body = orjson.dumps(doc if not isinstance(doc, dict) else {"inputs": [doc]})
    check(body, header_length)


@FUZZ
@given(
    body=st.binary(max_size=512),
    header_length=st.none() | st.integers(-2, 600).map(str) | st.text(max_size=6),
)
def test_random_bytes_are_refused(body: bytes, header_length: str | None) -> None:
    check(body, header_length)


@FUZZ
@given(
    header_length=st.integers(-8, 64),
    tail=st.binary(max_size=64),
    size=st.integers(-4, 80),
    datatype=st.sampled_from(list(DATATYPES)),
    shape=shapes,
)
def test_binary_extension_with_random_header_lengths_and_sizes(
    header_length: int, tail: bytes, size: int, datatype: str, shape: list[int]
) -> None:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    check(head + tail, str(len(head) + header_length))
