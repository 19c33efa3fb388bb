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
    assert signature.outputs[1].shape == ("?count.0",)  # an unnamed axis gets a name of its own
    assert signature.outputs[1].describe() == "int64 [?]"


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


def _value(name: str, elem: int, dims: list[object]) -> onnx.ValueInfoProto:
    value = helper.make_tensor_value_info(name, elem, None)
    shape = value.type.tensor_type.shape
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        elif isinstance(d, int):
            dim.dim_value = d  # -1 and 0 are what some exporters write for "dynamic"
    return value


def _signature(inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> Signature:
    graph = helper.make_graph([], "io", inputs, outputs)
    return Signature.from_onnx(helper.make_model(graph))


def test_batch_on_axis_1_and_a_scalar_input() -> None:
    """silero-vad: input [batch, sequence], state [2, batch, 128], sr [] (one value per call)."""
    sig = _signature(
        [_value("input", TensorProto.FLOAT, ["batch", "sequence"]),
         _value("state", TensorProto.FLOAT, [2, "batch", 128]),
         _value("sr", TensorProto.INT64, [])],
        [_value("output", TensorProto.FLOAT, ["batch", 1]),
         _value("stateN", TensorProto.FLOAT, ["AddstateN_dim_0", "batch", "AddstateN_dim_2"])],
    )
    assert [s.batch_axis for s in sig.inputs] == [0, 1, None]
    assert [s.batch_axis for s in sig.outputs] == [0, 1]
    assert sig.batched and not sig.batch_first
    assert sig.rows({"input": np.zeros((3, 512)), "state": np.zeros((2, 3, 128)), "sr": np.array(16000)}) == 3
    assert sig.inputs[1].row_shape() == (2, 128)
    assert Signature.from_dict(sig.to_dict()) == sig


def test_unnamed_and_minus_one_axes_are_each_their_own() -> None:
    """``x [-1, 3, ?, ?]``: -1 is dynamic, not a fixed size; the two unnamed axes are not one."""
    sig = _signature([_value("x", TensorProto.FLOAT, [-1, 3, None, None])],
                     [_value("y", TensorProto.FLOAT, [-1, 2])])
    x = sig.inputs[0]
    assert all(isinstance(d, str) for d in (x.shape[0], x.shape[2], x.shape[3]))
    assert len({x.shape[0], x.shape[2], x.shape[3]}) == 3
    assert x.describe() == "float32 [?, 3, ?, ?]"
    assert x.batch_axis == 0 and sig.outputs[0].batch_axis == 0


def test_unnamed_state_axis_is_the_batch_and_fixed_tensors_have_none() -> None:
    sig = _signature(
        [_value("input", TensorProto.FLOAT, [None, None]),
         _value("state", TensorProto.FLOAT, [2, None, 128]),
         _value("h", TensorProto.FLOAT, [1, 1, 128])],
        [_value("out", TensorProto.FLOAT, [None, 1])],
    )
    assert [s.batch_axis for s in sig.inputs] == [0, 1, None]


def test_old_plans_without_batch_axes_read_as_axis_0() -> None:
    spec = TensorSpec.from_dict({"name": "x", "dtype": "float32", "shape": ["batch", 4]})
    scalar = TensorSpec.from_dict({"name": "sr", "dtype": "int64", "shape": []})
    assert spec.batch_axis == 0 and scalar.batch_axis is None


def test_a_named_width_beside_a_fixed_leading_axis_is_not_the_batch() -> None:
    """ddddocr's ``input1 [1, 1, 64, image_width]``: the width is not rows."""
    sig = _signature([_value("input1", TensorProto.FLOAT, [1, 1, 64, "image_width"])],
                     [_value("out", TensorProto.FLOAT, [1, "seqlen"])])
    assert sig.inputs[0].batch_axis is None
