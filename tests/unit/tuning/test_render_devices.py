"""The CPU vs GPU table: per device, the fastest within budget against eager FP32 on that device."""

from __future__ import annotations

from inferno.tuning.render import device_rows, format_joules, rows, to_markdown
from inferno.tuning.report import Chosen, Measurement, Report


def m(variant: str, runtime: str, provider: str | None, thr: float, p50: float, *, within: bool = True,
      cos: float = 0.9999, joules: float | None = None, error: str | None = None) -> Measurement:
    return Measurement(variant, runtime, "EP", "fp16" if "16" in variant else "fp32", throughput_per_s=thr,
                       latency_ms_p50=p50, metrics={"cosine_mean": cos, "cosine_min": cos - 0.001},
                       within_budget=within, requested_provider=provider, joules_per_inference=joules,
                       error=error)


BASELINE = m("fp32", "torch", None, 100, 20.0)
VARIANTS = (
    m("fp32", "onnxruntime", None, 150, 9.0),
    m("int8-dynamic", "onnxruntime", None, 400, 5.0, joules=0.02),
    m("int8-mixed", "onnxruntime", None, 900, 2.0, within=False),  # fastest on the CPU, but outside the budget
    m("fp32", "torch", "cuda", 2_000, 3.0, joules=0.004),
    m("fp16-compute", "onnxruntime", "tensorrt", 30_000, 0.6, joules=0.0002),
    m("fp16", "onnxruntime", "cuda", 50_000, 0.5, error="boom"),
)


def report(objective: str = "throughput", variants: tuple[Measurement, ...] = VARIANTS) -> Report:
    best = VARIANTS[4]
    chosen = Chosen(best.variant, best.runtime, "TensorrtExecutionProvider", "fp16", best.throughput_per_s,
                    best.latency_ms_p50, best.metrics, True, 300.0, "/tmp/x", "fastest", "tensorrt", 0.0002)
    return Report("minilm", "bundled:minilm", "embedding", objective, 32, 2, {}, {"source": "s", "samples": 1},
                  {"runtime": "PyTorch eager FP32", "metrics": {"cosine_mean": 1.0, "cosine_min": 1.0}},
                  {"cpu": {"model": "fake"}}, BASELINE, variants, chosen, notes=("a note",))


def test_one_row_per_device_with_the_best_within_budget() -> None:
    cpu, cuda = device_rows(report())
    assert cpu[:2] == ["cpu", "int8-dynamic on onnxruntime"]
    assert cpu[5] == "~4.00×"  # against the PyTorch eager CPU baseline, not the faster out-of-budget one
    assert cuda[:2] == ["cuda", "fp16-compute on onnxruntime:tensorrt"]
    assert cuda[5] == "~15.00×"  # against eager FP32 on the GPU (torch:cuda), failed rows ignored
    assert cuda[7] == "0.2 mJ"


def test_latency_objective_ranks_and_compares_by_p50() -> None:
    cpu, cuda = device_rows(report("latency"))
    assert cpu[1] == "int8-dynamic on onnxruntime" and cpu[5] == "~4.00×"  # 20 ms / 5 ms: one sweep each
    assert cuda[5] == "~5.00×"  # 3.0 / 0.6


def test_device_without_anything_within_budget_says_so() -> None:
    only = (m("fp32", "onnxruntime", None, 150, 9.0), m("fp16", "onnxruntime", "cuda", 9_000, 1.0, within=False))
    assert device_rows(report(variants=only))[1][:2] == ["cuda", "none within budget"]


def test_rows_name_the_target_and_markdown_has_the_device_table_and_notes() -> None:
    r = report()
    targets = [row[1] for row in rows(r)]
    assert "onnxruntime:tensorrt" in targets and "torch:cuda" in targets
    chosen = next(row for row in rows(r) if row[0].endswith("★"))
    assert chosen[1] == "onnxruntime:tensorrt"
    text = to_markdown(r)
    assert "CPU vs GPU" in text and "- note: a note" in text


def test_joules_format() -> None:
    assert format_joules(None) == "-"
    assert format_joules(0.0123) == "12.3 mJ"
    assert format_joules(2.5) == "2.5 J"


def test_report_round_trips_with_the_new_fields() -> None:
    r = report()
    again = Report.from_dict(r.to_dict())
    assert again == r
    assert again.chosen.key == "fp16-compute@onnxruntime:tensorrt"
