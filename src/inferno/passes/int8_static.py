"""``int8_static``: INT8 weights and activations, ranges calibrated offline (ORT ``quantize_static``)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Literal

import onnx
from pydantic import Field

from inferno.errors import PassError
from inferno.passes import _quant
from inferno.passes._io import load_model, op_types, require_qdq_axis, translate_errors
from inferno.passes.base import Pass, PassContext, PassOptions, register

log = logging.getLogger(__name__)


@register
class Int8Static(Pass):
    """Static INT8 quantization in QDQ format with ``onnxruntime.quantization.quantize_static``.

    Activation ranges come from running ``ctx.calibration`` (one batch at a time, at most
    ``max_samples`` batches) through the graph; ``QuantizeLinear``/``DequantizeLinear`` pairs
    are inserted around the quantized ops and ORT's CPU EP fuses them into integer kernels at
    load. The graph is first put through ORT's ``quant_pre_process`` (symbolic + ONNX shape
    inference, basic optimization) — without it ORT cannot type the outputs of contrib ops
    and leaves most of a fused transformer unquantized. Calibration files live in a
    temporary directory that is removed afterwards.
    """

    name = "int8_static"
    precision = "int8"

    class Options(PassOptions):
        method: Literal["minmax", "entropy", "percentile"] = "minmax"
        """Calibration: observed min/max, KL-divergence (entropy) or a percentile of |x|.
        Entropy and percentile keep histograms of every tensor: memory grows with samples."""
        per_channel: bool = True
        """One weight scale per output channel (Conv, MatMul, Gemm)."""
        op_types: tuple[str, ...] | None = None
        """Op types to quantize; None quantizes every type ORT's QDQ quantizer supports."""
        nodes_to_exclude: tuple[str, ...] = ()
        """Node names to keep in FP32 (as named after pre-processing, which keeps the names of
        the nodes it does not fuse)."""
        percentile: float = Field(default=99.999, gt=0, le=100)
        """Percentile of |activation| that sets the range, for ``method="percentile"``."""
        max_samples: int = Field(default=64, ge=1)
        """Most calibration batches to use."""
        activation: Literal["uint8", "int8"] = "uint8"
        """Activation type: UINT8 (asymmetric) suits x86 CPUs, INT8 (symmetric) ARM and GPUs."""

    options: Options

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """False without calibration batches, or when no node has one of ``op_types``."""
        if not ctx.calibration:
            return False
        return self.options.op_types is None or bool(op_types(model) & set(self.options.op_types))

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Pre-process, calibrate on ``ctx.calibration`` and write the QDQ graph to ``dst``.

        Raises:
            PassError: no calibration data, a batch lacking a graph input, an unreadable
                ``src``, per-channel on an opset below 13 (run ``prepare`` first), or a
                failure inside ORT's quantizer.
        """
        if not ctx.calibration:
            raise PassError(
                f"{self.name}: needs calibration batches (PassContext.calibration is empty)"
            )
        model = load_model(src, self.name, weights=False)
        if self.options.per_channel:
            require_qdq_axis(model, self.name, src)
        feeds = _quant.model_feeds(ctx.calibration, model, self.name, self.options.max_samples)
        exclude = tuple(self.options.nodes_to_exclude) + output_tail(model)
        del model
        with (
            tempfile.TemporaryDirectory(prefix="inferno-int8-static-") as tmp,
            translate_errors(self.name, src),
        ):
            prepared = _quant.preprocess(src, Path(tmp))
            _quant.quantize_static(
                prepared,
                dst,
                feeds,
                method=self.options.method,
                per_channel=self.options.per_channel,
                activation=self.options.activation,
                op_types=self.options.op_types,
                percentile=self.options.percentile,
                nodes_to_exclude=exclude,
            )
        log.debug("%s calibrated on %d batches (%s)", self.name, len(feeds), self.options.method)


# Ops that only normalize or reshape what the graph returns: quantizing them clips outputs to
# 1/255 steps (probabilities that no longer sum to 1) and gains nothing.
_OUTPUT_OPS = {"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Reshape", "Flatten", "Squeeze"}


def output_tail(model: onnx.ModelProto) -> tuple[str, ...]:
    """Names of the output-only nodes (Softmax, Reshape, ...) between the last compute and the outputs."""
    producers = {out: node for node in model.graph.node for out in node.output}
    tail: list[str] = []
    pending = [o.name for o in model.graph.output]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.op_type not in _OUTPUT_OPS or node.name in tail:
            continue
        tail.append(node.name)
        pending.extend(node.input[:1])
    return tuple(n for n in tail if n)
