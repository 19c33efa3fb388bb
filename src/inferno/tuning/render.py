"""Human views of a ``Report``: table rows (shared by the CLI and Markdown) and the plot.

Speed-ups are shown as ratios to ONNX Runtime FP32 with their spread: ``1.32× (1.25–1.40)``
is the median and interquartile range of interleaved rounds; ``~1.3×`` a single sweep
measurement, rough. The fidelity column shows what the budget was judged on. The ISA paths
the compute ran on (``Measurement.kernels``) are a line under the choice, and in Markdown a
list under the table, not a column.
"""

from __future__ import annotations

from pathlib import Path

from inferno.tuning.compare import (
    ANCHOR_LABEL,
    ANCHOR_RUNTIME,
    ANCHOR_VARIANT,
    format_ratio,
    is_anchor,
)
from inferno.tuning.report import Chosen, Measurement, Report, speed, target_label

COLUMNS = ("variant", "runtime", "precision", "size MB", "int ops", "p50 ms", "throughput/s",
           "× ORT FP32 (IQR)", "J/inf", "fidelity", "budget")
DEVICE_COLUMNS = ("device", "best within budget", "provider", "throughput/s", "p50 ms",
                  "× eager FP32", "accuracy Δ", "J/inf")


def format_metrics(metrics: dict[str, float], criterion: str = "") -> str:
    """The figures the budget was judged on (``criterion``), else the task's usual ones."""
    if "accuracy" in metrics:
        return f"acc {metrics['accuracy'] * 100:.2f}%"
    if "agreement" in metrics:
        return f"top-1 agree {metrics['agreement'] * 100:.2f}%"
    first = _first_metric(metrics)
    if criterion == "snr" or (criterion.endswith("or snr") and "snr_db" in metrics):
        snr = format_snr(metrics)
        return f"{snr} ({first})" if criterion == "snr" else f"{first}; {snr}"
    return first


def _first_metric(metrics: dict[str, float]) -> str:
    if "cosine_mean" in metrics:
        return f"cos {metrics['cosine_mean']:.4f} / min {metrics['cosine_min']:.4f}"
    if "relative_error_mean" in metrics:
        return f"rel err {metrics['relative_error_mean']:.2e}"
    return "-"


def format_snr(metrics: dict[str, float]) -> str:
    """``SNR 52.1 dB, max |Δ| 0.01% of range``."""
    snr = metrics["snr_db"]
    text = "identical" if metrics.get("max_abs_diff") == 0 else f"SNR {snr:.1f} dB"
    if "max_diff_of_range" in metrics and metrics.get("max_abs_diff"):
        text += f", max |Δ| {metrics['max_diff_of_range'] * 100:.2g}% of range"
    return text


def format_speedup(m: Measurement | Chosen) -> str:
    if _is_anchor(m) and m.speedup is not None:
        return "1.00× (anchor)"
    return format_ratio(m)


def _is_anchor(m: Measurement | Chosen) -> bool:
    if isinstance(m, Measurement):
        return is_anchor(m)
    return m.name == ANCHOR_VARIANT and m.runtime == ANCHOR_RUNTIME and m.requested_provider is None


def row(m: Measurement, chosen_key: str | None, baseline_key: str | None) -> list[str]:
    mark = " ★" if m.key == chosen_key else (" (eager baseline)" if m.key == baseline_key else "")
    int_ops = "-" if m.integer_ops is None else str(m.integer_ops)
    if not m.ok:
        return [m.variant + mark, m.target, m.precision, "-", int_ops, "-", "-", "-", "-",
                f"failed: {m.error}", "-"]
    return [
        m.variant + mark,
        m.target,
        m.precision,
        f"{m.size_mb:.1f}" if m.size_mb else "-",
        int_ops,
        f"{m.latency_ms_p50:.2f}",
        f"{m.throughput_per_s:.0f}",
        format_speedup(m),
        format_joules(m.joules_per_inference),
        format_metrics(m.metrics, m.criterion),
        "yes" if m.within_budget else "no",
    ]


