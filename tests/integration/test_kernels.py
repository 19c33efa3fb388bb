"""Which ISA paths the compute ran on: OpenVINO's executed primitives, ORT's stated offer, the
report field; and FP16 compute on OpenVINO only where the CPU has AVX512-FP16."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferno.errors import RuntimeUnavailableError
from inferno.hardware import CPU_FEATURES, CpuInfo, cpu_info
from inferno.runtimes import RUNTIMES, Artifact, RuntimeSettings
from inferno.runtimes import openvino as ov_runtime
from inferno.runtimes.openvino import OpenVinoRuntime, kernel_counts, kernel_summary
from inferno.tuning.render import COLUMNS, rows, summary, to_markdown
from inferno.tuning.report import Chosen, Measurement, Report

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")
RNG = np.random.default_rng(0)


def _isa_family() -> str:
    """The substring OpenVINO's x86 primitive names carry for this CPU's widest vector ISA."""
    cpu = cpu_info()
    if cpu.has("avx512f"):
        return "avx512"
    if cpu.has("avx2"):
        return "avx2"
    pytest.skip(f"no AVX2 or AVX-512 on this CPU ({cpu.architecture}): no x86 primitive names to expect")


def _save(path: Path, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
          x_shape: list[int | str], out_shape: list[int | str]) -> Path:
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)], inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _matmul(path: Path) -> Path:
    w = numpy_helper.from_array(RNG.standard_normal((64, 64)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["out"])]
    return _save(path, nodes, [w], ["n", 64], ["n", 64])


def _qdq_matmul(path: Path) -> Path:
    inits = [
        numpy_helper.from_array(RNG.integers(-127, 127, (64, 64)).astype(np.int8), "wq"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["out"]),
    ]
    return _save(path, nodes, inits, ["n", 64], ["n", 64])


def _conv(path: Path) -> Path:
    w = numpy_helper.from_array(RNG.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["out"])]
    return _save(path, nodes, [w], ["n", 3, 16, 16], ["n", 8, 16, 16])


def _run_kernels(path: Path, x: np.ndarray, compute: str = "fp32", graph: str = "fp32") -> str | None:
    runtime = RUNTIMES["openvino"](RuntimeSettings(threads=1))
    runtime.load(Artifact(path, ("x",), graph_precision=graph, compute_precision=compute))
    try:
        runtime.run({"x": x})
        return runtime.kernels
    finally:
        runtime.close()


# --- OpenVINO: the executed graph's primitives ----------------------------------------------


@needs_openvino
@pytest.mark.parametrize(("build", "x", "graph"), [
    (_matmul, np.ones((4, 64), np.float32), "fp32"),
    (_qdq_matmul, np.ones((4, 64), np.float32), "int8"),
    (_conv, np.ones((2, 3, 16, 16), np.float32), "fp32"),
], ids=["matmul-fp32", "qdq-int8", "conv-fp32"])
def test_openvino_names_the_isa_its_compute_ran_on(tmp_path: Path, build: Callable[[Path], Path],
                                                   x: np.ndarray, graph: str) -> None:
    kernels = _run_kernels(build(tmp_path / "m.onnx"), x, graph=graph)
    assert kernels is not None and "undef" not in kernels, kernels
    family = _isa_family()
    assert family in kernels, f"expected a {family} primitive: {kernels}"
    assert "Const" not in kernels and "Input" not in kernels  # data movement is left out
    if graph == "int8":
        assert "i8" in kernels.lower(), kernels


@needs_openvino
def test_openvino_bf16_compute_shows_in_the_primitives(tmp_path: Path) -> None:
    if not cpu_info().bf16_accelerated:
        pytest.skip("no native BF16 on this CPU")
    kernels = _run_kernels(_conv(tmp_path / "m.onnx"), np.ones((1, 3, 16, 16), np.float32), compute="bf16")
    assert kernels is not None and "bf16 ×" in kernels.split(",")[0], kernels  # the Convolution's group


@needs_openvino
def test_a_dynamic_graph_has_its_kernels_after_the_first_run(tmp_path: Path) -> None:
    runtime = RUNTIMES["openvino"](RuntimeSettings(threads=1))
    runtime.load(Artifact(_matmul(tmp_path / "m.onnx"), ("x",)))
    before = runtime.kernels
    assert before is not None and "undef" in before  # OpenVINO picks the kernel per shape, at run time
    runtime.run({"x": np.ones((2, 64), np.float32)})
    after = runtime.kernels
    runtime.close()
    assert after is not None and "undef" not in after
    assert runtime.kernels == after  # kept past close


def test_kernel_summary_groups_compute_by_primitive_matrix_ops_first() -> None:
    nodes = [
        ("Input", "unknown_f32", "f32"), ("Const", "unknown_f32", "f32"), ("Reorder", "jit_uni_f32", "f32"),
        ("Eltwise", "jit_avx512_f32", "f32"), ("MVN", "jit_avx512_f32", "f32"),
        ("Eltwise", "jit_avx512_f32", "f32"), ("Eltwise", "jit_avx512_i32", "i32"),  # shape arithmetic
        ("FullyConnected", "brgemm_avx512_i8", "i8"), ("FullyConnected", "brgemm_avx512_i8", "i8"),
        ("Subgraph", "jit_avx512_bf16", "bf16"), ("Output", "unknown_f32", "f32"),
    ]
    # matrix work first (by count), then the rest: the three eltwise-ish nodes come last
    assert list(kernel_counts(nodes)) == ["brgemm_avx512_i8", "jit_avx512_bf16", "jit_avx512_f32"]
    assert kernel_summary(nodes) == (
        "brgemm_avx512_i8 ×2 (FullyConnected), jit_avx512_bf16 ×1 (Subgraph), jit_avx512_f32 ×3 (Eltwise, MVN)"
    )
    assert kernel_summary([("Input", "unknown_f32", "f32")]) is None


# --- ONNX Runtime: what the CPU offers, said as such ----------------------------------------


def test_onnxruntime_states_the_cpu_offer_not_an_observation(tmp_path: Path) -> None:
    runtime = RUNTIMES["onnxruntime"](RuntimeSettings(threads=1))
    runtime.load(Artifact(_matmul(tmp_path / "m.onnx"), ("x",)))
    kernels = runtime.kernels
    runtime.close()
    assert kernels is not None and kernels.startswith("MLAS") and "not observed" in kernels
    for feature in ("avx2", "avx512f", "avx512_vnni"):
        assert (feature in kernels.split("(")[0]) == cpu_info().has(feature), kernels


def test_the_base_runtime_tells_nothing() -> None:
    assert RUNTIMES["torch"](RuntimeSettings()).kernels is None


# --- the report --------------------------------------------------------------------------------

KERNELS = "brgemm_avx512_i8 ×36 (FullyConnected), jit_avx512_f32 ×40 (Eltwise, MVN)"


def _report() -> Report:
    ov = Measurement("int8", "openvino", "OpenVINO CPU (f32)", "int8", throughput_per_s=900.0,
                     latency_ms_p50=1.0, within_budget=True, speedup=1.5, kernels=KERNELS)
    ort = Measurement("fp32", "onnxruntime", "CPUExecutionProvider", "fp32", throughput_per_s=600.0,
                      latency_ms_p50=1.5, within_budget=True, speedup=1.0, kernels="MLAS; CPU offers avx512f")
    chosen = Chosen(ov.variant, ov.runtime, ov.provider, ov.precision, ov.throughput_per_s, ov.latency_ms_p50,
                    {}, True, ov.speedup, "/tmp/x", "fastest", kernels=ov.kernels)
    return Report("tiny", "m.onnx", "other", "throughput", 32, 2, {}, {"source": "synthetic", "samples": 8},
                  {"runtime": "ONNX Runtime FP32", "metrics": {}}, {"cpu": {"model": "fake"}}, None,
                  (ov, ort), chosen)


def test_the_report_keeps_the_kernels_through_json() -> None:
    again = Report.from_dict(json.loads(_report().to_json()))
    assert again == _report()
    assert again.variants[0].kernels == KERNELS and again.chosen.kernels == KERNELS


def test_a_report_written_before_the_field_still_loads() -> None:
    data = _report().to_dict()
    for m in data["variants"]:
        del m["kernels"]
    del data["chosen"]["kernels"]
    old = Report.from_dict(data)
    assert old.chosen.kernels is None and all(m.kernels is None for m in old.variants)
    assert "kernels:" not in summary(old) and "Kernels" not in to_markdown(old)


def test_kernels_are_a_footnote_not_a_column() -> None:
    report = _report()
    assert all(len(r) == len(COLUMNS) for r in rows(report))
    assert f"kernels: {KERNELS}" in summary(report).splitlines()
    markdown = to_markdown(report)
    assert f"- int8@openvino: {KERNELS}" in markdown
    assert "- fp32@onnxruntime: MLAS; CPU offers avx512f" in markdown


# --- FP16 compute: only with AVX512-FP16 -------------------------------------------------------

FP16 = Artifact(Path("m.onnx"), ("x",), graph_precision="fp32", compute_precision="fp16")


def _cpu(**features: bool) -> CpuInfo:
    return dataclasses.replace(cpu_info(), features={name: features.get(name, False) for name in CPU_FEATURES})


@pytest.mark.parametrize(("features", "expected"), [
    ({"avx512f": True, "avx512_fp16": True, "amx_fp16": True}, True),   # Granite Rapids
    ({"avx512f": True, "avx512_fp16": True}, True),                     # Sapphire Rapids
    ({"avx512f": True, "avx512_bf16": True, "avx512_vnni": True}, False),  # Zen 4/5: BF16, no FP16
    ({"avx2": True}, False),
])
def test_openvino_takes_fp16_compute_only_with_avx512_fp16(
        monkeypatch: pytest.MonkeyPatch, features: dict[str, bool], expected: bool) -> None:
    monkeypatch.setattr(ov_runtime, "cpu_info", lambda: _cpu(**features))
    assert OpenVinoRuntime.supports(FP16) is expected
    assert OpenVinoRuntime.supports(dataclasses.replace(FP16, compute_precision="bf16"))  # unchanged
    assert not OpenVinoRuntime.supports(FP16, provider="cuda")


def test_fp16_compute_here_follows_the_detected_cpu() -> None:
    assert OpenVinoRuntime.supports(FP16) is cpu_info().has("avx512_fp16")
    if "AMD" in cpu_info().model:  # no AMD CPU has AVX512-FP16 to date
        assert not OpenVinoRuntime.supports(FP16)


@needs_openvino
def test_an_fp16_hint_the_cpu_cannot_honour_is_refused_not_downgraded(tmp_path: Path) -> None:
    if cpu_info().has("avx512_fp16"):
        pytest.skip("this CPU computes FP16 natively")
    runtime = RUNTIMES["openvino"](RuntimeSettings(threads=1))
    with pytest.raises(RuntimeUnavailableError, match="asked to compute in f16"):
        runtime.load(Artifact(_conv(tmp_path / "m.onnx"), ("x",), compute_precision="fp16"))


def test_amx_fp16_is_probed_with_the_other_features() -> None:
    assert CPU_FEATURES["amx_fp16"] == ("amx_fp16",)
    assert "amx_fp16" in cpu_info().features
