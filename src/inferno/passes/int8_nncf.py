"""``int8_nncf``: post-training INT8 with NNCF (``[openvino]`` extra), written as an ONNX QDQ graph.

NNCF (OpenVINO's compression framework) is what a careful user of OpenVINO reaches for:
``nncf.quantize`` places quantizers by hardware-aware patterns (a transformer's attention
matmuls too, not only its linear layers), applies SmoothQuant to transformers and corrects
the bias that quantization shifts. Its ONNX backend writes ``QuantizeLinear`` /
``DequantizeLinear`` pairs, so the result stays an ONNX graph: OpenVINO runs it as INT8 and
ONNX Runtime can load it too (measured like every other variant).

- ``model_type="auto"`` uses NNCF's transformer scheme when the graph has attention (a
  Softmax and a MatMul of two activations, such as queries × keys), the default scheme
  otherwise. The structure decides, not the model's name: a user's own transformer gets it.
- ``accuracy_control=True``: the plainly quantized graph is scored on the calibration
  samples (the worst sample's output cosine to the FP32 graph). Within ``max_cosine_drop``
  the pass raises ``NothingToDo``: that graph is the plain recipe's, and the variant is not
  built twice. Otherwise ``nncf.quantize_with_accuracy_control`` ranks the quantizers by what
  they cost and reverts the costliest to float, one by one, until the drop holds. The figure
  is in-sample (the same samples calibrate and score); the chooser judges the result on the
  evaluation data afterwards.

NNCF's progress bars are dropped and its notes kept to warnings: stdout keeps only what the CLI writes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import Field

from inferno.errors import MissingExtraError, PassError
from inferno.passes import _quant
from inferno.passes._io import cpu_session, load_model, op_types, save_model, translate_errors
from inferno.passes._sensitivity import sample_cosines
from inferno.passes.base import Feeds, NothingToDo, Pass, PassContext, PassOptions, register
from inferno.passes.int8_static import output_tail

log = logging.getLogger(__name__)

COMPUTE_OPS = frozenset({"MatMul", "Conv", "Gemm"})
"""Ops NNCF quantizes; a graph without any has nothing for it to do."""


def available() -> bool:
    return importlib.util.find_spec("nncf") is not None


def has_attention(model: onnx.ModelProto) -> bool:
    """True when the main graph has a Softmax and a MatMul whose inputs are both activations.

    Queries × keys (and weights × values) multiply two computed tensors; a linear layer
    multiplies by a weight. That, with a Softmax, is what marks attention in a graph whatever
    its names or exporter.
    """
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    constants |= {out for n in graph.node if n.op_type == "Constant" for out in n.output}
    softmax = any(n.op_type == "Softmax" for n in graph.node)
    return softmax and any(
        n.op_type == "MatMul" and not any(i in constants for i in n.input) for n in graph.node
    )


def fold_initializer_casts(model: onnx.ModelProto) -> int:
    """Replace each ``Cast`` of an initializer by the cast initializer (exact); the count.

    NNCF's ONNX front end reads a Cast's input type from value infos and fails with
    ``AttributeError: type`` when the input is an initializer, which ``prepare`` makes of
    exporters' Constant nodes (PaddleOCR's classifier has such a Cast).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type != "Cast" or node.input[0] not in initializers:
            continue
        to = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "to")
        dtype = helper.tensor_dtype_to_np_dtype(to)
        value = numpy_helper.to_array(initializers[node.input[0]]).astype(dtype)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    return len(folded)


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF's rich progress bars (written to stdout) dropped; its INFO notes off for the call."""
    from nncf.common.logging.logger import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)


