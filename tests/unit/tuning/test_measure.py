"""Rows counted by the signature (batch axis anywhere), timing on a fake clock, error messages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inferno.models.signature import Signature, TensorSpec
from inferno.tuning import measure
from inferno.tuning.accelerate import error_message
from inferno.tuning.measure import batches_per_s, timed_unit

# a state input first, its batch on axis 1; a scalar input; rows are on axis 1 of "state"
SIGNATURE = Signature(
    (TensorSpec("rate", "float32", (), None), TensorSpec("state", "float32", (2, "batch", 8), 1)),
    (TensorSpec("y", "float32", ("batch", 8)),),
)


def feeds(rows: int) -> dict[str, np.ndarray]:
    return {"rate": np.array(16000.0, dtype=np.float32), "state": np.zeros((2, rows, 8), np.float32)}


class FakeClock:
    """``time.perf_counter`` that advances ``step`` seconds on each call to the fake runtime."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now


class FakeRuntime:
    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.calls = clock, 0

    def run(self, feeds: dict[str, Any]) -> list[np.ndarray]:
        self.calls += 1
        self.clock.now += self.clock.step
        return [np.zeros(1)]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(0.01)
    monkeypatch.setattr(measure.time, "perf_counter", fake)
    return fake


def test_rows_follow_the_batch_axis_not_the_first_input() -> None:
    assert SIGNATURE.rows(feeds(5)) == 5  # len(first input) would fail on the scalar


def test_throughput_counts_rows_by_the_signature(clock: FakeClock) -> None:
    runtime = FakeRuntime(clock)
    rate = batches_per_s(runtime, [feeds(32), feeds(32), feeds(16)], SIGNATURE.rows)  # type: ignore[arg-type]
    assert rate == pytest.approx(80 / 0.03)


def test_a_timed_unit_wakes_the_runtime_then_times_whole_passes(clock: FakeClock) -> None:
    runtime = FakeRuntime(clock)
    unit = timed_unit(runtime, [feeds(32), feeds(16)], SIGNATURE.rows, 0.025)  # type: ignore[arg-type]
    calls = unit()
    assert runtime.calls == 5  # one untimed call (32 rows), then two whole passes: 0.02 s < 0.025 after one
    assert [rows for _, rows in calls] == [32, 16, 32, 16]
    assert sum(seconds for seconds, _ in calls) == pytest.approx(0.04)
    assert [rows for _, rows in unit()] == [32, 16, 32, 16]  # every turn the same work
    one = timed_unit(runtime, [feeds(1)], SIGNATURE.rows, 0.0)  # type: ignore[arg-type]
    assert one() == [(pytest.approx(0.01), 1.0)]  # at least one timed pass


def test_an_openvino_error_keeps_the_line_that_says_something() -> None:
    exc = RuntimeError(
        "Exception from src/inference/src/cpp/core.cpp:112:\n"
        "Exception from src/frontends/onnx/frontend/src/frontend.cpp:182:\n"
        "[ONNX Frontend] Conversion failed: Resize with mode 'cubic' is not supported\n"
        "  more detail"
    )
    assert error_message(exc) == (
        "RuntimeError: [ONNX Frontend] Conversion failed: Resize with mode 'cubic' is not supported"
    )


def test_an_error_message_is_capped_and_never_empty() -> None:
    assert len(error_message(ValueError("x" * 1000))) == 300
    assert error_message(ValueError("")) == "ValueError: "
    assert error_message(KeyError("src/a.cpp:1:")) == "KeyError: 'src/a.cpp:1:'"


class ShapedRuntime:
    """Returns a state-like output [2, rows, 3] whose values name the call and the row."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, feeds: dict[str, Any]) -> list[np.ndarray]:
        rows = feeds["state"].shape[1]
        out = np.empty((2, rows, 3), np.float32)
        out[:] = (self.calls * 100 + np.arange(rows))[None, :, None]
        self.calls += 1
        return [out]


def test_accuracy_pass_stacks_rows_from_the_outputs_batch_axis() -> None:
    outputs = measure.run_outputs(ShapedRuntime(), [feeds(2), feeds(3)], 0, batch_axis=1)  # type: ignore[arg-type]
    assert outputs.shape == (5, 2, 3)  # rows first, not 2 + 2 "rows" of the leading axis
    assert outputs[:, 0, 0].tolist() == [0, 1, 100, 101, 102]


def test_accuracy_pass_without_a_batch_axis_is_one_row_per_call() -> None:
    outputs = measure.run_outputs(ShapedRuntime(), [feeds(1), feeds(1)], 0, batch_axis=None)  # type: ignore[arg-type]
    assert outputs.shape == (2, 2, 1, 3)
