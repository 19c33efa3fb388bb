"""Accuracy and fidelity of a variant's outputs against the reference and the labels.

What is judged depends on what the output is:

- classification: accuracy on the labels (or top-1 agreement with the reference);
- embeddings: cosine similarity per row, mean and worst;
- regression and other outputs: cosine per row (one value per row: the relative error),
  *or* the signal-to-noise ratio over all elements. Cosine misjudges rows whose values are
  all near zero (a detector's scores of ~1e-5 that differ by 1e-7 can have cosine 0.97),
  the SNR does not; the largest difference relative to the reference's range is reported
  alongside, so one wild element is visible even where the SNR passes.
"""

from __future__ import annotations

import math

import numpy as np

from inferno.config import Budget
from inferno.models.signature import Task

SNR_CAP_DB = 200.0
"""The SNR reported for outputs equal to the reference (and the floor's mirror): finite, so
the report stays valid JSON."""


def fidelity(task: Task, outputs: np.ndarray, reference: np.ndarray,
             labels: np.ndarray | None) -> dict[str, float]:
    """Metrics of ``outputs`` (rows = samples) against the reference and, when given, labels."""
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    if task is Task.CLASSIFICATION:
        metrics = {"agreement": float(np.mean(out.argmax(1) == ref.argmax(1)))}
        if labels is not None:
            metrics["accuracy"] = float(np.mean(out.argmax(1) == labels.reshape(-1)))
        return metrics
    if out.shape[1] == 1:
        rel = np.abs(out - ref) / np.maximum(np.abs(ref), 1e-6)
        metrics = {"relative_error_mean": float(rel.mean()), "relative_error_max": float(rel.max())}
    else:
        cos = _cosine(out, ref)
        metrics = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    if task is not Task.EMBEDDING:
        metrics |= signal_metrics(out, ref)
    return metrics


def signal_metrics(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """``snr_db``: 10·log10(Σref² / Σ(out−ref)²) over every element; ``max_abs_diff``; and
    ``max_diff_of_range``: that difference over the reference's range (max − min)."""
    diff = np.abs(out - ref)
    noise = float(np.sum(diff * diff))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        snr = SNR_CAP_DB
    elif signal == 0.0:
        snr = -SNR_CAP_DB
    else:
        snr = min(max(10.0 * math.log10(signal / noise), -SNR_CAP_DB), SNR_CAP_DB)
    largest = float(diff.max()) if diff.size else 0.0
    spread = float(ref.max() - ref.min()) if ref.size else 0.0
    of_range = largest / spread if spread > 0 else (0.0 if largest == 0 else math.inf)
    return {"snr_db": snr, "max_abs_diff": largest, "max_diff_of_range": min(of_range, 1e300)}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


def judge(metrics: dict[str, float], reference: dict[str, float], budget: Budget) -> tuple[bool, str]:
    """Whether ``metrics`` meet the budget, and the criterion that decided.

    Classifiers: accuracy (or top-1 agreement) may drop by ``max_accuracy_drop``. Embeddings:
    cosine mean and min. Regression and other outputs: cosine (or, one value per row, the
    mean relative error within ``max_accuracy_drop``), else ``snr_db >= min_snr_db``.

    Returns:
        (passed, criterion): criterion is ``accuracy``, ``agreement``, ``cosine``,
        ``relative error`` or ``snr``; for a failure, every criterion tried (``cosine or snr``).
    """
    if "accuracy" in metrics:
        return reference["accuracy"] - metrics["accuracy"] <= budget.max_accuracy_drop + 1e-9, "accuracy"
    if "agreement" in metrics:
        return 1.0 - metrics["agreement"] <= budget.max_accuracy_drop + 1e-9, "agreement"
    if "relative_error_mean" in metrics:
        first = "relative error"
        passed = metrics["relative_error_mean"] <= budget.max_accuracy_drop + 1e-9
    else:
        first = "cosine"
        passed = (metrics["cosine_mean"] >= budget.min_cosine_mean - 1e-9
                  and metrics["cosine_min"] >= budget.min_cosine_min - 1e-9)
    if passed or "snr_db" not in metrics:
        return passed, first
    if metrics["snr_db"] >= budget.min_snr_db - 1e-9:
        return True, "snr"
    return False, f"{first} or snr"


def within_budget(metrics: dict[str, float], reference: dict[str, float], budget: Budget) -> bool:
    """``judge`` without the criterion."""
    return judge(metrics, reference, budget)[0]
