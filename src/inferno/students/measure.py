"""Teacher against student, measured: what every student folder's ``report`` records.

Sizes and parameters come from the two ONNX files; accuracy, agreement and confidence from
ONNX Runtime sessions on the teacher's evaluation data; speed from the two sessions run in
turns (1 thread, a few hundred ms per model and mode, rounds interleaved so that both see
the same machine load). The speed figures are rough, not a benchmark: ``benchmarks/`` holds
those.
"""

from __future__ import annotations

import functools
import gzip
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from inferno.models.model import Model
from inferno.passes._io import cpu_session

Feeds = dict[str, np.ndarray]

LATENCY_BATCH = 1
THROUGHPUT_BATCH = 32
TIMING_THREADS = 1
TIMING_SECONDS = 0.2
"""Per model and per mode, split over ``TIMING_ROUNDS`` interleaved rounds."""
TIMING_ROUNDS = 3
CALIBRATION_BINS = 10


def parameters(path: Path) -> tuple[int, int]:
    """(all, non-zero) elements of the graph's floating-point initializers: the weights."""
    graph = onnx.load(str(path))
    total = nonzero = 0
    for tensor in graph.graph.initializer:
        values = onnx.numpy_helper.to_array(tensor)
        if values.dtype.kind == "f":
            total += values.size
            nonzero += int(np.count_nonzero(values))
    return total, nonzero


def gzip_bytes(path: Path) -> int:
    """Size of the file once gzip-compressed (level 9): what zeros in the weights buy."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))


def size_figures(path: Path) -> dict[str, int]:
    """Parameters (all and non-zero), file size and gzip size of one ONNX file."""
    total, nonzero = parameters(path)
    return {"params": total, "nonzero_params": nonzero, "onnx_bytes": Path(path).stat().st_size,
            "gzip_bytes": gzip_bytes(path)}


def _calls_ms(run: Callable[[], Any], seconds: float) -> list[float]:
    """Call ``run`` for about ``seconds`` (at least 3 times); the call times in ms."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def speed_figures(paths: dict[str, Path], single: Feeds, batch: Feeds, *,
                  threads: int = TIMING_THREADS,
                  seconds: float = TIMING_SECONDS) -> dict[str, dict[str, float]]:
    """Latency p50 at batch 1 and samples/s at the batch of ``batch``, per model, interleaved.

    Args:
        paths: role (``teacher``, ``student``) → ONNX file.
        single: feeds of one sample; batch: feeds of several.
    """
    sessions = {role: cpu_session(path, threads) for role, path in paths.items()}
    rows = len(next(iter(batch.values())))
    latency: dict[str, list[float]] = {role: [] for role in sessions}
    batch_ms: dict[str, list[float]] = {role: [] for role in sessions}
    for session in sessions.values():  # warm-up: first runs allocate
        session.run(None, single)
        session.run(None, batch)
    window = seconds / TIMING_ROUNDS
    for _ in range(TIMING_ROUNDS):
        for role, session in sessions.items():
            latency[role] += _calls_ms(functools.partial(session.run, None, single), window)
            batch_ms[role] += _calls_ms(functools.partial(session.run, None, batch), window)
    return {role: {"latency_ms_p50": round(statistics.median(latency[role]), 4),
                   "throughput_per_s": round(rows / statistics.median(batch_ms[role]) * 1e3, 1)}
            for role in sessions}


def outputs(model: Model, path: Path, batch_size: int = 256) -> np.ndarray:
    """The primary output of the graph at ``path`` on ``model``'s evaluation data (ORT, CPU)."""
    session = cpu_session(path, TIMING_THREADS)
    index = model.signature.primary_output()
    return np.concatenate([session.run(None, model.preprocessor.encode(batch))[index]
                           for batch in model.eval_data.batches(batch_size)])


def _probabilities(values: np.ndarray) -> np.ndarray:
    """Rows that already sum to 1 are kept; others (logits) go through a softmax."""
    if np.all(values >= 0) and np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        return values
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                      bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: |accuracy - confidence| over equal-width confidence bins,
    weighted by the share of samples in each bin (0 is perfectly calibrated)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def classification_figures(probabilities: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """Accuracy (when labelled), mean top probability and calibration error of one model."""
    probabilities = _probabilities(probabilities)
    figures = {"mean_top_probability": round(float(probabilities.max(axis=1).mean()), 4)}
    if labels is not None:
        figures["accuracy"] = round(float((probabilities.argmax(axis=1) == labels).mean()), 6)
        figures["calibration_error"] = round(calibration_error(probabilities, labels), 4)
    return figures


def compare(teacher: Model, student_path: Path, *, train_seconds: float,
            extra: dict[str, Any] | None = None, timing_seconds: float = TIMING_SECONDS) -> dict[str, Any]:
    """The report of a classification student against its teacher (both FP32, through ORT).

    Returns:
        ``{"teacher": {...}, "student": {...}, "ratios": {...}, "agreement", "eval_data",
        "train_seconds", "timing", ...extra}``; each side has params, nonzero_params,
        onnx_bytes, gzip_bytes, accuracy, mean_top_probability, calibration_error,
        latency_ms_p50 (batch 1) and throughput_per_s (batch 32).
    """
    paths = {"teacher": teacher.onnx_path, "student": student_path}
    labels = teacher.eval_data.labels
    predicted = {role: outputs(teacher, path) for role, path in paths.items()}
    sides: dict[str, dict[str, Any]] = {
        role: {**size_figures(path), **classification_figures(predicted[role], labels)}
        for role, path in paths.items()}
    encode = teacher.preprocessor.encode
    data = teacher.eval_data
    timing = speed_figures(paths, encode(next(data.batches(LATENCY_BATCH))),
                           encode(next(data.batches(THROUGHPUT_BATCH))), seconds=timing_seconds)
    for role in sides:
        sides[role].update(timing[role])
    agreement = (predicted["teacher"].argmax(axis=1) == predicted["student"].argmax(axis=1)).mean()
    return {**sides, "ratios": ratios(sides["teacher"], sides["student"]),
            "agreement": round(float(agreement), 6), "eval_data": data.source,
            "eval_samples": len(data), "train_seconds": round(train_seconds, 2),
            "timing": (f"ONNX Runtime CPU, {TIMING_THREADS} thread, batch {LATENCY_BATCH} p50 and "
                       f"batch {THROUGHPUT_BATCH} throughput, interleaved rounds: rough figures"),
            **(extra or {})}


def ratios(teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, float | None]:
    """Student / teacher for sizes (smaller is better), teacher / student for speed-ups."""
    def share(key: str) -> float | None:
        return round(student[key] / teacher[key], 4) if teacher.get(key) else None

    return {"params": share("params"), "nonzero_params": share("nonzero_params"),
            "onnx_bytes": share("onnx_bytes"), "gzip_bytes": share("gzip_bytes"),
            "latency_speedup": round(teacher["latency_ms_p50"] / student["latency_ms_p50"], 3),
            "throughput_speedup": round(student["throughput_per_s"] / teacher["throughput_per_s"], 3)}
