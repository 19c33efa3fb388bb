"""A report with re-timed ratios, criteria, integer ops and shapes: round trip and rendering."""

from __future__ import annotations

import json

from inferno.tuning.compare import Ratio, with_ratio
from inferno.tuning.render import COLUMNS, rows, summary, to_markdown
from inferno.tuning.report import Chosen, Measurement, Report

SNR = {"cosine_mean": 0.995, "cosine_min": 0.97, "snr_db": 48.2, "max_abs_diff": 1.3e-7,
       "max_diff_of_range": 0.0065}


def retimed(m: Measurement, low: float, median: float, high: float, eager: float | None = None) -> Measurement:
    return with_ratio(m, Ratio(median, low, high, 7), Ratio(eager, eager, eager, 7) if eager else None)


ANCHOR = retimed(Measurement("fp32", "onnxruntime", "CPUExecutionProvider", "fp32", size_mb=0.7,
                             throughput_per_s=45_000, latency_ms_p50=0.06, metrics=SNR, within_budget=True,
                             criterion="snr", integer_ops=0), 1, 1, 1, 2.2)
INT8 = retimed(Measurement("int8-static", "onnxruntime", "CPUExecutionProvider", "int8", size_mb=0.2,
                           throughput_per_s=60_000, latency_ms_p50=0.04, metrics=SNR, within_budget=True,
                           criterion="snr", integer_ops=14), 1.25, 1.32, 1.4, 2.9)
SWEEP = Measurement("bf16", "openvino", "CPU", "bf16", size_mb=0.7, throughput_per_s=30_000, latency_ms_p50=0.2,
                    metrics=SNR, within_budget=True, criterion="snr", speedup=0.66)
FAILED = Measurement("fp16", "openvino", "", "fp16", error="RuntimeError: [CPU] no fp16 here")
EAGER = retimed(Measurement("fp32", "torch", "cpu", "fp32", throughput_per_s=20_000, latency_ms_p50=0.3,
                            metrics=SNR, within_budget=True, criterion="snr"), 0.43, 0.45, 0.47, 1.0)


def report(uncertain: bool = False) -> Report:
    c = INT8
    chosen = Chosen(c.variant, c.runtime, c.provider, c.precision, c.throughput_per_s, c.latency_ms_p50,
                    c.metrics, True, c.speedup, "/tmp/x", "fastest, beyond the spread", None, None,
                    c.speedup_low, c.speedup_high, c.speedup_rounds, c.speedup_eager, c.criterion,
                    c.integer_ops)
    return Report(
        "detector", "det.onnx", "other", "throughput", 32, 2, {"min_snr_db": 30.0},
        {"source": "data.npz", "samples": 64, "shapes": {"image": [1, 3, 320, 320]}, "shapes_source": "--data"},
        {"runtime": "ONNX Runtime FP32", "metrics": {}}, {"cpu": {"model": "fake"}}, EAGER,
        (ANCHOR, INT8, SWEEP, FAILED), chosen,
        notes=("the machine was loaded while measuring",) if uncertain else (),
        timing={"anchor": "fp32@onnxruntime", "rounds": 7, "spread": "interquartile range",
                "loaded": uncertain, "uncertain": uncertain},
    )


def test_round_trip_keeps_the_new_fields() -> None:
    r = report(uncertain=True)
    again = Report.from_dict(json.loads(r.to_json()))
    assert again == r
    assert again.chosen.speedup_low == 1.25 and again.chosen.integer_ops == 14
    assert again.variants[1].retimed and not again.variants[2].retimed
    assert again.timing["rounds"] == 7 and again.evaluation["shapes"]["image"] == [1, 3, 320, 320]


def test_an_old_report_without_the_new_fields_still_loads() -> None:
    data = report().to_dict()
    del data["timing"]
    for m in data["variants"]:
        for key in ("speedup_low", "speedup_high", "speedup_rounds", "speedup_eager", "criterion", "integer_ops"):
            del m[key]
    assert Report.from_dict(data).variants[1].speedup_rounds == 0


def test_rows_show_ratio_with_spread_int_ops_and_the_judged_fidelity() -> None:
    table = {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in rows(report())}
    assert table["int8-static ★"]["× ORT FP32 (IQR)"] == "1.32× (1.25–1.40)"
    assert table["int8-static ★"]["int ops"] == "14"
    assert table["fp32"]["× ORT FP32 (IQR)"] == "1.00× (anchor)"
    assert table["bf16"]["× ORT FP32 (IQR)"] == "~0.7×"  # one sweep measurement: marked rough
    assert table["bf16"]["int ops"] == "-"
    assert table["fp32 (eager baseline)"]["× ORT FP32 (IQR)"] == "0.45× (0.43–0.47)"
    assert table["int8-static ★"]["fidelity"].startswith("SNR 48.2 dB, max |Δ| 0.65% of range")
    assert table["fp16"]["fidelity"] == "failed: RuntimeError: [CPU] no fp16 here"


def test_summary_states_what_the_ratio_is_against_and_its_spread() -> None:
    first, why, legend = summary(report()).splitlines()
    assert first.startswith("chosen: int8-static on onnxruntime (CPUExecutionProvider): "
                            "1.32× (1.25–1.40) vs ONNX Runtime FP32 (IQR, 7 rounds), 2.90× PyTorch eager")
    assert why == "why: fastest, beyond the spread"
    assert "median and interquartile range of 7 interleaved rounds" in legend
    shaky = summary(report(uncertain=True))
    assert "caution: the speed figures are uncertain" in shaky and "~2.9× PyTorch eager (uncertain)" in shaky


def test_markdown_has_the_shapes_and_the_notes() -> None:
    text = to_markdown(report(uncertain=True))
    assert "image [1, 3, 320, 320] (--data)" in text
    assert "- note: the machine was loaded while measuring" in text
