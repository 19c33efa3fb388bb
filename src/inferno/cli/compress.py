"""``inferno distill`` and ``inferno prune``: smaller students of a model, measured against it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from inferno.cli._app import app, new_progress, out

TeacherArg = Annotated[str, typer.Argument(
    metavar="TEACHER", help="The model to compress: a bundled name (digits, minilm), a student "
                            "folder, or anything inferno accelerate takes.")]
OutOption = Annotated[Path | None, typer.Option(
    "--out", help="Student folder (default: students/<teacher>-<method>); an existing student "
                  "folder is replaced, any other non-empty folder is refused.")]
EpochsOption = Annotated[int | None, typer.Option("--epochs", help="Training epochs (default: "
                                                                   "the method's).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print student.json instead of the table.")]


@app.command()
def distill(
    teacher: TeacherArg,
    student: Annotated[str | None, typer.Option(
        "--student", help="The student: digits 'channels=16,32;hidden=64' (also temperature=, "
                          "hard=); minilm 'layers=3'. Default: the family's.")] = None,
    out_dir: OutOption = None,
    epochs: EpochsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Distill TEACHER into a smaller student trained on its soft outputs; print teacher vs student."""
    from inferno.students.distill import distill as run

    _make(teacher, "distill", out_dir, as_json,
          lambda model, folder, progress: run(model, student, folder, epochs=epochs,
                                              progress=progress))


@app.command()
def prune(
    teacher: TeacherArg,
    ratio: Annotated[float | None, typer.Option(
        "--ratio", help="Structured: share of conv filters and hidden neurons removed per layer "
                        "(a smaller dense network; default 0.4).")] = None,
    sparsity: Annotated[float | None, typer.Option(
        "--sparsity", help="Unstructured: share of each layer's weights set to zero (smaller only "
                           "once compressed; speed unchanged).")] = None,
    heads: Annotated[float | None, typer.Option(
        "--heads", help="Transformers: share of attention heads removed per layer.")] = None,
    ffn: Annotated[float | None, typer.Option(
        "--ffn", help="Transformers: share of FFN neurons removed per layer.")] = None,
    out_dir: OutOption = None,
    epochs: EpochsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prune TEACHER (structured or unstructured), fine-tune it; print teacher vs student."""
    from inferno.errors import ConfigError
    from inferno.students.prune import prune as run

    if ratio is not None and sparsity is not None:
        raise ConfigError(f"prune: expected --ratio (structured) or --sparsity (unstructured), "
                          f"got both ({ratio} and {sparsity})")
    _make(teacher, "prune", out_dir, as_json,
          lambda model, folder, progress: run(model, folder, ratio=ratio, sparsity=sparsity,
                                              heads=heads, ffn=ffn, epochs=epochs,
                                              progress=progress))


Make = Callable[[Any, Path, Callable[[str, int, int], None]], Path]


def _make(teacher: str, method: str, out_dir: Path | None, as_json: bool, make: Make) -> None:
    """Load the teacher, run ``make`` with a progress bar on stderr, print the result."""
    from inferno.models.loaders import load_model
    from inferno.models.student import check_target, read_student_info

    if out_dir is not None:
        check_target(out_dir)  # before the teacher loads: a refused folder fails at once
    with new_progress() as progress:
        task_id = progress.add_task(f"loading {teacher}", total=None)
        model = load_model(teacher)
        folder = out_dir or Path("students") / f"{model.name}-{method}"
        check_target(folder)

        def update(what: str, done: int, total: int) -> None:
            progress.update(task_id, description=what, completed=done, total=total)

        make(model, folder, update)
    info = read_student_info(folder)
    if as_json:
        print(json.dumps({"folder": str(folder), **info.to_dict()}, indent=1))
        return
    out.print(comparison_table(info.report, teacher=teacher))
    out.print(f"student ({method}, {info.spec}) written to {folder}; load it as MODEL with "
              f"the folder's path")


def _kb(value: float) -> str:
    return f"{value / 1000:,.1f} kB"


def _ratio(key: str | None, ratios: dict[str, Any], sides: tuple[dict[str, Any], ...]) -> str:
    if key == "accuracy":
        return f"{(sides[1][key] - sides[0][key]) * 100:+.2f} pt"
    value = ratios.get(key) if key else None
    if value is None:
        return ""
    return f"{value:.2f}× faster" if key and key.endswith("speedup") else f"{value:.3f}×"


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


_ROWS: list[tuple[str, str, Callable[[Any], str], str | None]] = [
    ("ONNX size", "onnx_bytes", _kb, "onnx_bytes"),
    ("gzip size", "gzip_bytes", _kb, "gzip_bytes"),
    ("parameters", "params", lambda v: f"{v:,}", "params"),
    ("non-zero parameters", "nonzero_params", lambda v: f"{v:,}", "nonzero_params"),
    ("accuracy", "accuracy", lambda v: f"{v:.4f}", "accuracy"),
    ("mean top probability", "mean_top_probability", lambda v: f"{v:.4f}", None),
    ("calibration error", "calibration_error", lambda v: f"{v:.4f}", None),
    ("latency p50, batch 1", "latency_ms_p50", lambda v: f"{v:.3f} ms", "latency_speedup"),
    ("throughput, batch 32", "throughput_per_s", lambda v: f"{v:,.0f}/s", "throughput_speedup"),
]


def comparison_table(report: dict[str, Any], *, teacher: str) -> Table:
    """Teacher against student: sizes, parameters, accuracy, speed, and the ratios."""
    table = Table(title=f"student of {teacher} (on {report.get('eval_data', 'its data')})")
    for column in ("", "teacher", "student", "student vs teacher"):
        table.add_column(column, justify="left" if not column else "right")
    sides, ratios = (report["teacher"], report["student"]), report.get("ratios", {})
    sparse = any(side.get("nonzero_params") != side.get("params") for side in sides)
    for label, key, show, ratio_key in _ROWS:
        if key in sides[0] and key in sides[1] and (key != "nonzero_params" or sparse):
            table.add_row(label, show(sides[0][key]), show(sides[1][key]),
                          _ratio(ratio_key, ratios, sides))
    known = {row[1] for row in _ROWS}
    for key in sorted(set(sides[0]) & set(sides[1]) - known):  # a family's own figures
        if all(isinstance(side[key], (int, float)) for side in sides):
            table.add_row(key.replace("_", " "), _number(sides[0][key]), _number(sides[1][key]), "")
    if "agreement" in report:
        table.add_row("agreement with teacher", "", f"{report['agreement']:.4f}", "")
    table.add_row("training", "", f"{report.get('train_seconds', 0):.1f} s", "")
    return table
