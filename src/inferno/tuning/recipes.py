"""Recipes: named sequences of passes that each produce one candidate variant.

A recipe is data, not code: adding a candidate means adding a line to ``RECIPES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inferno.runtimes.options import RuntimeOptions


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: tuple[tuple[str, dict[str, Any]], ...]
    """(pass name, options) applied in order to the FP32 graph."""
    precision: str
    """Precision of the graph: fp32, int8, int8w (weights only), mixed, fp16."""
    description: str
    tags: frozenset[str] = field(default_factory=frozenset)
    """``text`` / ``vision``: only built for models of that kind; empty = any."""
    compute: str = "fp32"
    """Precision the runtime computes float ops in: ``bf16`` asks runtimes that can (OpenVINO,
    PyTorch); ``fp16`` asks TensorRT (its FP16 flag) and PyTorch (FP16 weights) on a GPU."""
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    """Runtime knobs that belong to this recipe (recorded in the plan and replayed)."""

    @property
    def label(self) -> str:
        """Short precision label for tables: ``int8``, ``bf16``, ``int8w+bf16``."""
        if self.compute == "fp32":
            return self.precision
        return self.compute if self.precision == "fp32" else f"{self.precision}+{self.compute}"


def _r(name: str, steps: list[tuple[str, dict[str, Any]]], precision: str, description: str,
       tags: tuple[str, ...] = (), compute: str = "fp32", **options: Any) -> Recipe:
    return Recipe(name, tuple(steps), precision, description, frozenset(tags), compute, RuntimeOptions(**options))


PREPARE: tuple[str, dict[str, Any]] = ("prepare", {})
"""First step of every recipe that quantizes: Constant-node weights become initializers and
old opsets are upgraded, so the INT8 passes find weights on third-party graphs."""

PREPARATION_PASSES = frozenset({"prepare"})
"""Passes a recipe skips, rather than gives up on, when they do not apply (nothing to do)."""

# OpenVINO's activation group for INT8-weight MatMuls: measured on minilm (benchmarks/accelerate_cpu.py).
DQ_GROUP = 128


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        _r("fp32", [], "fp32", "the FP32 reference graph as exported"),
        _r("fp32-optimized", [("graph_optimization", {"level": "extended"})], "fp32",
           "ONNX Runtime graph optimizations applied offline"),
        _r("fp32-fused", [("transformer_fusion", {})], "fp32",
           "transformer fusions (attention, skip-layernorm, bias-gelu)", ("text",)),
        _r("int8-dynamic", [PREPARE, ("int8_dynamic", {"per_channel": False})], "int8",
           "dynamic INT8 MatMul, per-tensor weights"),
        _r("int8-dynamic-pc", [PREPARE, ("int8_dynamic", {"per_channel": True})], "int8",
           "dynamic INT8 MatMul, per-channel weights"),
        _r("fused-int8-dynamic-pc",
           [PREPARE, ("transformer_fusion", {"attention": False}),
            ("int8_dynamic", {"per_channel": True})],
           "int8", "skip-layernorm/gelu fusions, then dynamic INT8 per-channel", ("text",)),
        _r("int8-static-minmax", [PREPARE, ("int8_static", {"method": "minmax"})], "int8",
           "static INT8 QDQ, MinMax calibration"),
        _r("int8-static-entropy", [PREPARE, ("int8_static", {"method": "entropy"})], "int8",
           "static INT8 QDQ, entropy calibration", ("vision",)),
        _r("int8-static-percentile", [PREPARE, ("int8_static", {"method": "percentile"})], "int8",
           "static INT8 QDQ, percentile calibration", ("vision",)),
        _r("int8-nncf", [PREPARE, ("int8_nncf", {})], "int8",
           "NNCF post-training INT8 (its transformer scheme with SmoothQuant where the graph has attention)"),
        _r("int8-nncf-bf16", [PREPARE, ("int8_nncf", {}), ("bf16", {})], "int8",
           "NNCF post-training INT8; the float ops in BF16", compute="bf16"),
        # Symmetric activations: AMX/VNNI multiply signed INT8 without the zero-point term;
        # OpenVINO's FullyConnected measured 1.36x faster than the mixed preset's on AMX
        # (minilm, 16 x 128 tokens, one core). Fidelity decides, as for every candidate.
        _r("int8-nncf-sym", [PREPARE, ("int8_nncf", {"preset": "performance"})], "int8",
           "NNCF post-training INT8, symmetric activations (its performance preset)"),
        _r("int8-nncf-sym-bf16", [PREPARE, ("int8_nncf", {"preset": "performance"}), ("bf16", {})], "int8",
           "NNCF post-training INT8, symmetric activations; the float ops in BF16", compute="bf16"),
        # 0.03: accuracy control (minutes on minilm) only runs where plain NNCF's worst sample
        # comes near the default budget's cosine floor (0.95); elsewhere it is a no-op.
        _r("int8-nncf-ac",
           [PREPARE, ("int8_nncf", {"accuracy_control": True, "max_cosine_drop": 0.03})], "mixed",
           "NNCF INT8 with accuracy control: the costliest quantizers reverted to float until the "
           "worst calibration sample's cosine drops by at most 0.03"),
        _r("int8-mixed", [PREPARE, ("mixed_precision", {"base": "dynamic"})], "mixed",
           "dynamic INT8 keeping the most error-sensitive MatMuls in FP32", ("text",)),
        _r("int8-mixed-static", [PREPARE, ("mixed_precision", {"base": "static"})], "mixed",
           "static INT8 keeping the most error-sensitive nodes in FP32", ("vision",)),
        _r("bf16", [("bf16", {})], "fp32", "FP32 graph computed in BF16 by the runtime",
           compute="bf16"),
        _r("int8w", [PREPARE, ("int8_weight_only", {})], "int8w",
           "INT8 weights; activations quantized per group at run time (OpenVINO)",
           dynamic_quantization_group_size=DQ_GROUP),
        _r("int8w-bf16", [PREPARE, ("int8_weight_only", {}), ("bf16", {})], "int8w",
           "INT8 weights with per-group dynamic activation quantization; the rest in BF16",
           compute="bf16", dynamic_quantization_group_size=DQ_GROUP),
        _r("fp16", [("fp16", {})], "fp16", "FP16 graph with FP32 inputs/outputs (GPU only)"),
        _r("fp16-compute", [("fp16_compute", {})], "fp32",
           "FP32 graph computed in FP16 by the runtime: TensorRT or PyTorch on a GPU, OpenVINO on an AVX512-FP16 CPU",
           compute="fp16"),
        _r("fused-fp16", [("transformer_fusion", {"use_gpu": True}), ("fp16", {})], "fp16",
           "transformer fusions for the GPU, then an FP16 graph (ORT CUDA; GPU only)", ("text",)),
    ]
}


SOURCE_EQUIVALENT_PASSES = frozenset({"bf16", "fp16_compute"})
"""Passes that leave the graph as exported: a variant made only of these is the source
module at another runtime precision, so PyTorch runtimes can run it from the source."""


def source_equivalent(recipe: Recipe) -> bool:
    return all(name in SOURCE_EQUIVALENT_PASSES for name, _ in recipe.steps)
