"""``graph_optimization``: ONNX Runtime's graph optimizations, applied once and saved offline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from inferno.passes._io import check_model, translate_errors
from inferno.passes.base import Pass, PassContext, PassOptions, register

log = logging.getLogger(__name__)

LEVELS: dict[str, str] = {
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
"""Option value → ``onnxruntime.GraphOptimizationLevel`` member."""


@register
class GraphOptimization(Pass):
    """Run ONNX Runtime's graph optimizer on the CPU execution provider and save the result.

    ``SessionOptions.optimized_model_filepath`` makes ORT write the graph it built at load
    time, so later loads skip the optimization work. What each level writes:

    - ``basic``: constant folding, redundant-node elimination, Conv/BN-style fusions; the
      graph stays standard ONNX and runs anywhere.
    - ``extended``: adds ORT contrib-op fusions (``FusedMatMul``, ``Gelu``,
      ``SkipLayerNormalization``, ``Attention``, ...) in the ``com.microsoft`` domain; only
      ONNX Runtime can run the result.
    - ``all``: adds layout transformations for the CPU EP it was built on (``NchwcConv``,
      ``ReorderInput``/``ReorderOutput``, ...). ORT's own documentation warns against saving
      this level: the graph is tied to the CPU EP and the instruction set of the machine that
      wrote it. Use it only when the artifact will be served on the same kind of machine.
    """

    name = "graph_optimization"
    precision = "fp32"

    class Options(PassOptions):
        level: Literal["basic", "extended", "all"] = "extended"
        """ORT optimization level to apply and save (see the class docstring for portability)."""

    options: Options

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Load ``src`` in an ORT CPU session at the chosen level; ORT writes ``dst``.

        Raises:
            PassError: ``src`` is missing, corrupt, or ORT cannot build a session from it.
        """
        import onnxruntime as ort

        check_model(src, self.name)
        with translate_errors(self.name, src):
            options = ort.SessionOptions()
            options.graph_optimization_level = getattr(
                ort.GraphOptimizationLevel, LEVELS[self.options.level]
            )
            options.optimized_model_filepath = str(dst)
            options.intra_op_num_threads = max(1, ctx.threads)
            options.log_severity_level = 3
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        log.debug("saved %s-level ORT graph to %s", self.options.level, dst)


__all__ = ["LEVELS", "GraphOptimization"]
