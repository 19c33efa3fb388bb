"""``bf16`` and ``fp16``: where they apply (pure logic on fake hardware) and what they write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from inferno.hardware import HardwareInfo
from inferno.passes import PassContext, make_pass
from inferno.passes.bf16 import bf16_accelerated

from .graphs import MLP_WIDTHS, mlp, op_counts, random_feeds, save
from .support import context, fake_hardware, gpu, run


def _ctx(hardware: HardwareInfo) -> PassContext:
    return PassContext(hardware=hardware)


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (fake_hardware(), False),
        (fake_hardware(cpu_features=("avx512f", "avx512_vnni", "amx_int8")), False),
        (fake_hardware(cpu_features=("avx512_bf16",)), True),
        (fake_hardware(cpu_features=("amx_tile", "amx_bf16")), True),
        (fake_hardware(gpus=[gpu("7.5")]), False),
        (fake_hardware(gpus=[gpu("8.0")]), True),
        (fake_hardware(gpus=[gpu("8.9")]), True),
        (fake_hardware(gpus=[gpu("10.0")]), True),
        (fake_hardware(gpus=[gpu("7.0"), gpu("9.0")]), True),
        (fake_hardware(gpus=[gpu("unknown")]), False),
        (fake_hardware(gpus=[gpu("")]), False),
    ],
)
def test_bf16_applies_only_where_bf16_is_accelerated(
    hardware: HardwareInfo, expected: bool
) -> None:
    assert bf16_accelerated(hardware) is expected
    assert make_pass("bf16").applies_to(mlp(), _ctx(hardware)) is expected


def test_bf16_writes_the_graph_unchanged(tmp_path: Path) -> None:
    model = mlp()
    src, dst = save(model, tmp_path / "mlp.onnx"), tmp_path / "bf16.onnx"
    make_pass("bf16").run(src, dst, context())
    written = onnx.load(str(dst))
    assert written.graph == model.graph
    feeds = random_feeds(model, 2)
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        np.testing.assert_array_equal(out[0], ref[0])
    assert make_pass("bf16").precision == "bf16"


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (fake_hardware(), False),
        (fake_hardware(cpu_features=("avx512_bf16", "avx512_fp16")), False),
        (fake_hardware(providers=("CUDAExecutionProvider", "CPUExecutionProvider")), True),
        (fake_hardware(gpus=[gpu("7.5")], providers=("CPUExecutionProvider",)), True),
    ],
)
def test_fp16_applies_only_with_a_gpu(hardware: HardwareInfo, expected: bool) -> None:
    assert make_pass("fp16").applies_to(mlp(), _ctx(hardware)) is expected
    # FP16 *compute* also runs on a CPU with AVX512-FP16 (OpenVINO's f16 hint)
    cpu_fp16 = hardware.cpu.fp16_accelerated
    assert make_pass("fp16_compute").applies_to(mlp(), _ctx(hardware)) is (expected or cpu_fp16)


def test_fp16_compute_keeps_the_fp32_graph(tmp_path: Path) -> None:
    src, dst = save(mlp(), tmp_path / "mlp.onnx"), tmp_path / "fp16c.onnx"
    make_pass("fp16_compute").run(src, dst, context())
    before, after = onnx.load(str(src)), onnx.load(str(dst))
    assert [t.data_type for t in after.graph.initializer] == [t.data_type for t in before.graph.initializer]
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in after.graph.initializer)


def test_fp16_converts_weights_and_casts_at_the_edges(tmp_path: Path) -> None:
    model = mlp()
    src, dst = save(model, tmp_path / "mlp.onnx"), tmp_path / "fp16.onnx"
    make_pass("fp16").run(src, dst, context())
    written = onnx.load(str(dst))
    assert op_counts(dst) == {"MatMul": 4, "Add": 4, "Relu": 3, "Cast": 2}
    assert {i.data_type for i in written.graph.initializer} == {TensorProto.FLOAT16}
    assert len(written.graph.initializer) == 2 * (len(MLP_WIDTHS) - 1)
    assert written.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert written.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    feeds = random_feeds(model, 3, seed=15)
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        assert out[0].dtype == np.float32
        np.testing.assert_allclose(out[0], ref[0], rtol=1e-2, atol=5e-3)
        assert not np.array_equal(out[0], ref[0])  # it did compute in reduced precision


def test_fp16_without_io_casts(tmp_path: Path) -> None:
    model = mlp()
    src, dst = save(model, tmp_path / "mlp.onnx"), tmp_path / "fp16.onnx"
    make_pass("fp16", keep_io_types=False).run(src, dst, context())
    written = onnx.load(str(dst))
    assert "Cast" not in op_counts(dst)
    assert written.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    feeds = [{k: v.astype(np.float16) for k, v in f.items()} for f in random_feeds(model, 1)]
    out = run(dst, feeds)[0][0]
    ref = run(src, [{k: v.astype(np.float32) for k, v in f.items()} for f in feeds])[0][0]
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), ref, rtol=1e-2, atol=5e-3)


def test_fp16_op_block_list_keeps_ops_fp32(tmp_path: Path) -> None:
    src, dst = save(mlp(), tmp_path / "mlp.onnx"), tmp_path / "fp16.onnx"
    make_pass("fp16", op_block_list=("Relu",)).run(src, dst, context())
    assert op_counts(dst)["Cast"] > 2  # casts around every FP32 Relu