def format_joules(joules: float | None) -> str:
    if joules is None:
        return "-"
    return f"{joules * 1e3:.3g} mJ" if joules < 1 else f"{joules:.3g} J"


def device_rows(report: Report) -> list[list[str]]:
    """CPU vs GPU: per device, the fastest variant within budget, against PyTorch eager FP32
    on the same device (the CPU baseline, or the ``fp32`` variant on ``torch:cuda``). On the
    CPU the ratio is the re-timed median where there is one; a sweep ratio is marked ``~``."""
    ok = [m for m in report.variants if m.ok]
    eager = {"cpu": report.baseline} | {
        m.device: m for m in ok if m.runtime == "torch" and m.variant == "fp32" and m.device != "cpu"
    }
    reference = report.reference.get("metrics", {})
    table = []
    for device in sorted({m.device for m in ok}):
        within = [m for m in ok if m.device == device and m.within_budget]
        if not within:
            table.append([device, "none within budget", "-", "-", "-", "-", "-", "-"])
            continue
        best = max(within, key=lambda m: speed(m, report.objective))
        if device == "cpu" and report.chosen.device == "cpu":
            best = next((m for m in within if m.key == report.chosen.key), best)
        table.append([
            device, f"{best.variant} on {best.target}", best.provider, f"{best.throughput_per_s:.0f}",
            f"{best.latency_ms_p50:.2f}", _eager_ratio(best, eager.get(device), report.objective),
            format_accuracy_delta(best.metrics, reference), format_joules(best.joules_per_inference),
        ])
    return table


def _eager_ratio(best: Measurement, anchor: Measurement | None, objective: str) -> str:
    if best.device == "cpu" and best.speedup_eager is not None and best.retimed:
        return f"{best.speedup_eager:.2f}×"
    if anchor is None or not anchor.throughput_per_s or not best.latency_ms_p50:
        return "-"
    ratio = (best.throughput_per_s / anchor.throughput_per_s if objective == "throughput"
             else anchor.latency_ms_p50 / best.latency_ms_p50)
    return f"~{ratio:.2f}×"


def format_accuracy_delta(metrics: dict[str, float], reference: dict[str, float]) -> str:
    if "accuracy" in metrics and "accuracy" in reference:
        return f"{(metrics['accuracy'] - reference['accuracy']) * 100:+.2f} pt"
    if "agreement" in metrics:
        return f"{(metrics['agreement'] - 1) * 100:+.2f} pt agreement"
    if "cosine_mean" in metrics:
        return f"cos {metrics['cosine_mean']:.4f}"
    return format_metrics(metrics)


def rows(report: Report) -> list[list[str]]:
    """One row per measurement, the eager baseline included, fastest first."""
    chosen_key = report.chosen.key
    baseline_key = report.baseline.key if report.baseline else None
    measured = [*report.variants, *([report.baseline] if report.baseline else [])]

    def order(m: Measurement) -> tuple[bool, float, float]:
        return not m.ok, -(m.speedup if m.speedup is not None else 0.0), -m.throughput_per_s

    return [row(m, chosen_key, baseline_key) for m in sorted(measured, key=order)]


def summary(report: Report) -> str:
    """The choice, its speed-up with the spread, why it was chosen, and how to read the figures."""
    c = report.chosen
    speedup = []
    if c.speedup is not None and not _is_anchor(c):
        rounds = f"IQR, {c.speedup_rounds} rounds" if c.speedup_rounds else "one sweep measurement"
        speedup.append(f"{format_speedup(c)} vs {ANCHOR_LABEL} ({rounds})")
    if c.speedup_eager is not None:
        speedup.append(f"~{c.speedup_eager:.1f}× PyTorch eager (uncertain)" if report.timing.get("uncertain")
                       else f"{c.speedup_eager:.2f}× PyTorch eager")
    figures = [*speedup, f"{c.throughput_per_s:.0f}/s at batch {report.batch_size}",
               f"p50 {c.latency_ms_p50:.2f} ms", format_metrics(c.metrics, c.criterion)]
    lines = [f"chosen: {c.name} on {target_label(c.runtime, c.requested_provider)} ({c.provider}): "
             + ", ".join(figures), f"why: {c.reason}"]
    if c.kernels:
        lines.append(f"kernels: {c.kernels}")
    if speedup and report.timing.get("uncertain"):
        lines.append("caution: the speed figures are uncertain here (see the notes)")
    if report.timing.get("rounds"):
        lines.append(
            f"speed-ups: × {ANCHOR_LABEL} ({report.objective}), median and interquartile range of "
            f"{report.timing['rounds']} interleaved rounds for the fastest few; ~ marks a single sweep "
            "measurement (rough)"
        )
    return "\n".join(lines)


