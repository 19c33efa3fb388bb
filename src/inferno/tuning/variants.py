"""Build the candidate variants of a model by running each recipe's passes.

Each variant records what its passes changed (op counts before and after, integer ops). A
graph that does not back its recipe's label — an int8 recipe whose graph has no integer
compute, an fp32 rewrite with the source's op counts — is not built: ``build_variant``
returns a reason starting with ``no-op:`` instead, so it is never measured under that label.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from inferno.config import AccelerateConfig
from inferno.errors import InfernoError
from inferno.models.model import Model
from inferno.models.text import TextPreprocessor
from inferno.passes import PASSES, PassContext, integer_op_count, make_pass, op_counts
from inferno.passes.base import NothingToDo
from inferno.runtimes import Artifact
from inferno.tuning.recipes import PREPARATION_PASSES, RECIPES, Recipe, source_equivalent

log = logging.getLogger(__name__)

ORT_DOMAINS = {"com.microsoft", "com.microsoft.nchwc"}
GPU_MAX_BATCH = 256
"""Largest batch GPU runtimes prepare for (TensorRT profiles, CUDA graph buckets): the
serving default for a GPU plan."""

FLOAT_COMPUTE = ("MatMul", "Conv", "Gemm")
"""The float ops an INT8 recipe exists to quantize; no-op messages report their counts."""

INTEGER_COMPUTE = frozenset({
    "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM", "QGemm", "QAttention",
})
"""Integer kernels that replace a float compute op (with every ``QLinear*`` op)."""


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    recipe: Recipe
    passes: tuple[str, ...]
    ort_only: bool
    """The graph uses ONNX Runtime contrib ops, which other runtimes cannot load."""
    integer_ops: int = 0
    """Nodes of the final graph that compute or convert in integers (QuantizeLinear,
    MatMulInteger, QLinearConv, ...): what an ``int8`` label must be backed by."""
    op_delta: dict[str, int] = field(default_factory=dict)
    """Op type → count after minus count before, over all of the recipe's passes (changed types only)."""

    @property
    def precision(self) -> str:
        return self.recipe.label

    @property
    def description(self) -> str:
        return self.recipe.description

    def artifact(self, input_names: tuple[str, ...]) -> Artifact:
        return Artifact(self.path, input_names, self.recipe.precision, self.recipe.compute,
                        options=self.recipe.options)

    @property
    def size_mb(self) -> float:
        files = [self.path, *self.path.parent.glob(self.path.stem + ".onnx.data")]
        return sum(f.stat().st_size for f in files if f.exists()) / 2**20


def model_kind(model: Model) -> str:
    if model.is_text:
        return "text"
    if any(len(t.shape) == 4 and t.dtype.startswith("float") for t in model.signature.inputs):
        return "vision"
    return "tensor"


def select_recipes(model: Model, names: Sequence[str] | None) -> list[Recipe]:
    """Recipes that fit the model's kind, or exactly ``names`` when given."""
    if names is not None:
        return [RECIPES[n] for n in names]
    kind = model_kind(model)
    return [r for r in RECIPES.values() if not r.tags or kind in r.tags]


def build_variant(recipe: Recipe, model: Model, ctx: PassContext, workdir: Path) -> Variant | str:
    """Run the recipe's passes; return the Variant, or the reason it was not built.

    A graph that does not back the recipe's label (an int8 recipe that quantized nothing, an
    fp32 rewrite that changed nothing) is not built: the reason starts with ``no-op:``.
    """
    result = _run_steps(recipe, model, ctx, workdir)
    if isinstance(result, str):
        return result
    current, applied = result
    final = workdir / f"{recipe.name}.onnx"
    if current == model.onnx_path:
        shutil.copyfile(current, final)
    else:
        current.rename(final)
    graph = onnx.load(str(final), load_external_data=False)
    before = op_counts(onnx.load(str(model.onnx_path), load_external_data=False))
    after = op_counts(graph)
    reason = no_op_reason(recipe, graph, before, after)
    if reason is not None:
        final.unlink()
        return reason
    domains = {op.domain for op in graph.opset_import}
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in sorted({*before, *after})}
    return Variant(
        recipe.name, final, recipe, tuple(applied), ort_only=bool(domains & ORT_DOMAINS),
        integer_ops=integer_op_count(after), op_delta={op: d for op, d in delta.items() if d},
    )


