"""Human views of a ``Report``: table rows (shared by the CLI and Markdown) and the plot."""

from __future__ import annotations

from pathlib import Path

from inferno.tuning.report import Measurement, Report

COLUMNS = ("variant", "runtime", "precision", "size MB", "p50 ms", "throughput/s",
           "speed-up", "fidelity", "budget")


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
        return [m.variant + mark, m.runtime, m.precision, "-", "-", "-", "-", f"failed: {m.error}", "-"]
    return [
        m.variant + mark,
        m.runtime,
        m.precision,
        f"{m.size_mb:.1f}",
        f"{m.latency_ms_p50:.2f}",
        f"{m.throughput_per_s:.0f}",
        f"{m.speedup:.2f}x" if m.speedup is not None else "-",
        format_metrics(m.metrics),
        "yes" if m.within_budget else "no",
    ]


def rows(report: Report) -> list[list[str]]:
    chosen_key = f"{report.chosen.name}@{report.chosen.runtime}"
    baseline_key = report.baseline.key if report.baseline else None
    ordered = sorted(report.variants, key=lambda m: (not m.ok, -m.throughput_per_s))
    return [row(m, chosen_key, baseline_key) for m in ordered]


def summary(report: Report) -> str:
    c = report.chosen
    speed = f", {c.speedup:.2f}x the baseline" if c.speedup else ""
    return (
        f"chosen: {c.name} on {c.runtime} ({c.provider}), {c.throughput_per_s:.0f}/s at batch "
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
    lines += ["", summary(report)]
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
        chosen = m.key == f"{report.chosen.name}@{report.chosen.runtime}"
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
