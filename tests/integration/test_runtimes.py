"""Every runtime on a tiny real graph: same answers as numpy, no silent fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferno.errors import RuntimeUnavailableError
from inferno.runtimes import RUNTIMES, Artifact, RuntimeSettings

RNG = np.random.default_rng(0)
W = RNG.normal(size=(16, 8)).astype(np.float32)
B = RNG.normal(size=(8,)).astype(np.float32)


def _graph(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [x], [y],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _graph(tmp_path_factory.mktemp("rt") / "tiny.onnx")


@pytest.mark.parametrize(("runtime", "precision", "rtol"),
                         [("onnxruntime", "fp32", 1e-5), ("openvino", "fp32", 1e-4), ("openvino", "bf16", 5e-2),
                          ("openvino-streams", "fp32", 1e-4)])
def test_runtime_matches_numpy(tiny: Path, runtime: str, precision: str, rtol: float) -> None:
    cls = RUNTIMES[runtime]
    if not cls.available():
        pytest.skip(f"{runtime} not installed")
    artifact = Artifact(tiny, ("x",), "fp32", precision)
    assert cls.supports(artifact) or precision == "bf16"
    rt = cls(RuntimeSettings(threads=2))
    rt.load(artifact)
    x = RNG.normal(size=(5, 16)).astype(np.float32)  # odd: streams split it 2 + 3
    rt.warmup({"x": x})
    (y,) = rt.run({"x": x})
    np.testing.assert_allclose(y, x @ W + B, rtol=rtol, atol=rtol * 10)
    assert rt.provider
    rt.close()


def test_onnxruntime_has_no_bf16_mode(tiny: Path) -> None:
    assert not RUNTIMES["onnxruntime"].supports(Artifact(tiny, ("x",), "fp32", "bf16"))


def test_missing_provider_is_an_error_not_a_fallback(tiny: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    rt = RUNTIMES["onnxruntime"](RuntimeSettings(threads=1, provider="cuda"))
    with pytest.raises(RuntimeUnavailableError, match="CUDAExecutionProvider"):
        rt.load(Artifact(tiny, ("x",)))


def test_torch_eager_runs_the_source_module() -> None:
    torch = pytest.importorskip("torch")

    def factory() -> torch.nn.Module:
        layer = torch.nn.Linear(16, 8)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(W.T.copy()))
            layer.bias.copy_(torch.from_numpy(B))
        return layer

    artifact = Artifact(None, ("x",), torch_factory=factory)
    assert RUNTIMES["torch"].supports(artifact)
    assert not RUNTIMES["torch"].supports(Artifact(Path("m.onnx"), ("x",)))
    rt = RUNTIMES["torch"](RuntimeSettings(threads=1))
    rt.load(artifact)
    x = RNG.normal(size=(3, 16)).astype(np.float32)
    (y,) = rt.run({"x": x})
    np.testing.assert_allclose(y, x @ W + B, rtol=1e-5, atol=1e-5)
