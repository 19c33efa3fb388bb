"""Accuracy and fidelity of a variant's outputs against the reference and the labels."""

from __future__ import annotations

import numpy as np

from inferno.config import Budget
from inferno.models.signature import Task


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
        return {"relative_error_mean": float(rel.mean()), "relative_error_max": float(rel.max())}
    cos = _cosine(out, ref)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


def within_budget(metrics: dict[str, float], reference: dict[str, float], budget: Budget) -> bool:
    """Classifier accuracy (or top-1 agreement) may drop by ``max_accuracy_drop``; others keep cosine."""
    if "accuracy" in metrics:
        return reference["accuracy"] - metrics["accuracy"] <= budget.max_accuracy_drop + 1e-9
    if "agreement" in metrics:
        return 1.0 - metrics["agreement"] <= budget.max_accuracy_drop + 1e-9
    if "relative_error_mean" in metrics:
        return metrics["relative_error_mean"] <= budget.max_accuracy_drop + 1e-9
    return (
        metrics["cosine_mean"] >= budget.min_cosine_mean - 1e-9
        and metrics["cosine_min"] >= budget.min_cosine_min - 1e-9
    )
