"""Signature: read from a tiny ONNX graph, and feeds checked against it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferno.errors import DataMismatchError
from inferno.models.signature import Signature, TensorSpec


def _graph() -> onnx.ModelProto:
    """ids int64 [batch, seq] and scale float32 [batch, 1] (plus an initializer listed as an
    input, as old exporters did) → out float32 [batch, 3], unnamed int64 [?]."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    scale = helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["batch", 1])
    weight = helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, 3])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])
    count = helper.make_tensor_value_info("count", TensorProto.INT64, [None])
    nodes = [
        helper.make_node("MatMul", ["scale", "W"], ["out"]),
        helper.make_node("Shape", ["ids"], ["count"]),
    ]
    init = [numpy_helper.from_array(np.ones((1, 3), np.float32), "W")]
    graph = helper.make_graph(nodes, "tiny", [ids, scale, weight], [out, count], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def signature() -> Signature:
    return Signature.from_onnx(_graph())


def test_from_onnx_reads_names_dtypes_and_dims(signature: Signature) -> None:
    assert signature.input_names == ("ids", "scale")  # the initializer W is not an input
    assert signature.inputs[0] == TensorSpec("ids", "int64", ("batch", "seq"))
    assert signature.inputs[1] == TensorSpec("scale", "float32", ("batch", 1))
    assert signature.outputs[0].describe() == "float32 [batch, 3]"
    assert signature.outputs[1].shape == ("dim0",)  # an unnamed dynamic axis gets a name


def test_round_trips_through_a_dict(signature: Signature) -> None:
    assert Signature.from_dict(signature.to_dict()) == signature


def test_check_feeds_accepts_fitting_arrays(signature: Signature) -> None:
    signature.check_feeds({
        "ids": np.zeros((2, 7), np.int64), "scale": np.zeros((2, 1), np.float32),
    })


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"ids": np.zeros((2, 7), np.int64)}, r"missing \['scale'\]"),
        (
            {"ids": np.zeros((2, 7), np.int64), "scale": np.zeros((2, 1), np.float32),
             "extra": np.zeros(2)},
            r"unknown \['extra'\]",
        ),
        (
            {"ids": np.zeros((2, 7), np.float32), "scale": np.zeros((2, 1), np.float32)},
            r"input 'ids': expected int64 \[batch, seq\], got float32 \[2, 7\]",
        ),
        (
            {"ids": np.zeros((2,), np.int64), "scale": np.zeros((2, 1), np.float32)},
            r"input 'ids': expected int64 \[batch, seq\], got int64 \[2\]",
        ),
        (
            {"ids": np.zeros((2, 7), np.int64), "scale": np.zeros((2, 4), np.float32)},
            r"input 'scale': expected float32 \[batch, 1\], got float32 \[2, 4\]",
        ),
    ],
    ids=["missing", "unknown", "dtype", "rank", "fixed-dim"],
)
def test_check_feeds_names_what_is_wrong(signature: Signature, feeds: dict[str, np.ndarray],
                                         message: str) -> None:
    with pytest.raises(DataMismatchError, match=message):
        signature.check_feeds(feeds)
