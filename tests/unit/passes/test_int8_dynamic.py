"""``int8_dynamic``: every weight MatMul becomes MatMulInteger, outputs stay within INT8 error."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from inferno.passes import make_pass

from .graphs import (
    MLP_WIDTHS,
    bert_feeds,
    bert_ffn_block,
    conv_net,
    mlp,
    op_counts,
    random_feeds,
    save,
)
from .support import context, cosine, run

LAYERS = len(MLP_WIDTHS) - 1


def _assert_int8_close(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """INT8 error budget: 5% of the output range per element, cosine above 0.999."""
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        scale = float(np.abs(ref[0]).max())
        np.testing.assert_allclose(out[0], ref[0], rtol=0, atol=0.05 * scale)
        assert cosine(out[0], ref[0]) > 0.999


def test_every_matmul_becomes_matmul_integer(tmp_path: Path) -> None:
    model = mlp()
    src, dst = save(model, tmp_path / "mlp.onnx"), tmp_path / "q.onnx"
    make_pass("int8_dynamic").run(src, dst, context())
    counts = op_counts(dst)
    assert counts["MatMulInteger"] == LAYERS
    assert counts["DynamicQuantizeLinear"] == LAYERS
    assert "MatMul" not in counts
    _assert_int8_close(src, dst, random_feeds(model, 3, seed=5))


def test_weights_are_stored_as_int8(tmp_path: Path) -> None:
    src, dst = save(mlp(), tmp_path / "mlp.onnx"), tmp_path / "q.onnx"
    make_pass("int8_dynamic").run(src, dst, context())
    int8 = [
        i for i in onnx.load(str(dst)).graph.initializer if i.data_type == onnx.TensorProto.INT8
    ]
    assert len(int8) >= LAYERS
    assert all(numpy_helper.to_array(i).dtype == np.int8 for i in int8)


def test_nodes_to_exclude_stay_fp32(tmp_path: Path) -> None:
    model = mlp()
    src, dst = save(model, tmp_path / "mlp.onnx"), tmp_path / "q.onnx"
    make_pass("int8_dynamic", nodes_to_exclude=("/layers.1/MatMul",)).run(src, dst, context())
    counts = op_counts(dst)
    assert counts["MatMulInteger"] == LAYERS - 1
    assert [n.name for n in onnx.load(str(dst)).graph.node if n.op_type == "MatMul"] == [
        "/layers.1/MatMul"
    ]
    _assert_int8_close(src, dst, random_feeds(model, 2, seed=6))


def test_per_channel_stores_one_scale_per_output_column(tmp_path: Path) -> None:
    src = save(mlp(), tmp_path / "mlp.onnx")
    make_pass("int8_dynamic", per_channel=True).run(src, tmp_path / "pc.onnx", context())
    make_pass("int8_dynamic").run(src, tmp_path / "pt.onnx", context())

    def scale_sizes(path: Path) -> list[int]:
        inits = onnx.load(str(path)).graph.initializer
        return sorted(int(np.prod(i.dims)) for i in inits if i.name.endswith("weight_scale"))

    assert scale_sizes(tmp_path / "pt.onnx") == [1] * LAYERS
    assert scale_sizes(tmp_path / "pc.onnx") == sorted(MLP_WIDTHS[1:])


def test_gather_is_left_alone_by_default(tiny_bert_path: Path, tmp_path: Path) -> None:
    make_pass("int8_dynamic").run(tiny_bert_path, tmp_path / "q.onnx", context())
    make_pass("int8_dynamic", op_types=("MatMul", "Gather")).run(
        tiny_bert_path, tmp_path / "qg.onnx", context()
    )
    default, with_gather = onnx.load(str(tmp_path / "q.onnx")), onnx.load(str(tmp_path / "qg.onnx"))
    embedding = "bert.embeddings.word_embeddings.weight"
    assert embedding in {i.name for i in default.graph.initializer}
    assert embedding not in {i.name for i in with_gather.graph.initializer}


def test_works_on_a_fused_graph_with_contrib_ops(tmp_path: Path) -> None:
    model = bert_ffn_block()
    src, fused, dst = (
        save(model, tmp_path / "ffn.onnx"),
        tmp_path / "fused.onnx",
        tmp_path / "q.onnx",
    )
    make_pass("transformer_fusion").run(src, fused, context(model_type="bert"))
    make_pass("int8_dynamic").run(fused, dst, context())
    counts = op_counts(dst)
    assert counts["MatMulInteger"] == 2
    assert counts["BiasGelu"] == 1 and counts["SkipLayerNormalization"] == 1
    _assert_int8_close(src, dst, random_feeds(model, 2, seed=8))


def test_fused_tiny_bert_quantizes_every_weight_matmul(
    tiny_bert_path: Path, tmp_path: Path
) -> None:
    fused, dst = tmp_path / "fused.onnx", tmp_path / "q.onnx"
    bert = context(model_type="bert", attributes={"num_heads": 2, "hidden_size": 32})
    make_pass("transformer_fusion").run(tiny_bert_path, fused, bert)
    make_pass("int8_dynamic").run(fused, dst, context())
    counts = op_counts(dst)
    assert counts["Attention"] == 2
    # 3 MatMuls per layer outside Attention, plus the pooler Gemm ORT rewrites as MatMul + Add.
    assert counts["MatMulInteger"] == 2 * 3 + 1
    feeds = bert_feeds(2)
    for ref, out in zip(run(tiny_bert_path, feeds), run(dst, feeds), strict=True):
        assert cosine(out[0], ref[0]) > 0.99


def test_applies_only_to_graphs_with_the_op_types() -> None:
    assert make_pass("int8_dynamic").applies_to(mlp(), context())
    # conv_net ends in a Gemm, which ORT's quantizer rewrites as MatMul + Add: it applies
    assert make_pass("int8_dynamic").applies_to(conv_net(), context())
    assert not make_pass("int8_dynamic", op_types=("Attention",)).applies_to(mlp(), context())
    assert make_pass("int8_dynamic", op_types=("Conv",)).applies_to(conv_net(), context())


def test_ort_pre_processing_hint_is_silenced_only_during_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = logging.getLogger()
    filters = list(root.filters)
    src = save(mlp(), tmp_path / "mlp.onnx")
    with caplog.at_level("WARNING"):
        make_pass("int8_dynamic").run(src, tmp_path / "q.onnx", context())
        logging.warning(
            "Please consider to run pre-processing before quantization."
        )  # after: passes
    assert caplog.text.count("pre-processing") == 1
    assert root.filters == filters
