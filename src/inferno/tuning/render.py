"""Human views of a ``Report``: table rows (shared by the CLI and Markdown) and the plot."""

from __future__ import annotations

from pathlib import Path

from inferno.tuning.report import Measurement, Report, speed, target_label

COLUMNS = ("variant", "runtime", "precision", "size MB", "p50 ms", "throughput/s",
           "speed-up", "J/inf", "fidelity", "budget")
DEVICE_COLUMNS = ("device", "best within budget", "provider", "throughput/s", "p50 ms",
                  "× eager FP32", "accuracy Δ", "J/inf")


def format_metrics(metrics: dict[str, float]) -> str:
    if "accuracy" in metrics:
        return f"acc {metrics['accuracy'] * 100:.2f}%"
    if "agreement" in metrics:
        return f"top-1 agree {metrics['agreement'] * 100:.2f}%"
    if "cosine_mean" in metrics:
        return f"cos {metrics['cosine_mean']:.4f} / min {metrics['cosine_min']:.4f}"
    if "relative_error_mean" in metrics:
        return f"rel err {metrics['relative_error_mean']:.2e}"
    return "-"


def row(m: Measurement, chosen_key: str | None, baseline_key: str | None) -> list[str]:
    mark = " ★" if m.key == chosen_key else (" (baseline)" if m.key == baseline_key else "")
    if not m.ok:
        return [m.variant + mark, m.target, m.precision, "-", "-", "-", "-", "-", f"failed: {m.error}", "-"]
    return [
        m.variant + mark,
        m.target,
        m.precision,
        f"{m.size_mb:.1f}",
        f"{m.latency_ms_p50:.2f}",
        f"{m.throughput_per_s:.0f}",
        f"{m.speedup:.2f}x" if m.speedup is not None else "-",
        format_joules(m.joules_per_inference),
        format_metrics(m.metrics),
        "yes" if m.within_budget else "no",
    ]


def format_joules(joules: float | None) -> str:
    if joules is None:
        return "-"
    return f"{joules * 1e3:.3g} mJ" if joules < 1 else f"{joules:.3g} J"


def device_rows(report: Report) -> list[list[str]]:
    """CPU vs GPU: per device, the fastest variant within budget, against PyTorch eager FP32
    on the same device (the CPU baseline, or the ``fp32`` variant on ``torch:cuda``)."""
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
        anchor = eager.get(device)
        ratio = "-"
        if anchor is not None and anchor.throughput_per_s and anchor.latency_ms_p50:
            ratio = (f"{best.throughput_per_s / anchor.throughput_per_s:.2f}x" if report.objective == "throughput"
                     else f"{anchor.latency_ms_p50 / best.latency_ms_p50:.2f}x")
        table.append([
            device, f"{best.variant} on {best.target}", best.provider, f"{best.throughput_per_s:.0f}",
            f"{best.latency_ms_p50:.2f}", ratio, format_accuracy_delta(best.metrics, reference),
            format_joules(best.joules_per_inference),
        ])
    return table


def format_accuracy_delta(metrics: dict[str, float], reference: dict[str, float]) -> str:
    if "accuracy" in metrics and "accuracy" in reference:
        return f"{(metrics['accuracy'] - reference['accuracy']) * 100:+.2f} pt"
    if "agreement" in metrics:
        return f"{(metrics['agreement'] - 1) * 100:+.2f} pt agreement"
    if "cosine_mean" in metrics:
        return f"cos {metrics['cosine_mean']:.4f}"
    return format_metrics(metrics)


def rows(report: Report) -> list[list[str]]:
    chosen_key = report.chosen.key
    baseline_key = report.baseline.key if report.baseline else None
    ordered = sorted(report.variants, key=lambda m: (not m.ok, -m.throughput_per_s))
    return [row(m, chosen_key, baseline_key) for m in ordered]


def summary(report: Report) -> str:
    c = report.chosen
    speed = f", {c.speedup:.2f}x the baseline" if c.speedup else ""
    return (
        f"chosen: {c.name} on {target_label(c.runtime, c.requested_provider)} ({c.provider}), "
        f"{c.throughput_per_s:.0f}/s at batch "
        f"{report.batch_size}, p50 {c.latency_ms_p50:.2f} ms{speed}, {format_metrics(c.metrics)}"
        f" — {c.reason}"
    )


def to_markdown(report: Report) -> str:
    lines = [
        f"# inferno accelerate: {report.model}",
        "",
        f"- source: {report.source}; task: {report.task}",
        f"- evaluation: {report.evaluation['source']} ({report.evaluation['samples']} samples)",
        f"- reference: {report.reference['runtime']} {format_metrics(report.reference.get('metrics', {}))}",
        f"- budget: {report.budget}; objective: {report.objective}; batch {report.batch_size}; "
        f"threads {report.threads}",
        f"- CPU: {report.hardware['cpu']['model']}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    devices = device_rows(report)
    if len(devices) > 1:
        lines += ["", "CPU vs GPU:", "", "| " + " | ".join(DEVICE_COLUMNS) + " |",
                  "|" + "---|" * len(DEVICE_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in devices]
    lines += ["", summary(report)]
    lines += [f"- note: {n}" for n in report.notes]
    if report.skipped:
        lines += ["", "Not built:", *[f"- {k}: {v}" for k, v in report.skipped.items()]]
    return "\n".join(lines) + "\n"


def plot(report: Report, path: Path) -> None:
    """Speed-up against accuracy cost, one point per variant × runtime."""
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
        ax.scatter(cost, m.speedup, color=color, s=80 if chosen else 25, marker="*" if chosen else "o")
        ax.annotate(m.key, (cost, m.speedup), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(cost_label(report))
    ax.set_ylabel("speed-up vs baseline")
    ax.set_title(f"{report.model}: speed-up vs accuracy cost (green = within budget)")
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
