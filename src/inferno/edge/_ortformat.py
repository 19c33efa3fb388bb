"""The bundle's model file: ONNX Runtime's ORT format where it loads and answers the same,
else the ONNX graph; and the shipped file's accuracy on the full evaluation data.

The ORT format is what ONNX Runtime's minimal (mobile/embedded) builds load, and it loads
faster than protobuf. A full ONNX Runtime build does *not* re-run the graph optimizers when
it loads an ORT-format file, so the file must carry them: it is saved at the *extended* level,
where the QDQ pairs become integer kernels (QLinearConv, QGemm, ...) that every CPU build of
ONNX Runtime has. Not the layout level above it: that bakes in this machine's blocked layouts
(NCHWc for AVX-512), which ORT itself warns are hardware specific. (Measured on digits, batch
1: the basic-level file ran 3.9x slower than its ONNX graph, because its Conv/Gemm stayed in
float between Quantize/Dequantize nodes; the extended-level file runs the INT8 kernels.)
A converted file that is slower than the ONNX graph it came from is not shipped either.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from inferno.models.model import Model
from inferno.tuning.measure import encode_batches
from inferno.tuning.metrics import fidelity

log = logging.getLogger(__name__)

ORT_FILE = "model.ort"
ONNX_FILE = "model.onnx"
TOLERANCE = 1e-4
"""Most absolute difference allowed between the ORT-format file's outputs and the graph's."""
EVAL_BATCH = 64
SLOWER = 1.5
"""A converted file more than this many times slower than its ONNX graph at batch 1 is not
shipped (a margin for the noise of a short timing on a shared machine: a file that lost its
integer kernels runs several times slower)."""


def session(path: Path, threads: int) -> Any:
    """A CPU session on ``path`` with ``threads`` intra-op threads (one inter-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def best_form(graph: Path, folder: Path, feeds: dict[str, np.ndarray], threads: int,
              max_size_mb: float | None) -> tuple[str, str, list[str], Any]:
    """Write the model file into ``folder``; return (file name, ``ort``/``onnx``, notes, a
    session on the shipped file).

    The ORT format is preferred; the ONNX graph is shipped instead when the conversion
    fails, the converted file does not load, answers differently or runs slower, or only the
    ONNX form fits the size budget.
    """
    graph_session = session(graph, threads)
    converted = folder / ORT_FILE
    problem, converted_session = _convert(graph, converted, feeds, graph_session, threads)
    if problem is None and max_size_mb is not None and converted.stat().st_size > max_size_mb * 2**20 \
            and graph.stat().st_size <= converted.stat().st_size:
        problem = "the ORT form is larger than the ONNX graph and the size budget is tight"
    if problem is None:
        return ORT_FILE, "ort", [], converted_session
    converted.unlink(missing_ok=True)
    note = f"shipped as ONNX: {problem}"
    log.info("edge bundle: %s", note)
    shutil.copyfile(graph, folder / ONNX_FILE)
    return ONNX_FILE, "onnx", [note], graph_session


def _convert(graph: Path, target: Path, feeds: dict[str, np.ndarray], graph_session: Any,
             threads: int) -> tuple[str | None, Any]:
    """Save ``graph`` in ORT format at ``target``; return (None, its session) when it loads,
    answers like ``graph_session`` and is not slower, else (why not, None)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.save_model_format", "ORT")
    try:
        ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        converted = session(target, threads)
        answers = converted.run(None, feeds)
    except Exception as exc:  # ORT raises its own exception types for conversion and loading
        return f"the ORT-format conversion failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})", None
    worst = max(float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64))))
                for a, e in zip(answers, graph_session.run(None, feeds), strict=True))
    if worst > TOLERANCE:
        return f"the ORT-format file answers differently (max |Δ| {worst:.3g} > {TOLERANCE})", None
    ratio = _slowdown(converted, graph_session, {k: v[:1] for k, v in feeds.items()})
    if ratio > SLOWER:
        return f"the ORT-format file is {ratio:.1f}x slower than the ONNX graph at batch 1", None
    return None, converted


def _slowdown(converted: Any, graph: Any, feeds: dict[str, np.ndarray], rounds: int = 7,
              budget_s: float = 1.5) -> float:
    """Median over interleaved rounds of (converted ÷ graph) batch-1 time: the two are timed
    back to back in each round, so a shared machine's slow spells hit both."""
    converted.run(None, feeds)
    graph.run(None, feeds)
    calls = max(1, int(budget_s / rounds / 2 / max(_seconds(graph, feeds), 1e-6)))
    return float(np.median([_seconds(converted, feeds, calls) / _seconds(graph, feeds, calls)
                            for _ in range(rounds)]))


def _seconds(runner: Any, feeds: dict[str, np.ndarray], calls: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        runner.run(None, feeds)
    return (time.perf_counter() - start) / calls


def evaluate(bundle_session: Any, model: Model) -> dict[str, float]:
    """The shipped file on the whole evaluation data, against the FP32 graph and the labels."""
    reference = session(model.onnx_path, bundle_session.get_session_options().intra_op_num_threads)
    index = model.signature.primary_output()
    outputs, expected = [], []
    for feeds in encode_batches(model, model.eval_data, EVAL_BATCH):
        outputs.append(bundle_session.run(None, feeds)[index])
        expected.append(reference.run(None, feeds)[index])
    got, ref = np.concatenate(outputs), np.concatenate(expected)
    metrics = fidelity(model.task, got, ref, model.eval_data.labels)
    if model.eval_data.labels is not None and "accuracy" in metrics:
        metrics["reference_accuracy"] = fidelity(model.task, ref, ref, model.eval_data.labels)["accuracy"]
    return metrics
