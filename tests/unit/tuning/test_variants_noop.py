"""``build_variant``: a recipe's label must be backed by its graph; what the passes changed is counted.

On the PaddleOCR models "int8-dynamic-pc" used to come out with the FP32 graph's MatMuls and
no integer op, and was measured and labelled int8 all the same.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from inferno.models.model import EvalData, Model
from inferno.models.signature import Signature, Task, TensorSpec
from inferno.passes import PASSES, Pass, PassContext
from inferno.tuning.recipes import RECIPES, Recipe
from inferno.tuning.variants import Variant, build_variant, no_op_reason

from ..passes.graphs import conv_net, mlp, random_feeds, save, third_party
from ..passes.support import context, fake_hardware


def _model(proto: onnx.ModelProto, path: Path) -> Model:
    save(proto, path)
    inputs = tuple(
        TensorSpec(
            i.name,
            "float32",
            tuple(d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim),
        )
        for i in proto.graph.input
    )
    outputs = tuple(TensorSpec(o.name, "float32", ()) for o in proto.graph.output)
    feeds = random_feeds(proto, 1)[0]
    return Model(path.stem, path, Signature(inputs, outputs), Task.OTHER, EvalData(feeds))


def _work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_a_recipe_that_quantizes_nothing_is_a_no_op_and_not_built(tmp_path: Path) -> None:
    model = _model(third_party(mlp()), tmp_path / "paddle_like.onnx")
    recipe = Recipe(
        "dynamic-unprepared",
        (("int8_dynamic", {"per_channel": True}),),
        "int8",
        "dynamic INT8 without prepare: ORT finds no initializer weight",
    )
    work = _work(tmp_path)
    result = build_variant(recipe, model, context(), work)
    assert result == (
        "no-op: dynamic-unprepared quantized nothing (MatMul 4, Conv 0 → 0 integer ops)"
    )
    assert not (work / "dynamic-unprepared.onnx").exists()


def test_int8_dynamic_recipe_quantizes_constant_weights_and_counts_the_change(
    tmp_path: Path,
) -> None:
    model = _model(third_party(mlp()), tmp_path / "paddle_like.onnx")
    variant = build_variant(RECIPES["int8-dynamic-pc"], model, context(), _work(tmp_path))
    assert isinstance(variant, Variant), variant
    assert variant.passes[0] == "prepare"
    assert variant.op_delta["MatMulInteger"] == 4 and variant.op_delta["MatMul"] == -4
    assert variant.op_delta["Constant"] == -8  # the weights and biases became initializers
    assert variant.integer_ops == 8  # 4 DynamicQuantizeLinear + 4 MatMulInteger


def test_static_recipe_on_an_opset_11_graph_builds_a_loadable_int8_graph(tmp_path: Path) -> None:
    proto = third_party(conv_net(), opset=11)
    model = _model(proto, tmp_path / "old.onnx")
    ctx = context(random_feeds(proto, 4))
    variant = build_variant(RECIPES["int8-static-minmax"], model, ctx, _work(tmp_path))
    assert isinstance(variant, Variant), variant
    assert variant.integer_ops >= 9  # Q/DQ around the two Convs and the Gemm
    session = ort.InferenceSession(str(variant.path), providers=["CPUExecutionProvider"])
    session.run(None, random_feeds(proto, 1)[0])


def test_an_fp32_rewrite_that_changes_no_op_count_is_a_no_op(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = _model(proto, tmp_path / "relu.onnx")
    result = build_variant(RECIPES["fp32-optimized"], model, context(), _work(tmp_path))
    assert isinstance(result, str) and result.startswith("no-op: fp32-optimized")
    assert "fp32 variant again" in result


def test_runtime_precision_recipes_leave_the_graph_alone_and_are_built(tmp_path: Path) -> None:
    model = _model(mlp(), tmp_path / "mlp.onnx")
    ctx = PassContext(hardware=fake_hardware(cpu_features=("avx512_bf16",)))
    variant = build_variant(RECIPES["bf16"], model, ctx, _work(tmp_path))
    assert isinstance(variant, Variant), variant
    assert variant.op_delta == {} and variant.integer_ops == 0


def test_prepare_is_skipped_when_the_graph_needs_nothing(tmp_path: Path) -> None:
    model = _model(mlp(), tmp_path / "mlp.onnx")
    variant = build_variant(RECIPES["int8-dynamic-pc"], model, context(), _work(tmp_path))
    assert isinstance(variant, Variant), variant
    assert [p.split("(")[0] for p in variant.passes] == ["int8_dynamic"]


def test_every_quantizing_recipe_starts_with_prepare() -> None:
    quantizing = [r for r in RECIPES.values() if r.precision in ("int8", "int8w", "mixed")]
    assert quantizing
    assert all(r.steps[0] == ("prepare", {}) for r in quantizing)


def test_fp16_and_int8w_labels_need_their_tensors() -> None:
    fp32 = mlp()
    counts = {"MatMul": 4, "Add": 4, "Relu": 3}
    reason = no_op_reason(RECIPES["fp16"], fp32, counts, counts)
    assert reason is not None and reason.startswith("no-op: fp16")
    reason = no_op_reason(RECIPES["int8w"], fp32, counts, counts)
    assert reason is not None and reason.startswith("no-op: int8w")
    half = onnx.ModelProto()
    half.CopyFrom(fp32)
    half.graph.initializer[0].CopyFrom(
        onnx.numpy_helper.from_array(np.zeros((16, 64), np.float16), "layers.0.weight")
    )
    assert no_op_reason(RECIPES["fp16"], half, counts, counts) is None


class _Boom(Pass):
    name = "boom"

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        raise ValueError("the tool broke\nwith a second line")


def test_a_failing_pass_logs_one_line_and_the_traceback_only_at_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(PASSES, "boom", _Boom)
    model = _model(mlp(), tmp_path / "mlp.onnx")
    recipe = Recipe("exploding", (("boom", {}),), "fp32", "a pass that raises")
    with caplog.at_level(logging.DEBUG, logger="inferno.tuning.variants"):
        result = build_variant(recipe, model, context(), _work(tmp_path))
    assert result == "boom failed: ValueError: the tool broke"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "ValueError: the tool broke" in warnings[0].getMessage()
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)
