"""Fidelity that fits the output: SNR and the largest difference where cosine misleads."""

from __future__ import annotations

import numpy as np
import pytest

from inferno.config import Budget
from inferno.models.signature import Task
from inferno.tuning.metrics import SNR_CAP_DB, fidelity, judge
from inferno.tuning.render import format_metrics


def detector_scores() -> tuple[np.ndarray, np.ndarray]:
    """Scores of ~1e-5 (many rows almost zero) and a variant off by at most 1.3e-7, as a text
    detector's OpenVINO FP32 was: cosine per row drops to ~0.97 on the near-zero rows."""
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 2e-5, size=(64, 50))
    ref[:8] = rng.uniform(0, 2e-8, size=(8, 50))  # background rows: values at the noise level
    out = ref + rng.uniform(-1.3e-7, 1.3e-7, size=ref.shape) * (rng.random(ref.shape) < 0.02)
    return out, ref


def test_near_zero_outputs_fail_cosine_but_pass_by_snr() -> None:
    out, ref = detector_scores()
    metrics = fidelity(Task.OTHER, out, ref, None)
    assert metrics["cosine_min"] < 0.95  # cosine alone would reject it
    assert metrics["snr_db"] > 40
    assert metrics["max_abs_diff"] <= 1.3e-7
    assert metrics["max_diff_of_range"] == pytest.approx(metrics["max_abs_diff"] / (ref.max() - ref.min()))
    assert judge(metrics, {}, Budget()) == (True, "snr")
    assert judge(metrics, {}, Budget(min_snr_db=80)) == (False, "cosine or snr")
    assert format_metrics(metrics, "snr").startswith("SNR ")
    assert "of range" in format_metrics(metrics, "snr") and "cos" in format_metrics(metrics, "snr")


def test_snr_is_ten_log_signal_over_noise() -> None:
    ref = np.ones((4, 10))
    out = ref + 0.1  # noise energy 1% of the signal's: 20 dB
    metrics = fidelity(Task.REGRESSION, out, ref, None)
    assert metrics["snr_db"] == pytest.approx(20.0)
    assert metrics["max_abs_diff"] == pytest.approx(0.1)
    assert metrics["max_diff_of_range"] > 1e299  # a constant reference has no range


def test_a_real_error_fails_both_and_says_so() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(32, 16))
    out = ref + rng.normal(scale=0.5, size=ref.shape)
    metrics = fidelity(Task.REGRESSION, out, ref, None)
    passed, criterion = judge(metrics, {}, Budget())
    assert not passed and criterion == "cosine or snr"
    text = format_metrics(metrics, criterion)
    assert text.startswith("cos ") and "SNR" in text


def test_cosine_passing_decides_first() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(32, 16))
    metrics = fidelity(Task.OTHER, ref + 1e-6, ref, None)
    assert judge(metrics, {}, Budget()) == (True, "cosine")
    assert format_metrics(metrics, "cosine").startswith("cos ")


def test_identical_outputs_have_a_finite_snr() -> None:
    ref = np.arange(12.0).reshape(3, 4)
    metrics = fidelity(Task.OTHER, ref, ref, None)
    assert metrics["snr_db"] == SNR_CAP_DB and metrics["max_abs_diff"] == 0
    assert format_metrics(metrics, "snr").startswith("identical")


def test_embeddings_keep_cosine_only() -> None:
    out, ref = detector_scores()
    metrics = fidelity(Task.EMBEDDING, out, ref, None)
    assert set(metrics) == {"cosine_mean", "cosine_min"}
    assert judge(metrics, {}, Budget()) == (False, "cosine")


def test_one_value_per_row_uses_relative_error_or_snr() -> None:
    ref = np.concatenate([np.full((10, 1), 1e-9), np.full((90, 1), 5.0)])
    out = ref + 1e-7  # huge relative error on the near-zero rows, nothing at all overall
    metrics = fidelity(Task.REGRESSION, out, ref, None)
    assert metrics["relative_error_mean"] > 0.01
    assert judge(metrics, {}, Budget()) == (True, "snr")


def test_classification_is_unchanged() -> None:
    ref = np.eye(3)[[0, 1, 2, 0]]
    metrics = fidelity(Task.CLASSIFICATION, ref, ref, np.array([0, 1, 2, 1]))
    assert set(metrics) == {"agreement", "accuracy"}
    assert judge(metrics, {"accuracy": 0.75}, Budget()) == (True, "accuracy")
    assert judge({"agreement": 0.5}, {}, Budget()) == (False, "agreement")
