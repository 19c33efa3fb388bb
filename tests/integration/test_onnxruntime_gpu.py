"""ONNX Runtime's GPU paths: which graphs each provider takes, TensorRT's shape profiles and
engine cache, and the CPU-fallback check — on real sessions and graphs.

The placement check reads a real CPU session's node assignment here; the sessions on CUDA
and TensorRT run only where onnxruntime-gpu and a GPU are present (``gpu`` marker).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferno.errors import RuntimeUnavailableError
from inferno.runtimes import RUNTIMES, Artifact, RuntimeOptions, RuntimeSettings
from inferno.runtimes.onnxruntime import (
    CPU,
    CUDA,
    TENSORRT,
    check_no_cpu_fallback,
    dynamic_inputs,
    node_placement,
    provider_chain,
    shape_profiles,
    tensorrt_options,
)

RNG = np.random.default_rng(1)
W = RNG.normal(size=(16, 8)).astype(np.float32)
ORT = RUNTIMES["onnxruntime"]


def _mlp(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [x], [y], [numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _tokens(path: Path) -> Path:
    """A text-like graph: [batch, sequence] int64 ids and mask → [batch, 4] (embedding + masked mean)."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4])
    table = RNG.normal(size=(32, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
        helper.make_node("Mul", ["emb", "m3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["m", "axis1"], ["count"], keepdims=1),
        helper.make_node("Div", ["total", "count"], ["pooled"]),
    ]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    graph = helper.make_graph(nodes, "tokens", [ids, mask], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mlp(tmp_path_factory.mktemp("ort-gpu") / "model.onnx")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tokens(tmp_path_factory.mktemp("ort-gpu-tokens") / "model.onnx")


@pytest.mark.parametrize(("provider", "graph", "compute", "expected"), [
    (None, "fp32", "fp32", True),
    (None, "int8", "fp32", True),
    (None, "fp16", "fp32", False),  # the CPU EP runs FP16 graphs slower than FP32
    (None, "fp32", "fp16", False),
    ("cuda", "fp32", "fp32", True),
    ("cuda", "fp16", "fp32", True),
    ("cuda", "int8", "fp32", False),  # QDQ graphs fall back per node on the CUDA EP
    ("cuda", "fp32", "fp16", False),  # the CUDA EP has no precision flag: FP16 is the fp16 graph
    ("tensorrt", "fp32", "fp16", True),
    ("tensorrt", "fp32", "fp32", True),
    ("tensorrt", "fp16", "fp32", False),
    ("cuda:1", "fp32", "fp32", True),
])
def test_supports_matrix(mlp: Path, provider: str | None, graph: str, compute: str, expected: bool) -> None:
    assert ORT.supports(Artifact(mlp, ("x",), graph, compute), provider) is expected


def test_cpu_session_records_where_each_node_runs(mlp: Path) -> None:
    rt = ORT(RuntimeSettings(threads=1))
    rt.load(Artifact(mlp, ("x",)))
    assert rt.placement[CPU]["MatMul"] == 1
    x = RNG.normal(size=(3, 16)).astype(np.float32)
    np.testing.assert_allclose(rt.run({"x": x})[0], np.maximum(x @ W, 0), rtol=1e-5, atol=1e-5)
    # The same placement behind a GPU provider is a fallback, named op by op.
    with pytest.raises(RuntimeUnavailableError, match=r"fell back to the CPU: MatMul ×1"):
        check_no_cpu_fallback(CUDA, rt.placement)
    rt.close()


def test_real_placement_has_the_ops_of_the_graph(tokens: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    session = ort.InferenceSession(str(tokens), options, providers=[CPU])
    placement = node_placement(session)
    assert set(placement) == {CPU}
    assert {"Gather", "Mul", "Div"} <= set(placement[CPU])


def test_shape_glue_on_the_cpu_is_allowed_compute_is_not() -> None:
    check_no_cpu_fallback(CUDA, {CUDA: Counter({"MatMul": 12, "Softmax": 6}), CPU: Counter({"Shape": 4, "Gather": 2})})
    with pytest.raises(RuntimeUnavailableError, match=r"LayerNormalization ×2, MatMul ×1"):
        check_no_cpu_fallback(TENSORRT, {TENSORRT: Counter({"TRTKernel": 1}),
                                         CPU: Counter({"MatMul": 1, "LayerNormalization": 2, "Shape": 3})})


def test_missing_gpu_provider_is_an_error_naming_the_fix(mlp: Path) -> None:
    import onnxruntime as ort

    if TENSORRT in ort.get_available_providers():
        pytest.skip("this machine has TensorRT")
    with pytest.raises(RuntimeUnavailableError, match="onnxruntime-gpu"):
        ORT(RuntimeSettings(threads=1, provider="tensorrt")).load(Artifact(mlp, ("x",)))


def test_provider_chain_keeps_cuda_behind_tensorrt(mlp: Path) -> None:
    assert provider_chain(CPU, 0, Artifact(mlp, ("x",))) == [CPU]
    chain = provider_chain(TENSORRT, 1, Artifact(mlp, ("x",)))
    assert [p[0] if isinstance(p, tuple) else p for p in chain] == [TENSORRT, CUDA, CPU]
    assert chain[0][1]["device_id"] == 1 and chain[1][1]["device_id"] == 1


def test_dynamic_inputs_and_shape_profiles(tokens: Path, mlp: Path) -> None:
    assert dynamic_inputs(tokens) == {"input_ids": [None, None], "attention_mask": [None, None]}
    assert dynamic_inputs(mlp) == {"x": [None, 16]}
    profiles = shape_profiles(dynamic_inputs(tokens), max_batch=256, opt_batch=32, max_sequence=128)
    assert profiles == {
        "trt_profile_min_shapes": "input_ids:1x1,attention_mask:1x1",
        "trt_profile_opt_shapes": "input_ids:32x128,attention_mask:32x128",
        "trt_profile_max_shapes": "input_ids:256x128,attention_mask:256x128",
    }
    assert shape_profiles(dynamic_inputs(mlp), 64, 128, 7)["trt_profile_opt_shapes"] == "x:64x16"
    assert shape_profiles({}, 256, 32, 128) == {}


def test_tensorrt_options_put_the_engine_cache_in_the_given_folder(tokens: Path, tmp_path: Path) -> None:
    artifact = Artifact(tokens, ("input_ids", "attention_mask"), "fp32", "fp16",
                        options=RuntimeOptions(cache_dir=tmp_path, max_batch_size=64, max_sequence_length=16))
    options = tensorrt_options(artifact, 0)
    assert options["trt_fp16_enable"] is True
    assert options["trt_engine_cache_enable"] is True
    assert Path(options["trt_engine_cache_path"]) == tmp_path / "trt_cache"
    assert (tmp_path / "trt_cache").is_dir()
    assert options["trt_profile_max_shapes"] == "input_ids:64x16,attention_mask:64x16"
    no_cache = tensorrt_options(Artifact(tokens, ("input_ids",)), 0)
    assert "trt_engine_cache_enable" not in no_cache and no_cache["trt_fp16_enable"] is False


# --- on a GPU with onnxruntime-gpu -------------------------------------------------------


def _need(provider: str) -> None:
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        pytest.skip(f"{provider} not in this onnxruntime (install onnxruntime-gpu)")


@pytest.mark.gpu
def test_cuda_runs_fp32_and_fp16_graphs_on_the_gpu(mlp: Path, tmp_path: Path) -> None:
    from inferno.hardware import detect
    from inferno.passes import make_pass
    from inferno.passes.base import PassContext

    _need(CUDA)
    fp16 = tmp_path / "fp16.onnx"
    make_pass("fp16").run(mlp, fp16, PassContext(hardware=detect()))
    x = RNG.normal(size=(5, 16)).astype(np.float32)
    for path, graph, tol in ((mlp, "fp32", 1e-3), (fp16, "fp16", 2e-2)):
        rt = ORT(RuntimeSettings(threads=1, provider="cuda"))
        rt.load(Artifact(path, ("x",), graph))
        assert rt.provider == CUDA
        assert rt.placement.get(CUDA, Counter())["MatMul"] == 1
        np.testing.assert_allclose(rt.run({"x": x})[0], np.maximum(x @ W, 0), rtol=tol, atol=tol)
        rt.close()


@pytest.mark.gpu
def test_tensorrt_engine_cache_survives_a_restart(tokens: Path, tmp_path: Path) -> None:
    _need(TENSORRT)
    folder = tmp_path / "version"
    folder.mkdir()
    model = folder / "model.onnx"
    model.write_bytes(tokens.read_bytes())
    feeds = {"input_ids": RNG.integers(1, 32, size=(4, 12)), "attention_mask": np.ones((4, 12), np.int64)}

    def load_and_run() -> tuple[float, np.ndarray]:
        rt = ORT(RuntimeSettings(threads=1, provider="tensorrt"))
        start = time.perf_counter()
        rt.load(Artifact(model, ("input_ids", "attention_mask"), "fp32", "fp16",
                         options=RuntimeOptions(cache_dir=folder, max_batch_size=8, max_sequence_length=16)))
        (out,) = rt.run(feeds)
        elapsed = time.perf_counter() - start
        assert rt.provider == TENSORRT
        rt.close()
        return elapsed, out

    _, first = load_and_run()
    engines = list((folder / "trt_cache").glob("*.engine"))
    assert engines, "no engine written to the cache folder"
    moved = tmp_path / "moved"
    folder.rename(moved)  # engines are named by file name and content, not by path
    folder = moved
    model = folder / "model.onnx"
    mtimes = {p.name: p.stat().st_mtime for p in (folder / "trt_cache").glob("*.engine")}
    _, second = load_and_run()
    assert {p.name: p.stat().st_mtime for p in (folder / "trt_cache").glob("*.engine")} == mtimes
    np.testing.assert_allclose(first, second, rtol=1e-3, atol=1e-3)
