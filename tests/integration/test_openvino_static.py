"""openvino-static / openvino-streams-static on a real graph: a shape seen twice gets its own
static program, answers stay those of numpy, the count stays bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferno.runtimes import RUNTIMES, Artifact, RuntimeSettings

pytestmark = pytest.mark.skipif(not RUNTIMES["openvino-static"].available(), reason="openvino not installed")

RNG = np.random.default_rng(3)
W = RNG.normal(size=(16, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def sequence_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x [batch, seq, 16] -> y [batch, seq, 8]: both axes dynamic, as a text model's."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "seq", [x], [y], [numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("ovstatic") / "seq.onnx"
    onnx.save(model, path)
    return path


def _expected(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W, 0)


@pytest.mark.parametrize("name", ["openvino-static", "openvino-streams-static"])
def test_a_recurring_shape_gets_a_static_program(sequence_graph: Path, name: str) -> None:
    rt = RUNTIMES[name](RuntimeSettings(threads=2))
    rt.load(Artifact(sequence_graph, ("x",)))
    assert "static shapes" in rt.provider
    x = RNG.normal(size=(4, 7, 16)).astype(np.float32)
    (first,) = rt.run({"x": x})
    assert rt.static_programs == 0  # not yet recurring: the dynamic program answered
    rt.run({"x": x})
    (again,) = rt.run({"x": x})
    np.testing.assert_allclose(again, _expected(x), rtol=1e-4, atol=1e-4)
    assert rt.static_programs == 1  # streams split 4 rows 2 + 2: one shape, one program
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-5)
    other = RNG.normal(size=(4, 9, 16)).astype(np.float32)
    (y,) = rt.run({"x": other})  # a new length: the dynamic program, no compile yet
    np.testing.assert_allclose(y, _expected(other), rtol=1e-4, atol=1e-4)
    assert rt.static_programs == 1
    rt.close()


def test_an_odd_batch_split_over_streams_takes_one_program_per_part_shape(sequence_graph: Path) -> None:
    rt = RUNTIMES["openvino-streams-static"](RuntimeSettings(threads=2))
    rt.load(Artifact(sequence_graph, ("x",)))
    x = RNG.normal(size=(5, 3, 16)).astype(np.float32)  # parts of 2 and 3 rows
    rt.prepare([{"x": x}])
    assert rt.static_programs == 2  # compiled ahead, before the first call
    (y,) = rt.run({"x": x})
    np.testing.assert_allclose(y, _expected(x), rtol=1e-4, atol=1e-4)
    assert rt.static_programs == 2
    assert rt.kernels  # read from a static program
    rt.close()


def test_the_dynamic_runtimes_compile_no_static_program(sequence_graph: Path) -> None:
    rt = RUNTIMES["openvino-streams"](RuntimeSettings(threads=2))
    rt.load(Artifact(sequence_graph, ("x",)))
    x = RNG.normal(size=(4, 7, 16)).astype(np.float32)
    rt.prepare([{"x": x}])
    for _ in range(4):
        rt.run({"x": x})
    assert rt.static_programs == 0
    assert "static" not in rt.provider
    rt.close()
