"""Input sizes for dynamic axes: ``--shape`` parsing, and the search on tiny graphs built in code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferno.errors import DataMismatchError, ShapeSearchError, UserInputError
from inferno.models.loaders import load_model
from inferno.models.shapes import parse_shapes


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _pyramid(path: Path) -> Path:
    """x [N, 3, H, W] → five 2×2 max-pools → resized ×32 → Concat with x: runs only when H and
    W are multiples of 32 (the failure class of a text detector's feature pyramid)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, "H", "W"])
    nodes, current = [], "x"
    for i in range(5):
        nodes.append(helper.make_node("MaxPool", [current], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
        current = f"p{i}"
    scales = numpy_helper.from_array(np.array([1, 1, 32, 32], np.float32), "scales")
    nodes += [helper.make_node("Resize", [current, "", "scales"], ["up"], mode="nearest"),
              helper.make_node("Concat", ["x", "up"], ["y"], axis=1)]
    return _save(helper.make_graph(nodes, "pyramid", [x], [y], [scales]), path)


def _odd_size(path: Path) -> Path:
    """x [N, 3, H, W] reshaped to [N, 231]: runs only at H × W = 77 (no usual size)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 231])
    shape = numpy_helper.from_array(np.array([-1, 231], np.int64), "shape")
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    return _save(helper.make_graph([node], "odd", [x], [y], [shape]), path)


def _stateful(path: Path) -> Path:
    """audio [batch, sequence] + state [2, batch, 4] + sr [] → out [batch, 1], stateN [2, batch, 4].

    The sequence must be 512 (a VAD frame at 16 kHz: the Reshape says so) and sr 16000."""
    audio = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "sequence"])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 1])
    state_n = helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 4])
    inits = [numpy_helper.from_array(np.array([0, 512], np.int64), "frame"),
             numpy_helper.from_array(np.array(16000, np.int64), "rate")]
    nodes = [
        helper.make_node("Reshape", ["audio", "frame"], ["framed"]),  # fails unless 512 wide
        helper.make_node("ReduceMean", ["framed"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Equal", ["sr", "rate"], ["ok"]),
        helper.make_node("Cast", ["ok"], ["okf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mean", "okf"], ["out"]),
        helper.make_node("Add", ["state", "okf"], ["stateN"]),
    ]
    graph = helper.make_graph(nodes, "stateful", [audio, state, sr], [out, state_n], inits)
    return _save(graph, path, opset=13)


def test_parse_shapes() -> None:
    assert parse_shapes(["x:1,3,320,320", "y:Nx4", "z:?, 2"]) == {
        "x": (1, 3, 320, 320), "y": (None, 4), "z": (None, 2)}


@pytest.mark.parametrize("text", ["x", "x:", ":1,2", "x:1,0", "x:1,a"])
def test_parse_shapes_refuses_bad_items(text: str) -> None:
    with pytest.raises(UserInputError, match=r"--shape"):
        parse_shapes([text])


def test_search_finds_sizes_a_pyramid_accepts(tmp_path: Path) -> None:
    model = load_model(str(_pyramid(tmp_path / "pyramid.onnx")))
    assert model.shapes_source == "probe"
    _, _, h, w = model.shapes["x"]
    assert h % 32 == 0 and w % 32 == 0
    batch = model.preprocessor.encode(model.eval_data.take(2).samples)
    assert batch["x"].shape == (2, 3, h, w)
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, batch)
    assert y.shape == (2, 6, h, w)


def test_no_usual_size_fits_names_the_input_and_suggests_shape(tmp_path: Path) -> None:
    path = _odd_size(tmp_path / "odd.onnx")
    with pytest.raises(ShapeSearchError, match=r"input 'x' float32 \[N, 3, H, W\]: no size tried "
                                               r"ran .*pass --shape x:N,3,SIZE,SIZE or --data") as info:
        load_model(str(path))
    assert isinstance(info.value, DataMismatchError)  # a user's input problem: exit 2


def test_shape_option_fixes_the_sizes(tmp_path: Path) -> None:
    model = load_model(str(_odd_size(tmp_path / "odd.onnx")), shapes=["x:N,3,7,11"])
    assert model.shapes == {"x": (1, 3, 7, 11)} and model.shapes_source == "--shape"
    assert model.signature.inputs[0].shape == ("N", 3, "H", "W")  # serving takes any size


@pytest.mark.parametrize(("item", "message"), [
    ("nope:1,2", r"--shape nope: no such input; the model's inputs are \['x'\]"),
    ("x:1,3,7", r"--shape x: expected 4 dims like float32 \[N, 3, H, W\], got 3"),
    ("x:1,4,7,11", r"--shape x: axis 1 is fixed at 3 in the graph"),
])
def test_shape_option_errors_name_the_input(tmp_path: Path, item: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        load_model(str(_odd_size(tmp_path / "odd.onnx")), shapes=[item])


def test_batch_on_axis_1_with_a_scalar_rate(tmp_path: Path) -> None:
    """The silero-vad failure class: batch on axis 1 of the state, a scalar sr, a fixed frame."""
    model = load_model(str(_stateful(tmp_path / "vad.onnx")))
    assert model.shapes == {"audio": (1, 512), "state": (2, 1, 4), "sr": ()}
    assert [s.batch_axis for s in model.signature.inputs] == [0, 1, None]
    assert [s.batch_axis for s in model.signature.outputs] == [0, 1]
    feeds = model.preprocessor.encode(model.eval_data.take(3).samples)
    assert feeds["state"].shape == (2, 3, 4) and feeds["sr"].shape == () and int(feeds["sr"]) == 16000
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    out, state_n = session.run(None, feeds)
    assert out.shape == (3, 1) and state_n.shape == (2, 3, 4)
    np.testing.assert_allclose(state_n, feeds["state"] + 1)  # the rate was right


def test_data_in_graph_layout_becomes_rows(tmp_path: Path) -> None:
    path = _stateful(tmp_path / "vad.onnx")
    rng = np.random.default_rng(0)
    state = rng.normal(size=(2, 5, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", audio=rng.normal(size=(5, 512)).astype(np.float32),
             state=state, sr=np.array(16000))
    model = load_model(str(path), data=tmp_path / "d.npz")
    assert model.shapes_source == "--data" and len(model.eval_data) == 5
    feeds = model.preprocessor.encode(model.eval_data.take(2).samples)
    np.testing.assert_array_equal(feeds["state"], state[:, :2])


def _anonymous_image(path: Path) -> Path:
    """x [-1, 3, ?, ?] → GlobalAveragePool → y [-1, 3, 1, 1]: how PaddleOCR's exports read."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3, 1, 1])
    node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    return _save(helper.make_graph([node], "anon", [x], [y]), path)


def test_data_with_two_unnamed_axes_of_different_sizes(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """'?' height and width are two axes, not one shared one; -1 is dynamic, not 'fixed'."""
    path = _anonymous_image(tmp_path / "anon.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 48, 192), np.float32))
    with caplog.at_level("WARNING", logger="inferno.models.loaders"):
        model = load_model(str(path), data=tmp_path / "d.npz")
    assert "fixed batch" not in caplog.text
    assert model.onnx_path.resolve() == path.resolve()  # nothing to make dynamic
    assert model.shapes == {"x": (1, 3, 48, 192)} and len(model.eval_data) == 4
