"""``mixed_precision``: measured sensitivity keeps the harmful node FP32 and reaches the target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from inferno.errors import PassError
from inferno.passes import MixedPrecision, make_pass
from inferno.passes._graft import graft, single_node_model, value_types
from inferno.passes._quant import quantize_dynamic, quantize_static
from inferno.passes._sensitivity import (
    dynamic_candidates,
    group_key,
    sample_cosines,
    static_candidates,
)
from inferno.passes.mixed_precision import METADATA_KEY, schedule

from .graphs import MLP_WIDTHS, bert_feeds, conv_net, mlp, op_counts, random_feeds, save
from .support import context, cosine, run

OUTLIER = "/layers.2/MatMul"
LAYERS = len(MLP_WIDTHS) - 1


def _mixed(tmp_path: Path, **options: object) -> tuple[MixedPrecision, Path, Path]:
    model = mlp(outlier_layer=2)
    src, dst = save(model, tmp_path / "outlier.onnx"), tmp_path / "mixed.onnx"
    mixed = make_pass("mixed_precision", **options)
    assert isinstance(mixed, MixedPrecision)
    mixed.run(src, dst, context(random_feeds(model, 8)))
    return mixed, src, dst


@pytest.mark.parametrize("base", ["dynamic", "static"])
def test_single_nodes_are_measured_by_grafting(
    base: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG", logger="inferno.passes.mixed_precision"):
        _mixed(tmp_path, base=base)
    assert "trial 1:" in caplog.text  # the whole-model quantization of every candidate
    assert "quantizing the whole model" not in caplog.text  # no single node fell back


def test_the_outlier_matmul_alone_makes_full_int8_useless(tmp_path: Path) -> None:
    # The premise of the next tests: quantizing everything fails, the outlier is why.
    model = mlp(outlier_layer=2)
    src = save(model, tmp_path / "outlier.onnx")
    make_pass("int8_dynamic", per_channel=True).run(src, tmp_path / "all.onnx", context())
    make_pass("int8_dynamic", per_channel=True, nodes_to_exclude=(OUTLIER,)).run(
        src, tmp_path / "but.onnx", context()
    )
    feeds = random_feeds(model, 2, seed=12)
    ref, full, but = (
        run(src, feeds)[0][0],
        run(tmp_path / "all.onnx", feeds)[0][0],
        run(tmp_path / "but.onnx", feeds)[0][0],
    )
    assert cosine(full, ref) < 0.9
    assert cosine(but, ref) > 0.999


def test_dynamic_keeps_exactly_the_outlier_in_fp32(tmp_path: Path) -> None:
    mixed, src, dst = _mixed(tmp_path)
    report = mixed.report
    assert report is not None
    assert report.fp32_nodes == (OUTLIER,)
    assert set(report.quantized_nodes) == {f"/layers.{i}/MatMul" for i in (0, 1, 3)}
    assert report.ranking[0].group == OUTLIER
    assert report.ranking[0].cosine < 0.9 < min(s.cosine for s in report.ranking[1:])
    assert report.reached and report.cosine >= 0.995
    assert report.trials[0][0] == 0 and report.trials[0][1] < 0.995  # k = 0 was tried and missed
    counts = op_counts(dst)
    assert counts["MatMulInteger"] == LAYERS - 1
    assert [n.name for n in onnx.load(str(dst)).graph.node if n.op_type == "MatMul"] == [OUTLIER]
    feeds = random_feeds(onnx.load(str(src)), 3, seed=13)  # held-out batches
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        assert cosine(out[0], ref[0]) > 0.995
        np.testing.assert_allclose(out[0], ref[0], rtol=0, atol=0.05 * float(np.abs(ref[0]).max()))


def test_report_is_stored_in_the_graph_metadata(tmp_path: Path) -> None:
    mixed, _, dst = _mixed(tmp_path)
    props = {p.key: p.value for p in onnx.load(str(dst)).metadata_props}
    stored = json.loads(props[METADATA_KEY])
    assert mixed.report is not None
    assert stored == json.loads(mixed.report.to_json())
    assert stored["fp32_nodes"] == [OUTLIER]
    assert stored["ranking"][0]["group"] == OUTLIER


def test_static_base_keeps_the_outlier_in_fp32(tmp_path: Path) -> None:
    mixed, src, dst = _mixed(tmp_path, base="static")
    report = mixed.report
    assert report is not None
    # quant_pre_process fused MatMul + Add into Gemm and named it after the MatMul.
    assert report.ranking[0].group.startswith(OUTLIER)
    assert report.ranking[0].group in report.fp32_nodes
    assert report.reached
    assert op_counts(dst)["QuantizeLinear"] > 0
    feeds = random_feeds(onnx.load(str(src)), 2, seed=14)
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        assert cosine(out[0], ref[0]) > 0.99


def test_an_unreachable_target_writes_the_best_graph_and_says_so(tmp_path: Path) -> None:
    mixed, _, dst = _mixed(tmp_path, max_fp32_fraction=0.0)
    report = mixed.report
    assert report is not None
    assert not report.reached
    assert report.fp32_nodes == ()
    assert [k for k, _ in report.trials] == [0]
    assert op_counts(dst)["MatMulInteger"] == LAYERS


def test_layer_granularity_groups_by_numbered_component(tmp_path: Path) -> None:
    mixed, _, _ = _mixed(tmp_path, granularity="layer")
    assert mixed.report is not None
    assert {s.group for s in mixed.report.ranking} == {f"/layers.{i}" for i in range(LAYERS)}
    assert mixed.report.fp32_groups == ("/layers.2",)


def test_tiny_bert_by_layer(tiny_bert_path: Path, tmp_path: Path) -> None:
    dst = tmp_path / "mixed.onnx"
    mixed = make_pass("mixed_precision", granularity="layer", target_cosine=0.999)
    mixed.run(tiny_bert_path, dst, context(bert_feeds(4)))
    assert isinstance(mixed, MixedPrecision) and mixed.report is not None
    groups = {s.group for s in mixed.report.ranking}
    assert groups == {"/bert/encoder/layer.0", "/bert/encoder/layer.1", "/bert/pooler/dense"}
    assert mixed.report.reached
    assert op_counts(dst).get("MatMulInteger", 0) == len(mixed.report.quantized_nodes)


def test_applies_only_with_calibration_and_candidates() -> None:
    feeds = random_feeds(mlp(), 1)
    assert not make_pass("mixed_precision").applies_to(mlp(), context())
    assert make_pass("mixed_precision").applies_to(mlp(), context(feeds))
    assert not make_pass("mixed_precision").applies_to(
        conv_net(), context(random_feeds(conv_net(), 1))
    )
    assert make_pass("mixed_precision", base="static").applies_to(
        conv_net(), context(random_feeds(conv_net(), 1))
    )


def test_run_without_calibration_raises(tmp_path: Path) -> None:
    src = save(mlp(), tmp_path / "mlp.onnx")
    with pytest.raises(PassError, match="calibration"):
        make_pass("mixed_precision").run(src, tmp_path / "o.onnx", context())


def test_no_candidate_raises(tmp_path: Path) -> None:
    model = mlp()
    src = save(model, tmp_path / "mlp.onnx")
    with pytest.raises(PassError, match=r"no node of \['Conv'\]"):
        make_pass("mixed_precision", op_types=("Conv",)).run(
            src, tmp_path / "o.onnx", context(random_feeds(model, 2))
        )


# --- the pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_k", "expected"),
    [
        (0, [0]),
        (1, [0, 1]),
        (2, [0, 1, 2]),
        (5, [0, 1, 2, 4, 5]),
        (8, [0, 1, 2, 4, 8]),
        (18, [0, 1, 2, 4, 8, 16, 18]),
    ],
)
def test_schedule(max_k: int, expected: list[int]) -> None:
    assert schedule(max_k) == expected


@pytest.mark.parametrize(
    ("name", "granularity", "group"),
    [
        ("/encoder/layer.3/attention/self/query/MatMul", "layer", "/encoder/layer.3"),
        (
            "/encoder/layer.3/attention/self/query/MatMul",
            "node",
            "/encoder/layer.3/attention/self/query/MatMul",
        ),
        ("/transformer/h.11/attn/c_attn/Gemm_MatMul", "layer", "/transformer/h.11"),
        ("/layer1/layer1.0/conv1/Conv", "layer", "/layer1/layer1.0"),
        ("/pooler/dense/Gemm_MatMul", "layer", "/pooler/dense"),
        ("MatMul_12", "layer", "MatMul_12"),
    ],
)
def test_group_key(name: str, granularity: str, group: str) -> None:
    assert group_key(name, granularity) == group


def test_sample_cosines() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, -1.0], [np.nan, 1.0]])
    np.testing.assert_allclose(sample_cosines(a, b), [1.0, 1.0, -1.0, 0.0])
    np.testing.assert_allclose(sample_cosines(np.array([1.0, 2.0]), np.array([2.0, 4.0])), [1.0])


def test_candidates_follow_what_each_quantizer_selects() -> None:
    model = conv_net()
    assert static_candidates(model, ("Conv", "Gemm")) == [
        ("/conv1/Conv", "/conv1/Conv"),
        ("/conv2/Conv", "/conv2/Conv"),
        ("/fc/Gemm", "/fc/Gemm"),
    ]
    # The dynamic quantizer rewrites Gemm as MatMul + Add and selects it by the new name.
    assert dynamic_candidates(model, ("MatMul",)) == [("/fc/Gemm_MatMul", "/fc/Gemm")]
    assert [c for c, _ in dynamic_candidates(mlp(), ("MatMul",))] == [
        f"/layers.{i}/MatMul" for i in range(LAYERS)
    ]


@pytest.mark.parametrize("node", ["/layers.1/MatMul", "/layers.3/MatMul"])
def test_graft_equals_ort_quantizing_the_whole_model_dynamic(node: str, tmp_path: Path) -> None:
    model = mlp()
    src = save(model, tmp_path / "mlp.onnx")
    quantize_dynamic(
        src,
        tmp_path / "whole.onnx",
        op_types=("MatMul",),
        per_channel=True,
        nodes_to_quantize=[node],
    )
    single = save(single_node_model(model, node, value_types(model)), tmp_path / "single.onnx")
    quantize_dynamic(
        single,
        tmp_path / "single_q.onnx",
        op_types=("MatMul",),
        per_channel=True,
        nodes_to_quantize=[node],
    )
    grafted = graft(model, node, onnx.load(str(tmp_path / "single_q.onnx")))
    assert grafted is not None
    assert op_counts(save(grafted, tmp_path / "grafted.onnx")) == op_counts(tmp_path / "whole.onnx")
    feeds = random_feeds(model, 2)
    for whole, ours in zip(
        run(tmp_path / "whole.onnx", feeds), run(tmp_path / "grafted.onnx", feeds), strict=True
    ):
        np.testing.assert_array_equal(ours[0], whole[0])


def test_graft_equals_ort_quantizing_the_whole_model_static(tmp_path: Path) -> None:
    model, node = conv_net(), "/conv2/Conv"
    src, cache = save(model, tmp_path / "conv.onnx"), tmp_path / "ranges.json"
    feeds = random_feeds(model, 4)
    common = {
        "method": "minmax",
        "per_channel": True,
        "activation": "uint8",
        "op_types": ("Conv", "Gemm"),
        "percentile": 99.999,
        "cache": cache,
    }
    quantize_static(src, tmp_path / "all.onnx", feeds, **common)  # calibrates, writes the cache
    quantize_static(src, tmp_path / "whole.onnx", feeds, nodes_to_quantize=[node], **common)
    single = save(single_node_model(model, node, value_types(model)), tmp_path / "single.onnx")
    quantize_static(single, tmp_path / "single_q.onnx", [], nodes_to_quantize=[node], **common)
    grafted = graft(model, node, onnx.load(str(tmp_path / "single_q.onnx")))
    assert grafted is not None
    test = random_feeds(model, 2, seed=3)
    for whole, ours in zip(
        run(tmp_path / "whole.onnx", test),
        run(save(grafted, tmp_path / "g.onnx"), test),
        strict=True,
    ):
        np.testing.assert_array_equal(ours[0], whole[0])


def test_graft_refuses_a_name_clash(tmp_path: Path) -> None:
    model, node = mlp(), "/layers.1/MatMul"
    single = save(single_node_model(model, node, value_types(model)), tmp_path / "single.onnx")
    quantize_dynamic(
        single,
        tmp_path / "q.onnx",
        op_types=("MatMul",),
        per_channel=False,
        nodes_to_quantize=[node],
    )
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    internal = next(
        o for n in quantized.graph.node for o in n.output if o != "/layers.1/MatMul_output_0"
    )
    model.graph.node[0].output[0] = internal  # the host now uses one of ORT's new tensor names
    model.graph.node[1].input[0] = internal
    assert graft(model, node, quantized) is None