def kernel_lines(report: Report) -> list[str]:
    """Markdown: which ISA paths each measured row's compute ran on, where its runtime says."""
    measured = [*([report.baseline] if report.baseline else []), *report.variants]
    said = [f"- {m.key}: {m.kernels}" for m in measured if m.ok and m.kernels]
    return ["", "Kernels (ISA paths the compute ran on):", "", *said] if said else []


def to_markdown(report: Report) -> str:
    evaluation = report.evaluation
    shapes = evaluation.get("shapes") or {}
    shape_text = ", ".join(f"{k} {list(v)}" for k, v in shapes.items()) or "unknown"
    lines = [
        f"# inferno accelerate: {report.model}",
        "",
        f"- source: {report.source}; task: {report.task}",
        f"- evaluation: {evaluation['source']} ({evaluation['samples']} samples); input shapes at "
        f"batch 1: {shape_text} ({evaluation.get('shapes_source', 'unknown')})",
        f"- reference: {report.reference['runtime']} {format_metrics(report.reference.get('metrics', {}))}",
        f"- budget: {report.budget}; objective: {report.objective}; batch {report.batch_size}; "
        f"threads {report.threads}",
        f"- CPU: {report.hardware['cpu']['model']}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    lines += kernel_lines(report)
    devices = device_rows(report)
    if len(devices) > 1:
        lines += ["", "CPU vs GPU:", "", "| " + " | ".join(DEVICE_COLUMNS) + " |",
                  "|" + "---|" * len(DEVICE_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in devices]
    lines += ["", *summary(report).splitlines()]
    lines += [f"- note: {n}" for n in report.notes]
    if report.skipped:
        lines += ["", "Not built:", *[f"- {k}: {v}" for k, v in report.skipped.items()]]
    return "\n".join(lines) + "\n"


def plot(report: Report, path: Path) -> None:
    """Speed-up (× ONNX Runtime FP32, with its interquartile range) against accuracy cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for m in report.variants:
        if not m.ok or m.speedup is None:
            continue
        cost = accuracy_cost(m.metrics, report.reference.get("metrics", {}))
        color = "tab:green" if m.within_budget else "tab:red"
        chosen = m.key == report.chosen.key
        if m.retimed and m.speedup_low is not None and m.speedup_high is not None:
            ax.errorbar(cost, m.speedup, yerr=[[m.speedup - m.speedup_low], [m.speedup_high - m.speedup]],
                        color=color, capsize=3, linewidth=1)
        ax.scatter(cost, m.speedup, color=color, s=80 if chosen else 25, marker="*" if chosen else "o",
                   alpha=1.0 if m.retimed else 0.5)
        ax.annotate(m.key, (cost, m.speedup), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel(cost_label(report))
    ax.set_ylabel(f"× {ANCHOR_LABEL} (bars: IQR of interleaved rounds)")
    ax.set_title(f"{report.model}: speed-up vs accuracy cost (green = within budget; faded = one sweep)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_cost(metrics: dict[str, float], reference: dict[str, float]) -> float:
    if "accuracy" in metrics and "accuracy" in reference:
        return (reference["accuracy"] - metrics["accuracy"]) * 100
    if "agreement" in metrics:
        return (1 - metrics["agreement"]) * 100
    if "cosine_mean" in metrics:
        return 1 - metrics["cosine_mean"]
    return metrics.get("relative_error_mean", 0.0)


def cost_label(report: Report) -> str:
    if report.task == "classification":
        return "accuracy lost (points)"
    return "1 - cosine mean to the FP32 reference"
