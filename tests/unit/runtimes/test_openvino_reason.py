"""OpenVINO's error messages: the lines that say something, not the source locations."""

from __future__ import annotations

from inferno.runtimes.openvino import openvino_reason


def test_source_locations_are_dropped_and_the_reason_kept() -> None:
    exc = RuntimeError(
        "Exception from src/inference/src/cpp/core.cpp:109:\n"
        "Exception from src/inference/src/dev/plugin.cpp:53:\n"
        "Check 'input_shape.rank().is_static()' failed at src/core/shape_inference/include/x.hpp:42:\n"
        "While validating node 'Concat_7': Argument shapes are inconsistent.\n"
    )
    assert openvino_reason(exc) == "While validating node 'Concat_7': Argument shapes are inconsistent."


def test_long_reasons_are_cut_and_empty_ones_named() -> None:
    assert len(openvino_reason(RuntimeError("x" * 1000), limit=50)) == 50
    assert openvino_reason(RuntimeError("")) == "RuntimeError"
