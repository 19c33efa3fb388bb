"""``int8_static``: QDQ graphs calibrated on the context's batches, with no files left behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from inferno.errors import PassError
from inferno.passes import make_pass

from .graphs import bert_feeds, conv_net, mlp, op_counts, random_feeds, save
from .support import context, cosine, run


def _assert_int8_close(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """INT8 error budget: 5% of the output range per element, cosine above 0.999."""
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        scale = float(np.abs(ref[0]).max())
        np.testing.assert_allclose(out[0], ref[0], rtol=0, atol=0.05 * scale)
        assert cosine(out[0], ref[0]) > 0.999


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_conv_net_gets_qdq_pairs_and_stays_close(method: str, tmp_path: Path) -> None:
    model = conv_net()
    src, dst = save(model, tmp_path / "conv.onnx"), tmp_path / "q.onnx"
    make_pass("int8_static", method=method).run(src, dst, context(random_feeds(model, 8)))
    counts = op_counts(dst)
    assert counts["QuantizeLinear"] >= 3  # the activation into each of Conv, Conv, Gemm
    assert counts["DequantizeLinear"] >= 6  # those activations plus the three weights
    assert counts["Conv"] == 2 and counts["Gemm"] == 1
    _assert_int8_close(src, dst, random_feeds(model, 2, seed=9))


def test_mlp_is_quantized_after_pre_processing(tmp_path: Path) -> None:
    model = mlp()
    src, dst = save(model, tmp_path / "mlp.onnx"), tmp_path / "q.onnx"
    # The graph output is quantized too, so calibrate on enough rows to cover its range.
    make_pass("int8_static").run(src, dst, context(random_feeds(model, 16, batch=16)))
    counts = op_counts(dst)
    # quant_pre_process fuses MatMul + Add into Gemm; each gets its weight and input quantized.
    assert counts["Gemm"] == 4
    assert counts["QuantizeLinear"] >= 4 and counts["DequantizeLinear"] >= 8
    _assert_int8_close(src, dst, random_feeds(model, 3, seed=10))


def test_op_types_limits_what_is_quantized(tmp_path: Path) -> None:
    model = conv_net()
    src, dst = save(model, tmp_path / "conv.onnx"), tmp_path / "q.onnx"
    make_pass("int8_static", op_types=("Gemm",)).run(src, dst, context(random_feeds(model, 4)))
    quantized = {
        n.input[0] for n in onnx.load(str(dst)).graph.node if n.op_type == "QuantizeLinear"
    }
    assert "f" in quantized  # the Gemm's input
    assert not quantized & {"x", "r1"}  # the Convs' inputs stay FP32
    assert "conv1.weight" in {i.name for i in onnx.load(str(dst)).graph.initializer}


@pytest.mark.parametrize(
    ("activation", "dtype"), [("uint8", TensorProto.UINT8), ("int8", TensorProto.INT8)]
)
def test_activation_type(activation: str, dtype: int, tmp_path: Path) -> None:
    model = conv_net()
    src, dst = save(model, tmp_path / "conv.onnx"), tmp_path / "q.onnx"
    make_pass("int8_static", activation=activation).run(src, dst, context(random_feeds(model, 4)))
    inits = {i.name: i for i in onnx.load(str(dst)).graph.initializer}
    assert inits["x_zero_point"].data_type == dtype
    assert inits["conv1.weight_zero_point"].data_type == TensorProto.INT8
    _assert_int8_close(src, dst, random_feeds(model, 2, seed=9))


def test_max_samples_caps_the_batches_read(tmp_path: Path) -> None:
    model = mlp()
    src = save(model, tmp_path / "mlp.onnx")
    feeds = random_feeds(model, 3)
    feeds.append({"x": np.full((4, 16), np.nan, dtype=np.float32)})  # poison past the cap
    make_pass("int8_static", max_samples=3).run(src, tmp_path / "q.onnx", context(feeds))
    _assert_int8_close(src, tmp_path / "q.onnx", random_feeds(model, 1, seed=11))


def test_applies_only_with_calibration_data() -> None:
    assert not make_pass("int8_static").applies_to(mlp(), context())
    assert make_pass("int8_static").applies_to(mlp(), context(random_feeds(mlp(), 1)))
    assert not make_pass("int8_static", op_types=("Conv",)).applies_to(
        mlp(), context(random_feeds(mlp(), 1))
    )


def test_run_without_calibration_raises(tmp_path: Path) -> None:
    src = save(mlp(), tmp_path / "mlp.onnx")
    with pytest.raises(PassError, match="calibration"):
        make_pass("int8_static").run(src, tmp_path / "q.onnx", context())


def test_a_batch_missing_an_input_is_named(tmp_path: Path) -> None:
    src = save(mlp(), tmp_path / "mlp.onnx")
    bad = [{"input": np.zeros((2, 16), dtype=np.float32)}]
    with pytest.raises(PassError, match=r"batch 0 lacks input\(s\) \['x'\].*has \['input'\]"):
        make_pass("int8_static").run(src, tmp_path / "q.onnx", context(bad))


def test_leaves_no_files_in_the_temp_or_working_directory(
    tiny_bert_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The raw tiny BERT export defeats ORT's symbolic shape inference, which then dumps
    # sym_shape_infer_temp.onnx into the current directory unless the pass prevents it.
    scratch, cwd = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(cwd)
    dst = tmp_path / "q.onnx"
    make_pass("int8_static", max_samples=2).run(tiny_bert_path, dst, context(bert_feeds(2)))
    assert op_counts(dst)["QuantizeLinear"] > 0
    assert list(scratch.iterdir()) == []
    assert list(cwd.iterdir()) == []
    assert Path.cwd() == cwd


def test_output_softmax_stays_fp32(tmp_path: Path) -> None:
    """Probabilities must still sum to 1: the Softmax feeding the graph output is not quantized."""
    from onnx import helper

    from inferno.passes.int8_static import output_tail

    model = conv_net()
    graph = model.graph
    graph.node[-1].output[0] = "logits"
    graph.node.append(helper.make_node("Softmax", ["logits"], ["y"], name="/softmax", axis=1))
    assert output_tail(model) == ("/softmax",)
    src, dst = save(model, tmp_path / "conv.onnx"), tmp_path / "q.onnx"
    feeds = random_feeds(model, 4)
    make_pass("int8_static").run(src, dst, context(feeds))
    softmax = next(n for n in onnx.load(str(dst)).graph.node if n.op_type == "Softmax")
    assert softmax.output[0] == "y"  # not followed by a QuantizeLinear
    for (out,) in run(dst, feeds):
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