def _run_steps(
    recipe: Recipe, model: Model, ctx: PassContext, workdir: Path
) -> tuple[Path, list[str]] | str:
    """Apply the recipe's passes in order: (last graph, passes applied), or why it stopped."""
    current, applied = model.onnx_path, []
    for step, (pass_name, options) in enumerate(recipe.steps):
        if pass_name not in PASSES:
            return f"pass {pass_name!r} is not available"
        graph_pass = make_pass(pass_name, **options)
        proto = onnx.load(str(current), load_external_data=False)
        if not graph_pass.applies_to(proto, ctx):
            if pass_name in PREPARATION_PASSES:
                continue  # the graph is already what the later passes need
            return f"{pass_name} does not apply to this model on this machine"
        target = workdir / f"{recipe.name}.{step}.onnx"
        try:
            graph_pass.run(current, target, ctx)
        except NothingToDo as exc:
            return f"no-op: {exc}"
        except InfernoError as exc:
            return f"{pass_name} failed: {exc}"
        except Exception as exc:  # a third-party tool failing on this graph: record, keep going
            reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
            log.warning("pass %s failed on %s: %s", pass_name, model.name, reason)
            log.debug("pass %s failed on %s", pass_name, model.name, exc_info=True)
            return f"{pass_name} failed: {reason}"
        applied.append(graph_pass.describe())
        current = target
    return current, applied


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def quantizes_compute(graph: onnx.GraphProto, counts: dict[str, int]) -> bool:
    """True when an integer kernel replaced a compute op, or Q → DQ pairs feed a MatMul/Conv/Gemm.

    ``counts`` (``op_counts`` of the model) covers subgraphs; the QDQ pattern is looked for
    in the main graph only.
    """
    if any(op in INTEGER_COMPUTE or op.startswith("QLinear") for op in counts):
        return True
    producers = _producers(graph)
    for node in graph.node:
        if node.op_type not in FLOAT_COMPUTE:
            continue
        for name in node.input:
            dq = producers.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producers.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    return True
    return False


def dequantized_weights(graph: onnx.GraphProto, counts: dict[str, int]) -> int:
    """``DequantizeLinear`` nodes reading an initializer (plus ``MatMulNBits``): weight-only INT8."""
    weights = {init.name for init in graph.initializer}
    dq = sum(1 for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights)
    return dq + counts.get("MatMulNBits", 0)


def has_float16(graph: onnx.GraphProto) -> bool:
    """True when an initializer, a Cast or a graph input/output of the main graph is float16."""
    fp16 = onnx.TensorProto.FLOAT16
    values = [*graph.input, *graph.output, *graph.value_info]
    return (
        any(init.data_type == fp16 for init in graph.initializer)
        or any(v.type.tensor_type.elem_type == fp16 for v in values)
        or any(
            a.name == "to" and a.i == fp16
            for n in graph.node if n.op_type == "Cast" for a in n.attribute
        )
    )


def no_op_reason(
    recipe: Recipe, model: onnx.ModelProto, before: dict[str, int], after: dict[str, int]
) -> str | None:
    """Why the graph does not back the recipe's label (starts with ``no-op:``), or None.

    int8 and mixed need integer compute (see ``quantizes_compute``), int8w weights behind
    ``DequantizeLinear``, fp16 float16 tensors; an fp32 rewrite must change the op counts.
    Recipes made only of runtime-precision passes (``SOURCE_EQUIVALENT_PASSES``) and the
    reference itself are expected to leave the graph as it is.
    """
    if not recipe.steps or source_equivalent(recipe):
        return None
    graph = model.graph
    compute = ", ".join(  # Gemm only where the source has one: "MatMul 13, Conv 0"
        f"{op} {before.get(op, 0)}" for op in FLOAT_COMPUTE if op != "Gemm" or before.get(op)
    )
    if recipe.precision in ("int8", "mixed") and not quantizes_compute(graph, after):
        return (f"no-op: {recipe.name} quantized nothing "
                f"({compute} → {integer_op_count(after)} integer ops)")
    if recipe.precision == "int8w" and not dequantized_weights(graph, after):
        return f"no-op: {recipe.name} put no weight behind DequantizeLinear ({compute})"
    if recipe.precision == "fp16" and not has_float16(graph):
        return f"no-op: {recipe.name} left no float16 tensor in the graph"
    if recipe.precision == "fp32" and before == after:
        return (f"no-op: {recipe.name} left every op count unchanged "
                f"({sum(after.values())} nodes): it is the fp32 variant again")
    return None


def build_variants(
    recipes: Sequence[Recipe], model: Model, ctx: PassContext, workdir: Path,
    on_step: Callable[[str], None] = lambda _: None,
) -> tuple[list[Variant], dict[str, str]]:
    variants, skipped = [], {}
    for recipe in recipes:
        on_step(f"building {recipe.name}")
        result = build_variant(recipe, model, ctx, workdir)
        if isinstance(result, str):
            log.info("recipe %s not built: %s", recipe.name, result)
            skipped[recipe.name] = result
        else:
            variants.append(result)
    return variants, skipped


def artifact_for(model: Model, variant: Variant | None, cfg: AccelerateConfig) -> Artifact:
    """What a runtime loads (None: the eager baseline, the source module). Variants whose graph
    is the unmodified export also carry the source module (PyTorch runtimes run it at the
    variant's precision); every variant carries the shape options that GPU runtimes size their
    buckets and TensorRT profiles by."""
    names = model.signature.input_names
    if variant is None:
        return Artifact(None, names, torch_factory=model.torch_factory)
    artifact = variant.artifact(names)
    shapes: dict[str, Any] = {"max_batch_size": max(cfg.batch_size, GPU_MAX_BATCH), "opt_batch_size": cfg.batch_size,
                              # verified by the loader; runtimes must not split on axis 0
                              "batch_first": model.signature.batch_first}
    if isinstance(model.preprocessor, TextPreprocessor):
        shapes |= {"sequence_inputs": tuple(model.preprocessor.input_names),
                   "max_sequence_length": model.preprocessor.max_length}
    factory = model.torch_factory if source_equivalent(variant.recipe) else None
    return replace(artifact, torch_factory=factory, options=artifact.options.with_defaults(**shapes))
