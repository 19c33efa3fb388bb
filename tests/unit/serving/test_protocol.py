"""Infer bodies: JSON tensors, Triton's binary tensor extension, and every refusal."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient

from inferno.errors import UserInputError
from inferno.protocol.datatypes import datatype_of
from inferno.serving.protocol import (
    InputTensor,
    OutputTensor,
    RequestedOutput,
    encode_infer_response,
    parse_infer_request,
)

Client = httpclient.InferenceServerClient


def body(*inputs: dict[str, Any], **fields: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **fields})


def tensor(
    name: str, datatype: str, shape: Any, data: Any = None, **parameters: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if data is not None:
        out["data"] = data
    if parameters:
        out["parameters"] = parameters
    return out


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, str]:
    """A binary-extension body by hand: the JSON header, then raw bytes; and the header length."""
    head = orjson.dumps(header)
    return head + b"".join(chunks), str(len(head))


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def nested(depth: int) -> list[Any]:
    data: list[Any] = [1.0]
    for _ in range(depth - 1):
        data = [data]
    return data


def refusal(raw: bytes, header_length: str | None = None) -> str:
    with pytest.raises(UserInputError) as info:
        parse_infer_request(raw, header_length)
    return str(info.value)


# --- JSON tensors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "values", "dtype"),
    [
        ("BOOL", [True, False, True, True], np.bool_),
        ("UINT8", [0, 1, 200, 255], np.uint8),
        ("UINT16", [0, 1, 65535, 7], np.uint16),
        ("UINT32", [0, 1, 2**32 - 1, 7], np.uint32),
        ("UINT64", [0, 1, 2**64 - 1, 2**63], np.uint64),
        ("INT8", [-128, 127, 0, -1], np.int8),
        ("INT16", [-(2**15), 2**15 - 1, 0, 5], np.int16),
        ("INT32", [-(2**31), 2**31 - 1, 0, 5], np.int32),
        ("INT64", [-(2**63), 2**63 - 1, 0, 5], np.int64),
        ("FP16", [0.5, -2.0, 65504.0, 0.0], np.float16),
        ("FP32", [1.5, -2.25, 3, 1e-3], np.float32),
        ("FP64", [1.5, -2.25, 3, 1e-300], np.float64),
    ],
)
def test_json_data_of_every_numeric_datatype(datatype: str, values: list[Any], dtype: type) -> None:
    expected: np.ndarray = np.array(values, dtype=dtype).reshape(2, 2)
    for data in (values, expected.tolist()):  # flat and nested
        request = parse_infer_request(body(tensor("x", datatype, [2, 2], data)))
        parsed = request.inputs["x"]
        assert (parsed.name, parsed.datatype, parsed.shape) == ("x", datatype, (2, 2))
        assert parsed.data.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(parsed.data, expected)


def test_json_bytes_are_utf8_encoded_strings() -> None:
    request = parse_infer_request(body(tensor("text", "BYTES", [3, 1], [["héllo"], [""], ["a b"]])))
    parsed = request.inputs["text"]
    assert parsed.shape == (3, 1) and parsed.data.dtype == object
    assert parsed.data.reshape(-1).tolist() == ["héllo".encode(), b"", b"a b"]


def test_json_scalar_and_empty_shapes() -> None:
    request = parse_infer_request(
        body(tensor("s", "INT32", [], [7]), tensor("e", "FP32", [0, 3], []))
    )
    assert request.inputs["s"].data.shape == () and int(request.inputs["s"].data) == 7
    assert request.inputs["e"].data.shape == (0, 3)


def test_request_fields_and_defaults() -> None:
    request = parse_infer_request(body(tensor("x", "INT8", [1], [1])))
    assert request.outputs is None and request.binary_output is False
    assert request.id is None and request.timeout_us is None and request.parameters == {}
    request = parse_infer_request(
        body(
            tensor("x", "INT8", [1], [1]),
            id="req-7",
            parameters={"binary_data_output": True, "timeout": 2500, "custom": "kept"},
            outputs=[
                {"name": "a"},
                {"name": "b", "parameters": {"binary_data": False, "classification": 3}},
            ],
        )
    )
    assert request.id == "req-7" and request.timeout_us == 2500 and request.binary_output is True
    assert request.parameters["custom"] == "kept"
    assert request.outputs == (RequestedOutput("a", True, 0), RequestedOutput("b", False, 3))


# --- the binary tensor extension ------------------------------------------------------------


def test_binary_inputs_by_hand() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    ids = np.array([-5, 2**40], dtype=np.int64)
    words = [b"ab", b"", b"\x00\xff\x10"]
    raw, length = binary_body(
        {
            "inputs": [
                tensor("x", "FP32", [2, 3], binary_data_size=x.nbytes),
                tensor("json", "INT32", [2], [4, 5]),
                tensor("ids", "INT64", [2], binary_data_size=ids.nbytes),
                tensor("words", "BYTES", [3], binary_data_size=len(length_prefixed(*words))),
            ]
        },
        x.tobytes(),
        ids.tobytes(),
        length_prefixed(*words),
    )
    request = parse_infer_request(raw, length)
    np.testing.assert_array_equal(request.inputs["x"].data, x)
    np.testing.assert_array_equal(request.inputs["ids"].data, ids)
    np.testing.assert_array_equal(request.inputs["json"].data, np.array([4, 5], dtype=np.int32))
    assert request.inputs["words"].data.tolist() == words
    assert (
        request.inputs["x"].data.dtype == np.float32
        and request.inputs["ids"].data.dtype == np.int64
    )


def test_header_length_equal_to_the_body_means_no_binary_part() -> None:
    raw = body(tensor("x", "INT8", [1], [3]))
    assert parse_infer_request(raw, str(len(raw))).inputs["x"].data.tolist() == [3]


def _triton_input(
    name: str, array: np.ndarray, datatype: str, binary: bool
) -> httpclient.InferInput:
    tensor_in = httpclient.InferInput(name, list(array.shape), datatype)
    tensor_in.set_data_from_numpy(array, binary_data=binary)
    return tensor_in


ARRAYS: dict[str, tuple[np.ndarray, str]] = {
    "fp32": (np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "FP32"),
    "fp16": (np.array([[0.5, -1.25], [3.0, 0.0]], dtype=np.float16), "FP16"),
    "fp64": (np.array([np.pi, -np.e], dtype=np.float64), "FP64"),
    "int8": (np.array([[-128, 0, 127]], dtype=np.int8), "INT8"),
    "int64": (np.array([[1, -(2**62)], [7, 0]], dtype=np.int64), "INT64"),
    "uint16": (np.array([0, 65535], dtype=np.uint16), "UINT16"),
    "bool": (np.array([[True, False, True]]), "BOOL"),
    "text": (np.array([["héllo".encode()], [b""], [b"\x00\x01"]], dtype=object), "BYTES"),
}


@pytest.mark.parametrize("binary", [True, False])
def test_bodies_from_tritonclients_encoder(binary: bool) -> None:
    arrays = dict(ARRAYS)
    if not binary:
        arrays["text"] = (np.array([["héllo".encode()], [b""], [b"plain"]], dtype=object), "BYTES")
    inputs = [
        _triton_input(name, array, datatype, binary) for name, (array, datatype) in arrays.items()
    ]
    outputs = [httpclient.InferRequestedOutput("y", binary_data=True, class_count=3)]
    raw, json_size = Client.generate_request_body(
        inputs, outputs=outputs, request_id="r1", timeout=1500
    )
    assert (json_size is not None) == binary
    request = parse_infer_request(raw, None if json_size is None else str(json_size))
    assert list(request.inputs) == list(arrays)
    for name, (array, datatype) in arrays.items():
        parsed = request.inputs[name]
        assert (parsed.datatype, parsed.shape) == (datatype, array.shape)
        if datatype == "BYTES":
            assert parsed.data.tolist() == array.tolist()
        else:
            assert parsed.data.dtype == array.dtype
            np.testing.assert_array_equal(parsed.data, array)
    assert request.id == "r1" and request.timeout_us == 1500
    assert request.outputs == (RequestedOutput("y", True, 3),)


def test_tritonclient_without_outputs_asks_for_binary_outputs() -> None:
    array = np.ones((2, 2), dtype=np.float32)
    raw, json_size = Client.generate_request_body([_triton_input("x", array, "FP32", True)])
    request = parse_infer_request(raw, str(json_size))
    assert request.outputs is None and request.binary_output is True
    np.testing.assert_array_equal(request.inputs["x"].data, array)


# --- refusals -------------------------------------------------------------------------------


def _fp32(name: str, n: int) -> dict[str, Any]:
    return tensor(name, "FP32", [n], binary_data_size=4 * n)


@pytest.mark.parametrize(
    ("raw", "header_length", "fragments"),
    [
        pytest.param(
            body(tensor("x", "FP32", [2, 2], [1, 2, 3])),
            None,
            ["input 'x'", "expected 4 elements", "got 3"],
            id="json-count",
        ),
        pytest.param(
            body(tensor("x", "FP32", [2, 2], [[1, 2], [3, 4], [5, 6]])),
            None,
            ["input 'x'", "nested as its shape [2, 2]", "a list of 2 at data", "got a list of 3"],
            id="json-nested-count",
        ),
        pytest.param(
            *binary_body({"inputs": [tensor("x", "FP32", [2], binary_data_size=12)]}, bytes(12)),
            ["input 'x'", "expected 8 bytes (2 FP32 elements)", "got binary_data_size 12"],
            id="binary-size",
        ),
        pytest.param(
            *binary_body({"inputs": [_fp32("x", 2)]}, bytes(12)),
            ["expected 8 bytes", "got 12"],
            id="leftover-bytes",
        ),
        pytest.param(
            *binary_body({"inputs": [_fp32("x", 2), _fp32("y", 3)]}, bytes(16)),
            ["input 'y'", "expected at most 8", "got binary_data_size 12"],
            id="binary-beyond-body",
        ),
        pytest.param(
            *binary_body(
                {"inputs": [tensor("w", "BYTES", [2], binary_data_size=11)]},
                length_prefixed(b"ab") + struct.pack("<I", 10) + b"x",
            ),
            ["input 'w'", "BYTES element 1", "expected at most 1 bytes", "claims 10 bytes"],
            id="bytes-truncated",
        ),
        pytest.param(
            *binary_body(
                {"inputs": [tensor("w", "BYTES", [2], binary_data_size=10)]},
                length_prefixed(b"abcd") + b"\x01\x00",
            ),
            ["input 'w'", "BYTES element 1", "expected a 4-byte length", "got 2"],
            id="bytes-truncated-length",
        ),
        pytest.param(
            *binary_body(
                {"inputs": [tensor("w", "BYTES", [3], binary_data_size=10)]},
                length_prefixed(b"ab", b""),
            ),
            ["input 'w'", "expected 3 elements", "got 2"],
            id="bytes-count",
        ),
        pytest.param(
            b"{nope", None, ["request body", "expected JSON", "got invalid JSON"], id="not-json"
        ),
        pytest.param(
            b"[1, 2]",
            None,
            ["request body", "expected a JSON object", "got a list"],
            id="not-object",
        ),
        pytest.param(
            b"{}", None, ["'inputs'", "expected a non-empty list", "got null"], id="no-inputs"
        ),
        pytest.param(
            body(), None, ["'inputs'", "expected a non-empty list", "got a list"], id="empty-inputs"
        ),
        pytest.param(b'{"inputs": 3}', None, ["'inputs'", "got a number"], id="inputs-number"),
        pytest.param(
            b'{"inputs": ["x"]}',
            None,
            ["inputs[0]", "expected a tensor object", "got a string"],
            id="input-not-object",
        ),
        pytest.param(
            body({"datatype": "FP32", "shape": [1], "data": [1]}),
            None,
            ["inputs[0].name", "expected a non-empty string", "got None"],
            id="no-name",
        ),
        pytest.param(
            body(tensor("x", "INT8", [1], [1]), tensor("x", "INT8", [1], [2])),
            None,
            ["input 'x'", "expected unique", "got 'x' twice"],
            id="duplicate",
        ),
        pytest.param(
            body(tensor("x", "FLOAT32", [1], [1])),
            None,
            ["input 'x'", "expected a datatype among", "FP32", "got 'FLOAT32'"],
            id="datatype",
        ),
        pytest.param(
            body(tensor("x", "FP32", [-1, 2], [1, 2])),
            None,
            ["input 'x'", "expected 'shape'", "got [-1, 2]"],
            id="negative-shape",
        ),
        pytest.param(
            body(tensor("x", "FP32", [2.0], [1, 2])),
            None,
            ["input 'x'", "expected 'shape'", "got [2.0]"],
            id="float-shape",
        ),
        pytest.param(
            body(tensor("x", "FP32", [True], [1])),
            None,
            ["input 'x'", "expected 'shape'", "got [True]"],
            id="bool-shape",
        ),
        pytest.param(
            body(tensor("x", "FP32", "2", [1, 2])),
            None,
            ["input 'x'", "expected 'shape'", "got '2'"],
            id="string-shape",
        ),
        pytest.param(
            body(tensor("x", "FP32", [2], [1.0, "2.0"])),
            None,
            ["input 'x'", "expected numbers", "got a string '2.0'"],
            id="string-in-numbers",
        ),
        pytest.param(
            body(tensor("x", "INT32", [2], [1, True])),
            None,
            ["input 'x'", "expected numbers", "got a boolean"],
            id="bool-in-numbers",
        ),
        pytest.param(
            body(tensor("x", "INT32", [2], [1, 2.5])),
            None,
            ["input 'x'", "expected integers", "got 2.5"],
            id="float-in-int",
        ),
        pytest.param(
            body(tensor("x", "INT8", [2], [1, 300])),
            None,
            ["input 'x'", "expected values that fit INT8", "got"],
            id="int8-range",
        ),
        pytest.param(
            body(tensor("x", "UINT8", [1], [-1])),
            None,
            ["input 'x'", "expected values that fit UINT8", "got"],
            id="uint8-negative",
        ),
        pytest.param(
            body(tensor("x", "INT64", [1], [2**63])),
            None,
            ["input 'x'", "expected values that fit INT64", "got"],
            id="int64-range",
        ),
        pytest.param(
            body(tensor("x", "FP16", [1], [1e6])),
            None,
            ["input 'x'", "expected values that fit FP16", "got"],
            id="fp16-range",
        ),
        pytest.param(
            body(tensor("x", "BOOL", [2], [True, 1])),
            None,
            ["input 'x'", "expected true/false", "got a number 1"],
            id="number-in-bool",
        ),
        pytest.param(
            body(tensor("x", "BYTES", [2], ["a", 1])),
            None,
            ["input 'x'", "expected strings", "got a number"],
            id="number-in-bytes",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1], 5)),
            None,
            ["input 'x'", "expected 'data' as a list", "got a number"],
            id="data-not-list",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1], nested(34))),
            None,
            ["input 'x'", "expected 'data' nested at most 32", "got"],
            id="too-deep",
        ),
        pytest.param(
            *binary_body(
                {"inputs": [tensor("x", "FP32", [1], [1.0], binary_data_size=4)]}, bytes(4)
            ),
            ["input 'x'", "expected 'data' or binary_data_size", "got both"],
            id="data-and-binary",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1])),
            None,
            ["input 'x'", "expected 'data' or parameters.binary_data_size", "got neither"],
            id="no-data",
        ),
        pytest.param(
            *binary_body({"inputs": [tensor("x", "FP32", [1], binary_data_size=-4)]}, bytes(4)),
            ["input 'x'", "expected binary_data_size as an integer >= 0", "got -4"],
            id="negative-binary-size",
        ),
        pytest.param(
            body(
                tensor(
                    "x",
                    "FP32",
                    [1],
                    [1],
                ),
                parameters={"timeout": -1},
            ),
            None,
            ["parameter 'timeout'", "expected microseconds", "got -1"],
            id="negative-timeout",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1], [1]), parameters={"timeout": 1.5}),
            None,
            ["parameter 'timeout'", "got 1.5"],
            id="float-timeout",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1], [1]), parameters={"timeout": "10"}),
            None,
            ["parameter 'timeout'", "got '10'"],
            id="string-timeout",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1], [1]), parameters={"binary_data_output": "yes"}),
            None,
            ["'binary_data_output'", "expected true or false", "got 'yes'"],
            id="binary-output-flag",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1], [1]), parameters={"binary_data_output": 1}),
            None,
            ["'binary_data_output'", "expected true or false", "got 1"],
            id="binary-output-int",
        ),
        pytest.param(
            body(
                tensor("x", "FP32", [1], [1]),
                outputs=[{"name": "y", "parameters": {"binary_data": "true"}}],
            ),
            None,
            ["output 'y'", "'binary_data'", "expected true or false", "got 'true'"],
            id="output-binary-flag",
        ),
        pytest.param(
            body(
                tensor("x", "FP32", [1], [1]),
                outputs=[{"name": "y", "parameters": {"classification": -1}}],
            ),
            None,
            ["output 'y'", "expected classification as an integer >= 0", "got -1"],
            id="classification-negative",
        ),
        pytest.param(
            body(
                tensor("x", "FP32", [1], [1]),
                outputs=[{"name": "y", "parameters": {"classification": "3"}}],
            ),
            None,
            ["output 'y'", "classification", "got '3'"],
            id="classification-string",
        ),
        pytest.param(
            body(
                tensor("x", "FP32", [1], [1]),
                outputs=[{"name": "y", "parameters": {"classification": 2.0}}],
            ),
            None,
            ["output 'y'", "classification", "got 2.0"],
            id="classification-float",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1], [1]), outputs={"name": "y"}),
            None,
            ["'outputs'", "expected a list", "got an object"],
            id="outputs-not-list",
        ),
        pytest.param(
            body(
                tensor("x", "FP32", [1], [1]),
                outputs=[
                    {"name": "embedding"},
                    {"name": "b"},
                    {"name": "c"},
                    {"name": "embedding"},
                ],
            ),
            None,
            ["outputs[3]: expected unique output names, got 'embedding' again"],
            id="duplicate-output",
        ),
        pytest.param(
            body(
                tensor("x", "FP32", [1], [1]),
                outputs=[{"name": "y", "parameters": {"binary_data": True}}, {"name": "y"}],
            ),
            None,
            ["outputs[1]: expected unique output names, got 'y' again"],
            id="duplicate-output-other-format",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1], [1]), outputs=[{"parameters": {}}]),
            None,
            ["outputs[0]", "expected an object with a string 'name'", "got"],
            id="output-no-name",
        ),
        pytest.param(
            body(tensor("x", "FP32", [1], [1]), parameters=[1]),
            None,
            ["request", "expected 'parameters' as an object", "got a list"],
            id="parameters-list",
        ),
        pytest.param(
            body(
                tensor(
                    "x",
                    "FP32",
                    [1],
                    [1],
                ),
                id=7,
            ),
            None,
            ["'id'", "expected a string", "got a number"],
            id="id-number",
        ),
    ],
)
def test_refusals_name_the_input_and_say_what_was_expected_and_found(
    raw: bytes, header_length: str | None, fragments: list[str]
) -> None:
    message = refusal(raw, header_length)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("header_length", ["abc", "0", "-5", "1.5", "BIG"])
def test_bad_header_lengths_are_refused(header_length: str) -> None:
    raw = body(tensor("x", "INT8", [1], [1]))
    message = refusal(raw, header_length)
    assert "Inference-Header-Content-Length" in message
    assert f"expected a length between 1 and the body size {len(raw)}" in message
    assert f"got {header_length!r}" in message


def test_a_header_length_beyond_the_body_is_refused() -> None:
    raw = body(tensor("x", "INT8", [1], [1]))
    assert f"got '{len(raw) + 1}'" in refusal(raw, str(len(raw) + 1))


def test_a_header_length_that_cuts_the_json_is_refused_as_invalid_json() -> None:
    raw = body(tensor("x", "INT8", [1], [1]))
    assert "expected JSON" in refusal(raw, str(len(raw) - 3))


def test_a_repeated_output_name_is_refused_before_any_tensor_is_serialized() -> None:
    # issue 15: 4000 copies of one output made a 84 kB request answer 1.21 GB
    raw = body(tensor("text", "BYTES", [1], ["hi"]), outputs=[{"name": "embedding"}] * 4000)
    assert refusal(raw) == "outputs[1]: expected unique output names, got 'embedding' again"


# --- nested JSON data must be the shape -----------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "data", "fragments"),
    [
        pytest.param(
            [2, 2],
            [[1, 2, 3], [4]],
            ["a list of 2 at data[0]", "got a list of 3"],
            id="ragged-rows",
        ),
        pytest.param(
            [2, 2], [[1, 2], [3], [4]], ["a list of 2 at data,", "got a list of 3"], id="extra-row"
        ),
        pytest.param(
            [2, 2], [[1, 2], 3, 4], ["a list of 2 at data,", "got a list of 3"], id="mixed-top"
        ),
        pytest.param(
            [2, 2], [[1, 2], [3, [4]]], ["a value at data[1][1]", "got a list"], id="mixed-leaf"
        ),
        pytest.param(
            [4],
            [[1, 2], [3, 4]],
            ["a list of 4 at data,", "got a list of 2"],
            id="nested-for-rank-1",
        ),
        pytest.param(
            [2], [[1, 2]], ["a list of 2 at data,", "got a list of 1"], id="one-row-too-few"
        ),
        pytest.param(
            [2, 2], [[1, 2, 3, 4]], ["a list of 2 at data,", "got a list of 1"], id="rank-2-one-row"
        ),
        pytest.param(
            [2, 2],
            [[[1], [2]], [[3], [4]]],
            ["a value at data[0][0]", "got a list"],
            id="deeper-than-shape",
        ),
        pytest.param(
            [2, 1, 2],
            [[[1, 2]], [3, 4]],
            ["a list of 1 at data[1]", "got a list of 2"],
            id="ragged-depth",
        ),
        pytest.param(
            [2, 2], [[1, 2], "ab"], ["a list of 2 at data[1]", "got a string"], id="string-row"
        ),
        pytest.param([], [[7]], ["a value at data,", "got a list"], id="nested-scalar"),
        pytest.param(
            [2, 0], [[], [1]], ["a list of 0 at data[1]", "got a list of 1"], id="empty-rows"
        ),
    ],
)
def test_nested_data_that_is_not_its_shape_is_refused(
    shape: list[int], data: list[Any], fragments: list[str]
) -> None:
    message = refusal(body(tensor("x", "FP32", shape, data)))
    for fragment in [
        "input 'x'",
        f"expected 'data' flat or nested as its shape {shape}",
        *fragments,
    ]:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(
    ("datatype", "shape", "data"),
    [
        ("FP32", [2, 2], [1, 2, 3, 4]),  # flat: the protocol allows it
        ("FP32", [2, 2], [[1, 2], [3, 4]]),
        ("INT64", [2, 1, 3], [[[1, 2, 3]], [[4, 5, 6]]]),
        ("BYTES", [1, 2], [["a", "b"]]),
        ("BOOL", [2, 1], [[True], [False]]),
        ("FP32", [2, 0], [[], []]),
        ("FP32", [0, 3], []),
        ("FP32", [3, 0, 2], [[], [], []]),
        ("INT32", [], [7]),
        ("FP32", [1] * 32, nested(32)),  # the depth limit, reached
    ],
)
def test_flat_and_regular_nested_data_are_accepted(
    datatype: str, shape: list[int], data: Any
) -> None:
    parsed = parse_infer_request(body(tensor("x", datatype, shape, data))).inputs["x"]
    assert parsed.shape == tuple(shape) and parsed.data.shape == tuple(shape)
    expected = np.array(data, dtype=parsed.data.dtype).reshape(shape)
    if datatype == "BYTES":
        expected = np.vectorize(str.encode, otypes=[object])(expected)
    np.testing.assert_array_equal(parsed.data, expected)


# --- non-finite floats ----------------------------------------------------------------------


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_binary_float_inputs_keep_nan_and_inf_exactly(datatype: str, value: float) -> None:
    # the server's data validation counts or refuses them (validation: count | reject), not the parser
    x = np.array([[0.5, 1.0, 2.0], [value, 3.0, value]], dtype=DATATYPE_DTYPES[datatype])
    raw, length = binary_body(
        {"inputs": [tensor("x", datatype, [2, 3], binary_data_size=x.nbytes)]}, x.tobytes()
    )
    np.testing.assert_array_equal(parse_infer_request(raw, length).inputs["x"].data, x)


def test_binary_float_extremes_that_are_finite_are_accepted() -> None:
    x = np.array(
        [np.finfo(np.float32).max, np.finfo(np.float32).tiny, -0.0, 1e-45], dtype=np.float32
    )
    raw, length = binary_body(
        {"inputs": [tensor("x", "FP32", [4], binary_data_size=x.nbytes)]}, x.tobytes()
    )
    np.testing.assert_array_equal(parse_infer_request(raw, length).inputs["x"].data, x)


DATATYPE_DTYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


# --- responses ------------------------------------------------------------------------------


def test_json_response_carries_data_and_no_header() -> None:
    y = np.array([[1.5, -2.0, 0.25]], dtype=np.float32)
    raw, headers = encode_infer_response("m", "3", [OutputTensor("y", y)], request_id="abc")
    assert headers == {}
    assert orjson.loads(raw) == {
        "model_name": "m",
        "model_version": "3",
        "id": "abc",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 3], "data": [1.5, -2.0, 0.25]}],
    }


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_json_output_with_non_finite_values_is_refused_not_written_as_null(
    dtype: type, value: float
) -> None:
    y = np.array([[1.0, value]], dtype=dtype)
    with pytest.raises(UserInputError) as info:
        encode_infer_response(
            "m", "1", [OutputTensor("ok", np.ones(2, np.float32)), OutputTensor("y", y)]
        )
    message = str(info.value)
    for fragment in ["output 'y'", "non-finite", "binary_data"]:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_binary_outputs_carry_non_finite_values_exactly(dtype: type) -> None:
    y = np.array([[np.nan, np.inf], [-np.inf, 1.5]], dtype=dtype)
    raw, headers = encode_infer_response("m", "1", [OutputTensor("y", y, binary=True)])
    result = Client.parse_response_body(
        raw, header_length=int(headers["inference-header-content-length"])
    )
    np.testing.assert_array_equal(result.as_numpy("y"), y)  # NaN == NaN for assert_array_equal


def test_binary_response_carries_the_header_length_and_raw_bytes() -> None:
    y = np.arange(4, dtype=np.int64).reshape(2, 2)
    raw, headers = encode_infer_response("m", "1", [OutputTensor("y", y, binary=True)])
    n = int(headers["inference-header-content-length"])
    doc = orjson.loads(raw[:n])
    assert "id" not in doc
    assert doc["outputs"] == [
        {"name": "y", "datatype": "INT64", "shape": [2, 2], "parameters": {"binary_data_size": 32}}
    ]
    assert raw[n:] == y.tobytes()


RESPONSE_ARRAYS: list[tuple[str, np.ndarray]] = [
    ("fp32", np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)),
    ("int64", np.array([[2**40, -7, 0]], dtype=np.int64)),
    ("bytes", np.array([b"0.900000:3", "ünï".encode(), b""], dtype=object)),
    ("fp16", np.array([0.5, -1.5], dtype=np.float16)),
    ("bool", np.array([[True], [False]])),
    ("empty", np.zeros((0, 4), dtype=np.float32)),
]


@pytest.mark.parametrize("binary", [True, False])
def test_responses_round_trip_through_tritonclients_parser(binary: bool) -> None:
    outputs = [OutputTensor(name, array, binary) for name, array in RESPONSE_ARRAYS]
    raw, headers = encode_infer_response("m", "1", outputs, request_id="r9")
    length = headers.get("inference-header-content-length")
    assert (length is not None) == binary
    result = Client.parse_response_body(raw, header_length=None if length is None else int(length))
    assert result.get_response()["id"] == "r9"
    for name, array in RESPONSE_ARRAYS:
        parsed = result.as_numpy(name)
        assert parsed.shape == array.shape
        if array.dtype == object:
            # JSON carries BYTES as strings, binary as bytes; the content is the same
            got = [x if isinstance(x, bytes) else x.encode() for x in parsed.reshape(-1)]
            assert got == array.reshape(-1).tolist()
        else:
            assert parsed.dtype == array.dtype
            np.testing.assert_array_equal(parsed, array)


def test_mixed_json_and_binary_outputs_round_trip() -> None:
    a = np.array([1.0, 2.0], dtype=np.float32)
    b = np.array([[3, 4]], dtype=np.int64)
    raw, headers = encode_infer_response(
        "m", "1", [OutputTensor("a", a), OutputTensor("b", b, binary=True)]
    )
    result = Client.parse_response_body(
        raw, header_length=int(headers["inference-header-content-length"])
    )
    np.testing.assert_array_equal(result.as_numpy("a"), a)
    np.testing.assert_array_equal(result.as_numpy("b"), b)


def test_parsed_request_encodes_back_to_the_same_arrays() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    raw, json_size = Client.generate_request_body([_triton_input("x", x, "FP32", True)])
    parsed = parse_infer_request(raw, str(json_size)).inputs["x"]
    out, headers = encode_infer_response("m", "1", [OutputTensor("x", parsed.data, binary=True)])
    result = Client.parse_response_body(
        out, header_length=int(headers["inference-header-content-length"])
    )
    np.testing.assert_array_equal(result.as_numpy("x"), x)


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        ("float32", "FP32"),
        ("float16", "FP16"),
        ("int64", "INT64"),
        ("uint8", "UINT8"),
        ("bool", "BOOL"),
        ("object", "BYTES"),
        ("S5", "BYTES"),
        ("U3", "BYTES"),
    ],
)
def test_datatype_of(dtype: str, datatype: str) -> None:
    assert datatype_of(dtype) == datatype


def test_datatype_of_an_unsupported_dtype_names_it() -> None:
    with pytest.raises(UserInputError, match="complex64"):
        datatype_of("complex64")


def test_raw_bytes_distinguish_bytes_elements() -> None:
    def raw(*items: bytes) -> bytes:
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return InputTensor("t", "BYTES", (len(items),), array).raw()

    assert raw(b"ab", b"c") != raw(b"a", b"bc")
    assert raw(b"ab", b"c") == length_prefixed(b"ab", b"c")


@pytest.mark.parametrize("binary", [True, False])
def test_non_contiguous_outputs_are_sent_in_row_major_order(binary: bool) -> None:
    y = np.arange(6, dtype=np.int32).reshape(2, 3).T  # a transposed view, Fortran order
    raw, headers = encode_infer_response("m", "1", [OutputTensor("y", y, binary)])
    length = headers.get("inference-header-content-length")
    result = Client.parse_response_body(raw, header_length=None if length is None else int(length))
    np.testing.assert_array_equal(result.as_numpy("y"), y)


# --- the OpenAPI document states what parsing enforces ---------------------------------------


def _document() -> dict[str, Any]:
    from inferno.serving.openapi import openapi

    return openapi("0.0.0")


def _validator(schema: dict[str, Any]) -> Any:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    return jsonschema_rs.validator_for(schema)


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON Schema the document holds (the values of its ``schema`` keys)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            else:
                yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    doc = orjson.loads(orjson.dumps(_document()))  # as served: plain JSON
    assert doc["openapi"] == "3.1.0"
    definitions.OPENAPI_31_VALIDATOR.validate(doc)
    schemas = list(_schemas(doc))
    assert len(schemas) > 50
    for schema in schemas:
        jsonschema_rs.meta.validate(
            schema
        )  # each a valid JSON Schema (2020-12, OpenAPI 3.1's dialect)


NAMES_OK = ["digits", "minilm", "a", "9", "A.b_c-1", "m" * 128, "x.."]
NAMES_REFUSED = [
    "",
    "-x",
    ".x",
    "_x",
    "x/y",
    "x y",
    "digits\n",
    "\ndigits",
    "caf\u00e9",
    "m" * 129,
    "a%0A",
]


def _parameter(path: str, method: str, name: str) -> dict[str, Any]:
    operation = _document()["paths"][path][method]
    return next(p for p in operation["parameters"] if p["name"] == name)


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v2/models/{model}", "get"),
        ("/v2/models/{model}/infer", "post"),
        ("/v2/models/{model}/versions/{version}/infer", "post"),
        ("/v2/repository/models/{model}/load", "post"),
    ],
)
def test_the_model_name_pattern_is_the_repositorys(path: str, method: str) -> None:
    from inferno import repository
    from inferno.errors import ConfigError

    schema = _parameter(path, method, "model")["schema"]
    assert schema["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
    valid = _validator(schema)
    assert [n for n in NAMES_OK if not valid.is_valid(n)] == []
    assert [n for n in NAMES_REFUSED if valid.is_valid(n)] == []
    for name in NAMES_OK:
        assert repository.check_name(name) == name
    for name in NAMES_REFUSED:
        with pytest.raises(ConfigError):
            repository.check_name(name)


def test_the_version_pattern_is_canonical_decimal() -> None:
    schema = _parameter("/v2/models/{model}/versions/{version}", "get", "version")["schema"]
    assert schema["pattern"] == "^[1-9][0-9]{0,17}$"
    valid = _validator(schema)
    accepted = ["1", "2", "10", "909", "1" * 18]
    refused = ["", "0", "01", "00", " 1", "1 ", "+1", "-1", "1.0", "%31", "\u0661", "1\n", "1" * 19]
    assert [v for v in accepted if not valid.is_valid(v)] == []
    assert [v for v in refused if valid.is_valid(v)] == []


def test_the_infer_request_schema_states_what_the_parser_refuses() -> None:
    request = _document()["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]
    schema = request["content"]["application/json"]["schema"]
    valid = _validator(schema)
    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 0], "data": []}]}
    assert valid.is_valid(good)
    parse_infer_request(orjson.dumps(good))
    refused = [
        {"inputs": [{"name": "", "datatype": "FP32", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]},
        {"inputs": []},
    ]
    for doc in refused:
        assert not valid.is_valid(doc), doc
        with pytest.raises(UserInputError):
            parse_infer_request(orjson.dumps(doc))
    # an empty output name passes the parser; the model refuses it as an unknown output
    assert not valid.is_valid({**good, "outputs": [{"name": ""}]})
    outputs = schema["properties"]["outputs"]
    assert "unique" in outputs["description"] and "400" in outputs["description"]
    inputs = schema["properties"]["inputs"]["items"]["properties"]
    assert inputs["name"]["minLength"] == 1 and inputs["shape"]["items"]["minimum"] == 0
    assert "nested exactly as 'shape'" in inputs["data"]["description"]


def test_health_bodies_are_declared_as_kserves_sdk_reads_them() -> None:
    paths = _document()["paths"]

    def body_schema(path: str, status: str) -> Any:
        response = paths[path]["get"]["responses"][status]
        return _validator(response["content"]["application/json"]["schema"])

    live = body_schema("/v2/health/live", "200")
    assert (
        live.is_valid({"live": True})
        and not live.is_valid({})
        and not live.is_valid({"live": False})
    )
    ready, not_ready = (
        body_schema("/v2/health/ready", "200"),
        body_schema("/v2/health/ready", "503"),
    )
    assert ready.is_valid({"ready": True}) and not ready.is_valid({"ready": False})
    assert not_ready.is_valid({"ready": False}) and not not_ready.is_valid({})


def test_every_operation_declares_405_with_an_allow_header() -> None:
    missing = []
    for path, item in _document()["paths"].items():
        for method, operation in item.items():
            response = operation["responses"].get("405", {})
            if response.get("headers", {}).get("Allow", {}).get("required") is not True:
                missing.append(f"{method.upper()} {path}")
    assert missing == []


@pytest.mark.parametrize("datatype", [{}, ["FP32"], 3, None, True])
def test_a_datatype_that_is_not_a_string_is_refused_naming_the_input(datatype: Any) -> None:
    # a dict or list used to raise TypeError (unhashable) in the membership test: a 500 (found by Schemathesis)
    message = refusal(body(tensor("x", datatype, [1], [1])))
    assert "input 'x'" in message and "datatype" in message