def worst_cosine(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """The lowest per-sample cosine over every floating-point output of one batch."""
    scores = [
        float(sample_cosines(ref, np.asarray(out)).min())
        for ref, out in zip(reference, outputs, strict=True)
        if np.issubdtype(ref.dtype, np.floating) and ref.size
    ]
    return min(scores) if scores else 1.0


@register
class Int8Nncf(Pass):
    """Static INT8 by ``nncf.quantize`` (or its accuracy-controlled variant) on the ONNX graph."""

    name = "int8_nncf"
    precision = "int8"

    class Options(PassOptions):
        model_type: Literal["auto", "transformer", "default"] = "auto"
        """NNCF's quantization scheme: ``transformer`` (attention matmuls, SmoothQuant, no
        quantizers on LayerNorm/GELU paths) or the default one; ``auto`` looks for attention."""
        smooth_quant_alpha: float | None = None
        """SmoothQuant strength for MatMuls; None keeps NNCF's default for the model type,
        a negative value turns it off."""
        preset: Literal["performance", "mixed"] | None = None
        """Symmetric activations (``performance``) or asymmetric (``mixed``); None: NNCF's
        default for the model type."""
        fast_bias_correction: bool = True
        max_samples: int = Field(default=128, ge=1)
        """Most calibration feeds used: ``PassContext.samples`` (one sample each, at its own
        shape) when given, else ``calibration`` batches."""
        ignored: tuple[str, ...] = ()
        """Node names NNCF must leave in float."""
        accuracy_control: bool = False
        """Revert the costliest quantizers until ``max_cosine_drop`` holds; ``NothingToDo``
        when the plain graph already holds it (see the module doc)."""
        max_cosine_drop: float = Field(default=0.01, gt=0, lt=1)
        """For ``accuracy_control``: allowed drop of the worst sample's output cosine to FP32."""
        max_reverted: int | None = Field(default=None, ge=1)
        """For ``accuracy_control``: most quantizers reverted (None: as many as needed)."""

    options: Options

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """False without NNCF, without calibration batches, or without a MatMul/Conv/Gemm."""
        return available() and bool(ctx.calibration) and bool(op_types(model) & COMPUTE_OPS)

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Calibrate on ``ctx.calibration`` and write NNCF's QDQ graph to ``dst``.

        Raises:
            MissingExtraError: NNCF is not installed.
            PassError: no calibration data, a batch lacking a graph input, an unreadable
                ``src``, or a failure inside NNCF.
        """
        if not available():
            raise MissingExtraError("nncf", "openvino", self.name)
        if not ctx.calibration:
            raise PassError(
                f"{self.name}: needs calibration batches (PassContext.calibration is empty)"
            )
        model = load_model(src, self.name)
        fold_initializer_casts(model)
        samples = ctx.samples or ctx.calibration  # unpadded: padding widens no range
        feeds = _quant.model_feeds(samples, model, self.name, self.options.max_samples)
        transformer = self._transformer(model)
        with translate_errors(self.name, src), _quiet_nncf():
            quantized = self._quantize(model, feeds, transformer, ctx.threads)
        save_model(quantized, dst)
        log.debug(
            "%s: %s scheme, calibrated on %d batches%s", self.name,
            "transformer" if transformer else "default", len(feeds),
            ", accuracy-controlled" if self.options.accuracy_control else "",
        )

    def _transformer(self, model: onnx.ModelProto) -> bool:
        if self.options.model_type == "auto":
            return has_attention(model)
        return self.options.model_type == "transformer"

    def _quantize(
        self, model: onnx.ModelProto, feeds: list[Feeds], transformer: bool, threads: int
    ) -> onnx.ModelProto:
        import nncf

        dataset = nncf.Dataset(feeds)
        ignored = (*self.options.ignored, *output_tail(model))
        common: dict[str, Any] = {
            "subset_size": len(feeds),
            "fast_bias_correction": self.options.fast_bias_correction,
            "model_type": nncf.ModelType.TRANSFORMER if transformer else None,
            "ignored_scope": nncf.IgnoredScope(names=list(ignored), validate=False),
        }
        if self.options.preset is not None:
            common["preset"] = nncf.QuantizationPreset(self.options.preset)
        if self.options.smooth_quant_alpha is not None:
            common["advanced_parameters"] = nncf.AdvancedQuantizationParameters(
                smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(
                    matmul=self.options.smooth_quant_alpha
                )
            )
        quantized = nncf.quantize(model, dataset, **common)
        if not self.options.accuracy_control:
            return quantized
        score = _CosineScore(model, feeds, threads)
        worst, _ = score(quantized, feeds)
        if 1.0 - worst <= self.options.max_cosine_drop:
            raise NothingToDo(
                f"{self.name}: plain NNCF INT8 already keeps the worst calibration sample's "
                f"cosine at {worst:.4f} (allowed drop {self.options.max_cosine_drop:g}): "
                "accuracy control would revert nothing"
            )
        # NNCF's accuracy control takes the float model and quantizes it again itself (its
        # API has no entry for a quantized one): the plain run above is what decides whether
        # that cost is paid at all.
        log.info("%s: worst calibration cosine %.4f; reverting the costliest quantizers",
                 self.name, worst)
        restorer = {} if self.options.max_reverted is None else {
            "max_num_iterations": self.options.max_reverted
        }
        return nncf.quantize_with_accuracy_control(
            model, dataset, nncf.Dataset(feeds), score,
            max_drop=self.options.max_cosine_drop, drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
                **restorer
            ),
            **common,
        )


class _CosineScore:
    """NNCF's validation function: the worst sample's output cosine to the FP32 graph.

    NNCF calls it with the whole validation set and with single items in another order, so
    the reference output of a batch is looked up by the batch itself, computed once.
    """

    def __init__(self, model: onnx.ModelProto, feeds: Sequence[Feeds], threads: int) -> None:
        self._threads = threads
        reference = cpu_session(model.SerializeToString(), threads)
        self._reference = {self._key(f): reference.run(None, f) for f in feeds}

    @staticmethod
    def _key(feeds: Feeds) -> tuple[Any, ...]:
        return tuple((k, v.shape, v.tobytes()) for k, v in sorted(feeds.items()))

    def __call__(self, model: onnx.ModelProto, items: Iterable[Feeds]) -> tuple[float, list[float]]:
        session = cpu_session(model.SerializeToString(), self._threads)
        per_item = [
            worst_cosine(self._reference[self._key(f)], session.run(None, f)) for f in items
        ]
        return (min(per_item) if per_item else 1.0), per_item
