"""``inferno export``: ship a model as a compact bundle (edge today)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inferno.cli._app import app, err, new_progress, out

TARGETS = ("edge",)


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Bundled name (minilm, digits), a student folder (inferno distill/prune), "
                                               "an .onnx/TorchScript/.pt2 file, or package.module:attr.")],
    target: Annotated[str, typer.Option(help="What to build: edge (an INT8 bundle that runs with onnxruntime + numpy).")] = "edge",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Bundle folder (default: bundles/<model>-edge).")] = None,
    max_size: Annotated[float | None, typer.Option("--max-size", help="Most the whole bundle may weigh, MB (MiB); "
                                                                      "an error, not a larger bundle, when it cannot be met.")] = None,
    threads: Annotated[int, typer.Option(help="Threads the bundle runs with on the device (and is measured at).")] = 1,
    budget: Annotated[str | None, typer.Option(help="Accuracy budget for the INT8 variant: '1%', "
                                                    "'cosine_mean=0.995,cosine_min=0.97'.")] = None,
    data: Annotated[Path | None, typer.Option(help="Evaluation data .npz (arrays named like inputs, optional 'labels').")] = None,
    trust: Annotated[bool, typer.Option(help="Allow loading a pickle (it can run arbitrary code).")] = False,
    repeats: Annotated[int, typer.Option(help="Timed repetitions per measurement.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON on stdout.")] = False,
) -> None:
    """Write a self-contained bundle: the INT8 model, its manifest and a runner needing only onnxruntime + numpy."""
    from inferno.config import parse_budget
    from inferno.edge.bundle import export_edge, report_dict
    from inferno.errors import ConfigError

    if target not in TARGETS:
        raise ConfigError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    if max_size is not None and max_size <= 0:
        raise ConfigError(f"--max-size {max_size:g}: expected a positive size in MB")
    folder = out_dir or Path("bundles") / f"{Path(model).name}-{target}"
    with new_progress() as progress:
        task_id = progress.add_task("loading the model", total=None)

        def update(what: str, done: int, total: int) -> None:
            progress.update(task_id, description=what, completed=done, total=total)

        report = export_edge(model, folder, max_size_mb=max_size, threads=threads, repeats=repeats,
                             budget=parse_budget(budget) if budget else None, trust=trust, data=data,
                             progress=update)
    if as_json:
        print(json.dumps(report_dict(report), indent=2))
        return
    table = Table(title=f"inferno export: {model} → {target} bundle", show_header=False)
    table.add_row("folder", report.path)
    table.add_row("model file", f"{report.model_file} ({report.model_format} format, INT8 {report.variant})")
    table.add_row("size", f"{report.size_bytes / 2**20:.3f} MB, {report.size_ratio:.1%} of the FP32 graph "
                          f"({report.source_size_bytes / 2**20:.3f} MB)")
    table.add_row("accuracy", _figures(report.metrics))
    table.add_row("reference", _figures(report.reference_metrics))
    table.add_row("threads", str(report.threads))
    for note in report.notes:
        table.add_row("note", note)
    out.print(table)
    err.print(f"run it: python {report.path}/run.py --check (needs onnxruntime and numpy only)")


def _figures(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) or "—"
