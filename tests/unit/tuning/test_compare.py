"""Honest speed claims on made-up figures: rounds, ratios with their spread, the choice, load."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from inferno.tuning.compare import (
    WITHIN_NOISE,
    Ratio,
    assess,
    choose,
    format_ratio,
    median_ms,
    ratios,
    rows_per_second,
    run_rounds,
    summarize,
    with_ratio,
)
from inferno.tuning.measure import LoadReading
from inferno.tuning.report import Measurement


def m(variant: str, runtime: str = "onnxruntime", ratio: tuple[float, float, float] | None = None, *,
      thr: float = 100.0, within: bool = True, provider: str | None = None) -> Measurement:
    """A measurement; ``ratio`` = (low, median, high) over 9 re-timed rounds."""
    found = Measurement(variant, runtime, "CPU", "fp32", throughput_per_s=thr, latency_ms_p50=1.0,
                        within_budget=within, requested_provider=provider)
    if ratio is None:
        return found
    low, median, high = ratio
    return with_ratio(found, summarize([low, low, low, median, median, median, high, high, high]), None)


ANCHOR = m("fp32", ratio=(1.0, 1.0, 1.0))


def test_rounds_give_every_contender_one_turn_in_a_shuffled_order() -> None:
    calls: list[str] = []
    settled: list[int] = []

    def unit(key: str, seconds: float, rows: float) -> Callable[[], list[tuple[float, float]]]:
        def run() -> list[tuple[float, float]]:
            calls.append(key)
            return [(seconds, rows), (seconds, rows)]
        return run

    units = [("a", unit("a", 0.01, 32)), ("b", unit("b", 0.02, 32)), ("c", unit("c", 0.04, 32))]
    samples = run_rounds(units, 6, rows_per_second, settle=lambda: settled.append(1))
    assert samples == {"a": [3200.0] * 6, "b": [1600.0] * 6, "c": [800.0] * 6}
    assert len(calls) == 18 and len(settled) == 18  # a settling pause after every turn
    rounds = [tuple(calls[i:i + 3]) for i in range(0, len(calls), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len(set(rounds)) > 1  # the order changes: nobody always follows the same neighbour


def test_latency_figure_is_the_median_call_time() -> None:
    assert median_ms([(0.002, 1), (0.003, 1), (0.010, 1)]) == 3.0


def test_ratios_are_per_round_medians_with_the_interquartile_range() -> None:
    # the anchor's rate wanders with the machine; the variant stays 2x it in every round but one
    samples = {"ref": [100, 50, 100, 200, 100], "v": [200, 100, 200, 400, 300]}
    found = ratios(samples, "ref", "throughput")
    assert found["ref"].median == 1.0 and found["ref"].low == found["ref"].high == 1.0
    assert found["v"].median == 2.0 and found["v"].low == 2.0 and found["v"].high == 2.0
    assert found["v"].rounds == 5
    latency = ratios({"ref": [2.0, 2.0, 4.0], "v": [1.0, 1.0, 1.0]}, "ref", "latency")
    assert latency["v"].median == 2.0 and latency["v"].high == 3.0  # anchor ms over variant ms


def test_beating_the_anchor_beyond_the_spread_is_chosen() -> None:
    measured = [ANCHOR, m("int8", ratio=(1.25, 1.32, 1.40)), m("fp32-opt", ratio=(0.95, 1.05, 1.2))]
    best, reason = choose(measured, "throughput")
    assert best.variant == "int8"
    assert "1.32× (1.25–1.40)" in reason and "ONNX Runtime FP32" in reason


def test_within_noise_keeps_the_fp32_graph() -> None:
    measured = [ANCHOR, m("fp32-optimized", ratio=(0.9, 1.97, 2.6)), m("bf16", "openvino", ratio=(0.7, 1.1, 1.3))]
    best, reason = choose(measured, "throughput")
    assert (best.variant, best.runtime) == ("fp32", "onnxruntime")
    assert reason.startswith(WITHIN_NOISE) and "kept the FP32 graph" in reason
    assert "fp32-optimized@onnxruntime" in reason and "1.97× (0.90–2.60)" in reason


def test_a_solid_win_beats_a_higher_but_shaky_median() -> None:
    measured = [ANCHOR, m("shaky", ratio=(0.95, 1.6, 2.4)), m("solid", ratio=(1.2, 1.3, 1.4))]
    best, reason = choose(measured, "throughput")
    assert best.variant == "solid"
    assert "shaky@onnxruntime has a higher median" in reason


def test_a_variant_must_also_beat_the_twin() -> None:
    # two sessions of the same FP32 graph differed by up to 1.3x: a 1.25x low end is noise
    measured = [ANCHOR, m("int8", ratio=(1.25, 1.32, 1.40))]
    best, reason = choose(measured, "throughput", noise=Ratio(1.1, 0.9, 1.3, 9))
    assert best is ANCHOR and reason.startswith(WITHIN_NOISE) and "differ by up to 1.30×" in reason
    assert choose(measured, "throughput", noise=Ratio(1.0, 0.98, 1.02, 9))[0].variant == "int8"


def test_the_anchor_itself_fastest() -> None:
    best, reason = choose([ANCHOR, m("slow", ratio=(0.5, 0.6, 0.7))], "latency")
    assert best is ANCHOR and "FP32 graph on ONNX Runtime is the fastest" in reason


def test_without_the_fp32_graph_among_candidates_the_fastest_is_kept_and_flagged() -> None:
    best, reason = choose([m("int8-a", ratio=(0.9, 1.1, 1.2)), m("int8-b", ratio=(0.8, 1.0, 1.1))], "latency")
    assert best.variant == "int8-a"
    assert "not beyond the spread" in reason and "not among the candidates" in reason


def test_only_re_timed_rows_compete_when_there_are_some() -> None:
    # a sweep figure (not re-timed) is not comparable with the rounds' figures
    measured = [ANCHOR, m("int8", ratio=(1.2, 1.3, 1.4), thr=120), m("lucky-sweep", thr=10_000)]
    assert choose(measured, "throughput")[0].variant == "int8"


def test_out_of_budget_and_failed_rows_never_win() -> None:
    measured = [ANCHOR, m("fast", ratio=(3, 4, 5), within=False),
                Measurement("broken", "onnxruntime", "", "int8", error="boom")]
    assert choose(measured, "throughput")[0] is ANCHOR


def test_format_ratio_shows_spread_or_marks_a_single_measurement() -> None:
    assert format_ratio(m("v", ratio=(1.25, 1.32, 1.4))) == "1.32× (1.25–1.40)"
    sweep = Measurement("v", "onnxruntime", "", "fp32", speedup=4.34)
    assert format_ratio(sweep) == "~4.3×"
    assert format_ratio(Measurement("v", "onnxruntime", "", "fp32")) == "-"


def reading(share: float | None, before: float = 10.0, after: float = 10.0) -> LoadReading:
    return LoadReading(seconds=12.0, foreign_share=share, spin_before_ms=before, spin_after_ms=after)


def test_quiet_machine_and_a_tight_spread_say_nothing() -> None:
    info, notes = assess(reading(0.02), m("int8", ratio=(1.25, 1.32, 1.4)))
    assert notes == [] and info["loaded"] is False and info["uncertain"] is False
    assert info["foreign_cpu_share"] == 0.02


def test_a_loaded_machine_is_reported() -> None:
    info, notes = assess(reading(0.6), m("int8", ratio=(1.25, 1.32, 1.4)))
    assert info["loaded"] and info["uncertain"]
    assert len(notes) == 1 and "other processes used 60%" in notes[0] and "rough" in notes[0]


def test_a_machine_that_slowed_down_while_measuring_is_reported() -> None:
    info, notes = assess(reading(0.0, before=10.0, after=25.0), None)
    assert info["loaded"] and "2.50× as slow" in notes[0]


def test_a_wide_spread_is_not_a_solid_figure() -> None:
    info, notes = assess(reading(None), m("int8", ratio=(40.0, 149.0, 160.0)))
    assert info["uncertain"] and not info["loaded"]
    assert "wide spread" in notes[0] and "149.00× (40.00–160.00)" in notes[0]


def test_a_twin_that_strayed_is_reported() -> None:
    info, notes = assess(reading(0.0), None, Ratio(1.35, 1.2, 1.57, 9))
    assert info["uncertain"] and not info["loaded"]
    assert "same FP32 graph" in notes[0] and "1.35× (1.20–1.57)" in notes[0]
    assert assess(reading(0.0), None, Ratio(1.01, 0.99, 1.03, 9)) == (assess(reading(0.0), None)[0], [])


@pytest.mark.parametrize("share", [None, 0.0])
def test_an_unknown_or_zero_share_is_not_loaded(share: float | None) -> None:
    assert assess(reading(share), None)[0]["loaded"] is False
