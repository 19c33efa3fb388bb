"""What the ``test_loaders*`` modules share: an isolated cache, a tiny ONNX graph, features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferno.models.model import Model

HERE = Path(__file__).parent
RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3)).astype(np.float32)


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Own cache per test; ``loader_models`` importable; relative paths inside tmp_path."""
    monkeypatch.setenv("INFERNO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)


def run_graph(model: Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def tiny_onnx(path: Path, batch: int | str = "batch", *, reshape_to: int | None = None) -> Path:
    """x float32 [batch, 4] → MatMul → y float32 [batch, 3]; optionally a hard-coded Reshape."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    inits = [numpy_helper.from_array(W, "W")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y" if reshape_to is None else "h"])]
    if reshape_to is not None:
        inits.append(numpy_helper.from_array(np.array([reshape_to, 3], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["h", "shape"], ["y"]))
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def features(n: int) -> np.ndarray:
    return RNG.normal(size=(n, 4)).astype(np.float32)
