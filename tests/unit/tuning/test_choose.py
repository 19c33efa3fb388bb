import numpy as np
import pytest

from inferno.config import Budget
from inferno.models.signature import Task
from inferno.tuning.accelerate import choose
from inferno.tuning.metrics import fidelity, within_budget
from inferno.tuning.report import Measurement


def m(variant: str, runtime: str = "onnxruntime", thr: float = 100.0, p50: float = 1.0,
      ok: bool = True, within: bool = True) -> Measurement:
    return Measurement(variant, runtime, "CPU", "fp32", throughput_per_s=thr, latency_ms_p50=p50,
                       within_budget=within, error=None if ok else "boom")


def test_fastest_within_budget_wins_not_the_first() -> None:
    measured = [m("fp32", thr=100), m("a", thr=300), m("b", thr=900, within=False), m("c", thr=500)]
    best, reason = choose(measured, "throughput")
    assert best.variant == "c"
    assert "within budget" in reason


def test_latency_objective_ranks_by_p50() -> None:
    measured = [m("fp32", thr=100, p50=2.0), m("a", thr=900, p50=1.5), m("b", thr=300, p50=0.4)]
    assert choose(measured, "latency")[0].variant == "b"


def test_failed_measurements_are_never_chosen() -> None:
    measured = [m("fp32", thr=100), m("fast-but-broken", thr=10_000, ok=False)]
    assert choose(measured, "throughput")[0].variant == "fp32"


def test_none_within_budget_keeps_fp32_on_fastest_runtime() -> None:
    measured = [
        m("fp32", "onnxruntime", thr=100, within=False),
        m("fp32", "openvino", thr=150, within=False),
        m("int8", thr=900, within=False),
    ]
    best, reason = choose(measured, "throughput")
    assert (best.variant, best.runtime) == ("fp32", "openvino")
    assert "no variant met the budget" in reason


def test_classification_fidelity_and_budget() -> None:
    ref = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]]
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 2])
    out = ref.copy()
    out[0] = np.eye(4)[3]  # one disagreement out of 10
    ref_metrics = fidelity(Task.CLASSIFICATION, ref, ref, labels)
    metrics = fidelity(Task.CLASSIFICATION, out, ref, labels)
    assert ref_metrics["accuracy"] == pytest.approx(0.9)
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["agreement"] == pytest.approx(0.9)
    assert not within_budget(metrics, ref_metrics, Budget())
    assert within_budget(metrics, ref_metrics, Budget(max_accuracy_drop=0.1))


def test_embedding_fidelity_uses_cosine_mean_and_min() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 8))
    out = ref + rng.normal(scale=0.01, size=ref.shape)
    out[3] = -ref[3]  # one sample flipped: the mean survives, the min does not
    metrics = fidelity(Task.EMBEDDING, out, ref, None)
    assert metrics["cosine_min"] == pytest.approx(-1.0, abs=1e-3)
    assert metrics["cosine_mean"] > 0.85
    assert not within_budget(metrics, {}, Budget(min_cosine_mean=0.8, min_cosine_min=0.5))
    assert within_budget(metrics, {}, Budget(min_cosine_mean=0.8, min_cosine_min=-1.0))
