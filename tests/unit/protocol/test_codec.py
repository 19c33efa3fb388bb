"""The shared tensor codec: bytes both ways, JSON values, request encoding, response decoding."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from inferno.errors import UserInputError
from inferno.protocol.codec import (
    encode_request,
    error_body,
    error_text,
    request_headers,
    response_outputs,
    split_body,
    tensor_bytes,
    tensor_from_bytes,
)
from inferno.protocol.metadata import TensorSpec


def test_raw_bytes_follow_the_binary_extension() -> None:  # was tests/unit/bench/test_inputs.py
    text = np.array(["ab", "ünï"], dtype=object)
    assert tensor_bytes(text, "BYTES") == b"\x02\x00\x00\x00ab\x05\x00\x00\x00" + "ünï".encode()
    values = np.array([[1.0, -2.5]], np.float32)
    assert tensor_bytes(values, "FP32") == values.astype("<f4").tobytes()
    assert tensor_bytes(values, "BF16") == np.array([0x3F80, 0xC020], "<u2").tobytes()
    assert tensor_bytes(values.astype(np.float16), "FP16") == values.astype("<f2").tobytes()
    assert tensor_bytes(np.array([True, False]), "BOOL") == b"\x01\x00"
    assert tensor_bytes(np.array([1, 2]), "INT64") == np.array([1, 2], "<i8").tobytes()


@pytest.mark.parametrize(("datatype", "array"), [
    ("FP32", np.array([1.5, -2.0, np.nan], np.float32)),
    ("INT8", np.array([-128, 0, 127], np.int8)),
    ("UINT64", np.array([0, 2**64 - 1], np.uint64)),
    ("BOOL", np.array([True, False])),
    ("BYTES", np.array([b"", b"a\x00b", "ü".encode()], dtype=object)),
])
def test_bytes_round_trip(datatype: str, array: np.ndarray) -> None:
    back = tensor_from_bytes(tensor_bytes(array, datatype), datatype, len(array), "input 'x'")
    if datatype == "BYTES":
        assert list(back) == list(array)
    else:
        np.testing.assert_array_equal(back, array)


def test_wrong_sizes_name_the_tensor() -> None:
    with pytest.raises(UserInputError, match=r"input 'x': expected 8 bytes \(2 FP32 elements\)"):
        tensor_from_bytes(b"\x00" * 4, "FP32", 2, "input 'x'")
    with pytest.raises(UserInputError, match=r"output 'y': BYTES element 0: expected a 4-byte length"):
        tensor_from_bytes(b"\x01", "BYTES", 1, "output 'y'")
    with pytest.raises(UserInputError, match="Inference-Header-Content-Length"):
        split_body(b"{}", "9")
    assert split_body(b"{}xy", "2") == (b"{}", b"xy")


def test_json_request_has_flat_data_and_no_parameters_unless_asked() -> None:
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    body, length = encode_request([("x", "FP32", x), ("t", "BYTES", np.array(["hi", b"yo"], dtype=object))])
    assert length == len(body)
    assert orjson.loads(body) == {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [0.0, 1.0, 2.0, 3.0]},
        {"name": "t", "datatype": "BYTES", "shape": [2], "data": ["hi", "yo"]},
    ]}
    body, _ = encode_request([("x", "FP32", x)], binary_output=False, outputs=["y"])
    doc = orjson.loads(body)
    assert doc["parameters"] == {"binary_data_output": False}
    assert doc["outputs"] == [{"name": "y", "parameters": {"binary_data": False}}]


def test_binary_request_and_its_headers() -> None:
    x = np.arange(3, dtype=np.int64)
    body, length = encode_request([("x", "INT64", x)], binary=True, binary_output=True)
    header = orjson.loads(body[:length])
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 24}
    assert header["parameters"] == {"binary_data_output": True}
    assert body[length:] == x.astype("<i8").tobytes()
    assert request_headers(True, length) == {"Content-Type": "application/octet-stream",
                                             "Inference-Header-Content-Length": str(length)}
    assert request_headers(False, length) == {"Content-Type": "application/json"}


def test_response_outputs_decode_json_and_binary_lazily() -> None:
    probs = np.array([[0.25, 0.75]], np.float32)
    header = orjson.dumps({"model_name": "m", "outputs": [
        {"name": "odd", "datatype": "BF16", "shape": [1], "parameters": {"binary_data_size": 2}},
        {"name": "p", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]},
    ]})
    body = header + b"\x00\x00" + probs.tobytes()
    outputs = list(response_outputs(body, str(len(header))))
    assert [o.spec for o in outputs] == [TensorSpec("odd", "BF16", (1,)), TensorSpec("p", "FP32", (1, 2)),
                                         TensorSpec("label", "INT64", (1,))]
    np.testing.assert_array_equal(outputs[1].array(), probs)  # the BF16 one before it is never decoded
    np.testing.assert_array_equal(outputs[2].array(), np.array([1], np.int64))
    with pytest.raises(KeyError):
        outputs[0].array()


def test_error_bodies() -> None:
    assert error_body("queue full") == b'{"error":"queue full"}'
    assert error_text(b'{"error": "no such model"}') == "no such model"
    assert error_text(b"") == "empty body"
    assert error_text(b"<html>oops</html>") == "<html>oops</html>"
