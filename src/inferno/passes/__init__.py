"""Optimization passes: each an ONNX-to-ONNX rewrite registered in ``PASSES``.

Importing this package registers every pass; ONNX Runtime's tools are imported only when a
pass runs.

=====================  =========  ==================================================
pass                   precision  what it does
=====================  =========  ==================================================
prepare                fp32       Constant-node weights → initializers, opset → 13 (exact)
graph_optimization     fp32       ORT graph optimizations, saved offline
transformer_fusion     fp32       ORT transformer fusions (Attention, SkipLayerNorm)
int8_dynamic           int8       ``quantize_dynamic``: INT8 weights, runtime ranges
int8_static            int8       ``quantize_static``: QDQ, calibrated ranges
int8_nncf              int8       ``nncf.quantize``: QDQ, NNCF's schemes, accuracy control
int8_weight_only       int8w      INT8 weights behind DequantizeLinear, float activations
mixed_precision        int8       INT8 except the measured most-sensitive nodes
bf16                   bf16       FP32 graph, computed in BF16 by the runtime
fp16                   fp16       FP16 conversion for GPUs
fp16_compute           fp16       FP32 graph, computed in FP16 by the runtime (GPUs)
=====================  =========  ==================================================
"""

from inferno.passes._io import INTEGER_OPS, integer_op_count, op_counts
from inferno.passes.base import PASSES, Pass, PassContext, PassOptions, make_pass, register
from inferno.passes.bf16 import Bf16
from inferno.passes.fp16 import Fp16, Fp16Compute
from inferno.passes.graph_optimization import GraphOptimization
from inferno.passes.int8_dynamic import Int8Dynamic
from inferno.passes.int8_nncf import Int8Nncf
from inferno.passes.int8_static import Int8Static
from inferno.passes.int8_weight_only import Int8WeightOnly
from inferno.passes.mixed_precision import MixedPrecision, MixedPrecisionReport, Sensitivity
from inferno.passes.prepare import Prepare
from inferno.passes.transformer_fusion import TransformerFusion

__all__ = [
    "INTEGER_OPS",
    "PASSES",
    "Bf16",
    "Fp16",
    "Fp16Compute",
    "GraphOptimization",
    "Int8Dynamic",
    "Int8Nncf",
    "Int8Static",
    "Int8WeightOnly",
    "MixedPrecision",
    "MixedPrecisionReport",
    "Pass",
    "PassContext",
    "PassOptions",
    "Prepare",
    "Sensitivity",
    "TransformerFusion",
    "integer_op_count",
    "make_pass",
    "op_counts",
    "register",
]
