"""Thin, typed wrappers over ``onnxruntime.quantization`` shared by the INT8 passes.

ONNX Runtime's tools are imported inside the functions: importing
``onnxruntime.quantization`` appends ``onnxruntime/transformers`` to ``sys.path`` and costs
a third of a second, neither of which importing ``inferno.passes`` should do.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx

from inferno.errors import PassError
from inferno.passes.base import Feeds

log = logging.getLogger(__name__)

CALIBRATION_METHODS: dict[str, str] = {
    "minmax": "MinMax",
    "entropy": "Entropy",
    "percentile": "Percentile",
}
"""Our option value → ``onnxruntime.quantization.CalibrationMethod`` member."""

ACTIVATION_TYPES: dict[str, str] = {"uint8": "QUInt8", "int8": "QInt8"}
"""Our option value → ``onnxruntime.quantization.QuantType`` member."""

DYNAMIC_EXTRA_OPTIONS: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
"""Without a default type the dynamic quantizer refuses any MatMul fed by an ORT contrib op
(SkipLayerNormalization, Attention, ...): ONNX shape inference cannot type their outputs."""


class FeedsReader:
    """A ``CalibrationDataReader`` over in-memory feeds, one batch per ``get_next`` call.

    ORT's reader is an ABC with a ``__subclasshook__`` on ``get_next``, so this class is one
    without importing ORT here.
    """

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self._feeds = list(feeds)
        self._next = 0

    def get_next(self) -> Feeds | None:
        """The next batch, or None when all were given."""
        if self._next >= len(self._feeds):
            return None
        self._next += 1
        return self._feeds[self._next - 1]

    def __len__(self) -> int:
        return len(self._feeds)


def model_feeds(
    feeds: Sequence[Feeds], model: onnx.ModelProto, what: str, limit: int
) -> list[Feeds]:
    """The first ``limit`` batches, each reduced to the graph's inputs.

    Raises:
        PassError: a batch lacks one of the graph's inputs.
    """
    initializers = {init.name for init in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    selected = []
    for index, feed in enumerate(feeds[:limit]):
        missing = [n for n in names if n not in feed]
        if missing:
            raise PassError(
                f"{what}: calibration batch {index} lacks input(s) {missing}; "
                f"the graph takes {names}, the batch has {sorted(feed)}"
            )
        selected.append({n: feed[n] for n in names})
    return selected


class _DropPreprocessHints(logging.Filter):
    """Benign notes ORT's quantizer logs on the root logger for every call (or every weight):
    the "please pre-process" hint, and per-channel falling back to per-tensor for 1-D weights."""

    NOISE = ("pre-process", "is out-of-range for weight")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


@contextlib.contextmanager
def quiet_hints() -> Iterator[None]:
    """Drop ORT's repeated pre-processing hint for the duration of a call; other logs pass.

    Every call into ORT's quantization tools runs inside it (``preprocess``,
    ``quantize_dynamic``, ``quantize_static`` and through them ``mixed_precision``): their
    ``print()`` calls (calibrator progress, ``ONNXModel`` warnings) go to stderr, so stdout
    carries only what the CLI writes (``--json``).
    """
    hint_filter = _DropPreprocessHints()
    root = logging.getLogger()
    root.addFilter(hint_filter)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        root.removeFilter(hint_filter)


def preprocess(src: Path, work: Path) -> Path:
    """ORT's ``quant_pre_process`` (shape inference + basic graph optimization) into ``work``.

    Symbolic shape inference gives up on some exported graphs ("Incomplete symbolic shape
    inference"); then pre-processing is retried without it, and when that fails too the raw
    model is returned. On failure symbolic shape inference writes ``sym_shape_infer_temp.onnx``
    and its external data into the *current directory*, so the call runs with ``work`` as the
    working directory (a process-wide change: passes must not run concurrently with code
    that relies on relative paths).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, work = src.resolve(), work.resolve()  # relative paths would break under chdir
    out = work / "preprocessed.onnx"
    for skip_symbolic in (False, True):
        try:
            with contextlib.chdir(work), quiet_hints():
                quant_pre_process(str(src), str(out), skip_symbolic_shape=skip_symbolic)
        except Exception as exc:  # ORT raises bare Exception for incomplete shape inference
            log.debug("quant_pre_process(skip_symbolic_shape=%s) failed: %s", skip_symbolic, exc)
            continue
        if skip_symbolic:
            log.info("symbolic shape inference failed on %s; pre-processed without it", src)
        return out
    log.warning("quantization pre-processing failed on %s; quantizing the graph as it is", src)
    return src


def quantize_dynamic(
    src: Path,
    dst: Path,
    *,
    op_types: Sequence[str],
    per_channel: bool,
    reduce_range: bool = False,
    nodes_to_quantize: Sequence[str] = (),
    nodes_to_exclude: Sequence[str] = (),
) -> None:
    """``onnxruntime.quantization.quantize_dynamic`` with INT8 weights.

    An empty ``nodes_to_quantize`` means every node of ``op_types``, as in ORT.
    """
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    with quiet_hints():
        ort_quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=list(nodes_to_quantize) or None,
            nodes_to_exclude=list(nodes_to_exclude) or None,
            extra_options=dict(DYNAMIC_EXTRA_OPTIONS),
        )


def quantize_static(
    src: Path,
    dst: Path,
    feeds: Sequence[Feeds],
    *,
    method: str,
    per_channel: bool,
    activation: str,
    op_types: Sequence[str] | None,
    percentile: float,
    nodes_to_quantize: Sequence[str] = (),
    nodes_to_exclude: Sequence[str] = (),
    cache: Path | None = None,
) -> None:
    """``onnxruntime.quantization.quantize_static`` in QDQ format with INT8 weights.

    ``cache`` names a JSON file where ORT keeps the calibrated ranges: the first call
    calibrates and writes it, later calls with the same op types and method reuse it.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    extra: dict[str, Any] = {}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    kwargs: dict[str, Any] = {}
    if (
        cache is not None
        and "calibration_cache_path" in inspect.signature(ort_quantize_static).parameters
    ):
        kwargs["calibration_cache_path"] = cache  # newer ORT only; older versions recalibrate
    with quiet_hints():
        ort_quantize_static(
            src,
            dst,
            FeedsReader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=per_channel,
            activation_type=getattr(QuantType, ACTIVATION_TYPES[activation]),
            weight_type=QuantType.QInt8,
            nodes_to_quantize=list(nodes_to_quantize) or None,
            nodes_to_exclude=list(nodes_to_exclude) or None,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
            extra_options=extra,
            **kwargs,
        )
