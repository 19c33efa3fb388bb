"""``int8_weight_only``: weights become INT8 + DequantizeLinear; outputs stay within INT8 weight error."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest

from inferno.errors import PassError
from inferno.passes import make_pass
from inferno.passes.int8_weight_only import quantize_per_channel

from .graphs import MLP_WIDTHS, mlp, op_counts, random_feeds, save
from .support import context, corrupt_model, cosine, run

LAYERS = len(MLP_WIDTHS) - 1


def test_every_large_weight_is_dequantized_int8(tmp_path: Path) -> None:
    model = mlp()
    src, dst = save(model, tmp_path / "mlp.onnx"), tmp_path / "w8.onnx"
    graph_pass = make_pass("int8_weight_only", min_elements=1)
    assert graph_pass.applies_to(model, context())
    graph_pass.run(src, dst, context())
    counts = op_counts(dst)
    assert counts["DequantizeLinear"] == LAYERS
    assert counts["MatMul"] == LAYERS  # the MatMuls stay: activations are not quantized
    assert "QuantizeLinear" not in counts and "MatMulInteger" not in counts
    int8 = [i for i in onnx.load(str(dst)).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) == 2 * LAYERS  # weights and zero points
    feeds = random_feeds(model, batches=3)
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        np.testing.assert_allclose(out[0], ref[0], rtol=0, atol=0.02 * float(np.abs(ref[0]).max()))
        assert cosine(out[0], ref[0]) > 0.9995


def test_small_and_excluded_weights_stay_fp32(tmp_path: Path) -> None:
    model = mlp()
    src, dst = save(model, tmp_path / "mlp.onnx"), tmp_path / "w8.onnx"
    sizes = [i * o for i, o in itertools.pairwise(MLP_WIDTHS)]
    threshold = sorted(sizes)[1]  # the smallest weight falls below it
    make_pass("int8_weight_only", min_elements=threshold,
              nodes_to_exclude=("/layers.1/MatMul",)).run(src, dst, context())
    expected = sum(1 for i, s in enumerate(sizes) if s >= threshold and i != 1)
    assert op_counts(dst)["DequantizeLinear"] == expected
    assert not make_pass("int8_weight_only", min_elements=10**9).applies_to(model, context())


def test_per_channel_symmetric_rounding() -> None:
    w = np.array([[1.0, -0.5, 0.0], [-2.0, 0.25, 0.0]], dtype=np.float32)
    q, scale = quantize_per_channel(w)
    np.testing.assert_allclose(scale, [2 / 127, 0.5 / 127, 1.0], rtol=1e-6)
    assert q.dtype == np.int8 and q[1, 0] == -127 and q[0, 1] == -127 and q[0, 2] == 0
    np.testing.assert_allclose(q * scale, w, atol=float(scale.max()) / 2)


def test_corrupt_input_is_a_pass_error(tmp_path: Path) -> None:
    with pytest.raises(PassError, match="int8_weight_only"):
        make_pass("int8_weight_only").run(corrupt_model(tmp_path / "bad.onnx"), tmp_path / "o.onnx", context())
