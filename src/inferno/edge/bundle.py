"""Edge bundles: a self-contained folder that runs a model with onnxruntime and numpy only.

``export_edge`` picks the INT8 variant to ship by the same measurement as ``accelerate``
(INT8 recipes only, ONNX Runtime on the CPU, ranked by batch-1 latency at the bundle's
thread count, within the accuracy budget), converts it to ONNX Runtime's ORT format where
that loads and gives the same answers, and writes:

- ``model.ort`` (or ``model.onnx``): the INT8 graph;
- ``tokenizer.json`` for text models;
- ``samples.npz``: a few real input rows with the bundle's own outputs (and labels), so a
  device can check itself (``run.py --check``);
- ``manifest.json``: the input/output signature, the sha256 of every file, and the accuracy
  figures — the plan's (measured by ``accelerate``) and the shipped file's own on the full
  evaluation data;
- ``run.py`` (and ``__main__.py``, so ``python DIR`` works too): the runner, whose only
  imports are onnxruntime, numpy and, for text, tokenizers.

A size budget (``max_size_mb``) that the smallest form cannot meet is an error and nothing
is written: a bundle never silently grows past it. The folder is built in a staging folder
next to ``out`` and renamed into place at the end.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from inferno._version import __version__
from inferno.config import Budget
from inferno.errors import BundleTooLargeError as BundleTooLargeError  # re-export
from inferno.errors import ConfigError, ModelLoadError
from inferno.models.model import Model
from inferno.models.zoo.cache import sha256_file
from inferno.repository import MODEL_FILE
from inferno.repository.plan import Plan
from inferno.tuning.recipes import RECIPES
from inferno.tuning.report import Report
from inferno.tuning.variants import model_kind

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]

MANIFEST = "manifest.json"
SAMPLES = "samples.npz"
RUNNER = "run.py"
FORMAT = "inferno-edge-bundle"
FORMAT_VERSION = 1
SAMPLE_ROWS = 16
"""Rows kept in ``samples.npz``: enough for a self-check, small next to the model."""
ORT_TOLERANCE = 1e-4
"""Largest absolute difference allowed between the ORT-format file and the ONNX graph it
came from: the conversion applies only hardware-independent rewrites, so answers must match."""


@dataclass(frozen=True)
class BundleReport:
    """What ``export_edge`` wrote and measured."""

    path: str
    model_file: str
    model_format: str
    """``ort`` (ONNX Runtime's ORT format) or ``onnx``."""
    size_bytes: int
    """All files of the bundle together."""
    source_size_bytes: int
    """The FP32 ONNX graph the bundle was made from."""
    variant: str
    metrics: dict[str, float]
    """The shipped file's figures on the full evaluation data (``accuracy`` for classifiers,
    ``cosine_mean``/``cosine_min`` against the FP32 reference for embeddings)."""
    reference_metrics: dict[str, float]
    threads: int
    notes: tuple[str, ...] = ()

    @property
    def size_ratio(self) -> float:
        return self.size_bytes / self.source_size_bytes


def int8_recipes(model: Model) -> tuple[str, ...]:
    """The INT8 recipes that fit this model's kind (text or vision)."""
    kind = model_kind(model)
    return tuple(r.name for r in RECIPES.values() if r.precision == "int8" and (not r.tags or kind in r.tags))


def export_edge(
    model: str | Model,
    out: str | Path,
    *,
    max_size_mb: float | None = None,
    threads: int = 1,
    budget: Budget | None = None,
    variants: tuple[str, ...] | None = None,
    repeats: int = 20,
    trust: bool = False,
    data: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> BundleReport:
    """Write an edge bundle of ``model`` to ``out`` (replaced if it is an earlier bundle).

    Args:
        model: anything ``accelerate`` takes: a bundled name, a file, a student folder, a Model.
        out: the bundle folder to write.
        max_size_mb: the most the whole folder may weigh, MiB; None for no limit.
        threads: intra-op threads the bundle runs with (and is measured at).
        budget: the accuracy budget the INT8 variant must meet (default: accelerate's).
        variants: INT8 recipes to consider (default: every INT8 recipe for the model's kind).
        repeats: timed repetitions per measurement.
        trust: allow loading a pickle. data: evaluation data ``.npz``.
        progress: called as (what, done, total) while work advances.

    Raises:
        BundleTooLargeError: the bundle would exceed ``max_size_mb`` (nothing is written).
        ConfigError: ``out`` exists and is not a bundle, a bad option, or no INT8 variant
            meets the budget.
        InfernoError: the model cannot be loaded or optimized (the message says why).
    """
    from inferno.models.loaders import load_model
    from inferno.tuning import accelerate

    out = Path(out)
    _check_out(out)
    if threads < 1:
        raise ConfigError(f"--threads {threads}: expected at least 1")
    loaded = model if isinstance(model, Model) else load_model(str(model), trust=trust,
                                                                data=Path(data) if data else None)
    chosen_variants = variants or int8_recipes(loaded)
    not_int8 = [v for v in chosen_variants if v not in RECIPES or RECIPES[v].precision != "int8"]
    if not_int8:
        raise ConfigError(f"--variants {not_int8}: expected INT8 recipes, e.g. {', '.join(int8_recipes(loaded))}")
    settings: dict[str, Any] = {"variants": chosen_variants, "runtimes": ("onnxruntime",), "device": "cpu",
                                "objective": "latency", "threads": threads, "repeats": repeats}
    if budget is not None:
        settings["budget"] = budget
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".inferno-export-", dir=out.parent) as tmp:
        report = accelerate(loaded, repository=Path(tmp) / "repository", progress=progress, **settings)
        _check_chosen(report)
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        bundle = _write(staging, loaded, Path(report.chosen.path), report, threads, max_size_mb)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return _at(bundle, out)


def _check_out(out: Path) -> None:
    """``out`` may be missing, empty, or an earlier bundle (replaced); anything else is kept."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise ConfigError(f"--out {out}: expected a new folder or an earlier bundle, found "
                          f"{'a file' if not out.is_dir() else 'a folder with other files'}; nothing was written")


def _check_chosen(report: Report) -> None:
    chosen = report.chosen
    if chosen.precision != "int8" or not chosen.within_budget:
        tried = ", ".join(f"{m.variant} ({m.error or _delta(m.metrics)})" for m in report.variants)
        raise ConfigError(f"no INT8 variant of {report.model} meets the accuracy budget {report.budget}: "
                          f"tried {tried}; a looser --budget or a different model is needed")


def _delta(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


def _at(bundle: BundleReport, out: Path) -> BundleReport:
    return replace(bundle, path=str(out.resolve()))


def _write(staging: Path, model: Model, plan_folder: Path, report: Report, threads: int,
           max_size_mb: float | None) -> BundleReport:
    """Fill ``staging``: model file, tokenizer, samples, runner, manifest; check the size."""
    from inferno.edge import _ortformat, _runner

    plan = Plan.load(plan_folder)
    int8_path = plan_folder / MODEL_FILE
    feeds, labels = _sample_feeds(model)
    model_file, model_format, notes, session = _ortformat.best_form(int8_path, staging, feeds, threads, max_size_mb)
    for name in model.preprocessor.files():
        shutil.copyfile(plan_folder / name, staging / name)
    outputs = session.run(None, feeds)
    samples = {**feeds, **{f"expected:{o.name}": v for o, v in zip(session.get_outputs(), outputs, strict=True)}}
    if labels is not None:
        samples["labels"] = labels
    np.savez_compressed(staging / SAMPLES, **samples)
    shutil.copyfile(_runner.__file__, staging / RUNNER)
    (staging / "__main__.py").write_text(_MAIN)
    metrics = _ortformat.evaluate(session, model)
    manifest = _manifest(model, plan, report, model_file, model_format, threads, metrics, staging)
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    size = sum(p.stat().st_size for p in staging.iterdir())
    if max_size_mb is not None and size > max_size_mb * 2**20:
        raise BundleTooLargeError(
            f"--max-size {max_size_mb:g} MB: the bundle of {model.name} needs {size / 2**20:.3f} MB "
            f"({model_file} {(staging / model_file).stat().st_size / 2**20:.3f} MB, INT8 {plan.variant}); "
            "nothing was written — a smaller model is needed (inferno prune / inferno distill)")
    return BundleReport(
        path=str(staging), model_file=model_file, model_format=model_format, size_bytes=size,
        source_size_bytes=model.onnx_path.stat().st_size, variant=plan.variant, metrics=metrics,
        reference_metrics=dict(report.reference.get("metrics", {})), threads=threads, notes=tuple(notes),
    )


def _sample_feeds(model: Model) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    data = model.eval_data.take(SAMPLE_ROWS)
    feeds = model.preprocessor.encode(data.samples)
    return feeds, data.labels


def _manifest(model: Model, plan: Plan, report: Report, model_file: str, model_format: str,
              threads: int, metrics: dict[str, float], staging: Path) -> dict[str, Any]:
    files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.name != MANIFEST}
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": model.name,
        "source": model.source,
        "teacher": teacher_of(model.source),
        "description": model.description,
        "task": model.task.value,
        "model": model_file,
        "model_format": model_format,
        "precision": "int8",
        "variant": plan.variant,
        "passes": list(plan.passes),
        "inputs": plan.signature["inputs"],
        "outputs": plan.signature["outputs"],
        "preprocessor": model.preprocessor.to_dict(),
        "threads": threads,
        "files": files,
        "size_bytes": {name: (staging / name).stat().st_size for name in files},
        "source_size_bytes": model.onnx_path.stat().st_size,
        "accuracy": {
            "evaluation": report.evaluation,
            "reference": report.reference,
            "plan": plan.metrics,
            "budget": plan.budget,
            "bundle": metrics,
        },
        "measured": {"latency_ms_p50": plan.latency_ms_p50, "throughput_per_s": plan.throughput_per_s,
                     "batch_size": plan.batch_size, "threads": threads, "hardware": report.hardware.get("cpu", {})},
        "requires": ["onnxruntime", "numpy"] + (["tokenizers"] if model.is_text else []),
        "inferno_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def teacher_of(source: str) -> str | None:
    """The teacher a student folder was made from, None when ``source`` is not a student folder.

    Raises:
        ModelLoadError: a student folder whose ``student.json`` is unreadable.
    """
    from inferno.models.student import is_student_folder, read_student_info

    if not source or not is_student_folder(Path(source)):
        return None
    return read_student_info(Path(source)).teacher


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a bundle folder, checked: format, version, and the model file it names.

    Raises:
        ModelLoadError: no manifest, unreadable, not an inferno edge bundle of this version,
            or its model file is missing.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"bundle {folder}: no {MANIFEST}; expected a folder written by `inferno export`") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"bundle {folder}: {MANIFEST} is unreadable ({exc})") from exc
    found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
    if found != FORMAT:
        raise ModelLoadError(f"bundle {folder}: {MANIFEST} has format {found!r}, expected {FORMAT!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise ModelLoadError(f"bundle {folder}: {MANIFEST} has version {manifest.get('version')!r}, "
                             f"expected {FORMAT_VERSION}")
    model = manifest.get("model")
    if not isinstance(model, str) or not (folder / model).is_file():
        raise ModelLoadError(f"bundle {folder}: the model file {model!r} named in {MANIFEST} does not exist")
    return dict(manifest)


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a bundle manifest (valid or not)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def source_ref(manifest: dict[str, Any]) -> str | None:
    """The model the bundle was made from, as ``load_model`` takes it (``bundled:digits`` → ``digits``)."""
    return str(manifest.get("source") or "").removeprefix("bundled:") or None


def report_dict(report: BundleReport) -> dict[str, Any]:
    return {**asdict(report), "size_ratio": report.size_ratio}


_MAIN = '''"""`python BUNDLE_FOLDER ...` runs the bundle: the same as `python BUNDLE_FOLDER/run.py ...`."""
import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("run.py")), run_name="__main__")
'''
