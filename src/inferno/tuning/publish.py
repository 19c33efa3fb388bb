"""Write what ``accelerate`` found: the Report, and the version folder with its plan.

The folder holds the chosen graph, its preprocessor files, ``plan.json`` (what ``serve``
replays), ``report.json``/``report.md``/``report.png`` and the reference profile of the
plan's own outputs on the calibration data (drift monitoring).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from inferno._version import __version__
from inferno.config import AccelerateConfig
from inferno.hardware import HardwareInfo
from inferno.models.model import Model
from inferno.models.text import TextPreprocessor
from inferno.repository import MODEL_FILE
from inferno.tuning.compare import (
    ANCHOR_LABEL,
    ANCHOR_RUNTIME,
    ANCHOR_VARIANT,
    WITHIN_NOISE,
    format_ratio,
)
from inferno.tuning.render import plot, to_markdown
from inferno.tuning.report import Chosen, Measurement, Report
from inferno.tuning.variants import Variant, artifact_for

PROFILE_SAMPLES = 5000
"""Calibration samples the reference profile is built on (drift monitoring)."""
PROFILE_BATCH = 32


@dataclass(frozen=True)
class Found:
    """What the candidate search found: every measurement, the choice and why."""

    reference: dict[str, Any]
    """What the outputs were judged against: its runtime and its own metrics."""
    baseline: Measurement | None
    measured: list[Measurement]
    best: Measurement
    reason: str
    skipped: dict[str, str]
    """Recipe → why no variant was built."""
    notes: list[str]
    timing: dict[str, Any]
    """``Report.timing``: how the speed-ups were measured, and the machine's load."""
    labelled: bool
    """The evaluation data has labels."""


def published(report: Report, folder: Path) -> Report:
    """The report as saved: ``chosen.path`` names the version folder."""
    return replace(report, chosen=replace(report.chosen, path=str(folder.resolve())))


def report(model: Model, cfg: AccelerateConfig, hardware: HardwareInfo, found: Found, started: float) -> Report:
    """The Report of a search (``chosen.path`` empty until :func:`published`)."""
    best, reason = found.best, found.reason
    data = model.eval_data.take(cfg.max_eval_samples)
    chosen = Chosen(best.variant, best.runtime, best.provider, best.precision,
                    best.throughput_per_s, best.latency_ms_p50, best.metrics,
                    best.within_budget, best.speedup, "", reason, best.requested_provider,
                    best.joules_per_inference, best.speedup_low, best.speedup_high,
                    best.speedup_rounds, best.speedup_eager, best.criterion, best.integer_ops,
                    kept_within_noise=reason.startswith(WITHIN_NOISE), kernels=best.kernels)
    return Report(
        model=model.name, source=model.source, task=model.task.value, objective=cfg.objective,
        batch_size=cfg.batch_size, threads=cfg.threads, budget=cfg.budget.model_dump(),
        evaluation={"source": data.source, "samples": len(data), "synthetic": data.synthetic,
                    "labels": found.labelled, **_shapes(model)},
        reference=found.reference, hardware=hardware.to_dict(), baseline=found.baseline,
        variants=tuple(found.measured), chosen=chosen, skipped=found.skipped,
        duration_s=time.perf_counter() - started, inferno_version=__version__, device=cfg.device,
        notes=tuple(found.notes), timing=found.timing,
    )


def _shapes(model: Model) -> dict[str, Any]:
    """One call's input sizes at batch 1 and how they were found (empty: unknown)."""
    shapes = {name: [int(d) for d in dims] for name, dims in model.shapes.items()}
    return {"shapes": shapes, "shapes_source": (model.shapes_source or "unknown") if shapes else "unknown"}


def _plan_notes(report: Report) -> tuple[str, ...]:
    """What the plan says about its own figures: the speed claim, the fidelity criterion."""
    c = report.chosen
    notes = []
    eager = f"{c.speedup_eager:.2f}× PyTorch eager" if c.speedup_eager else ""
    if (c.name, c.runtime, c.requested_provider) == (ANCHOR_VARIANT, ANCHOR_RUNTIME, None):
        notes.append(f"{report.objective}: the FP32 graph on ONNX Runtime itself" + (f", {eager}" if eager else ""))
    elif c.speedup is not None:
        rounds = f", IQR over {c.speedup_rounds} interleaved rounds" if c.speedup_rounds else ", one sweep measurement"
        notes.append(f"{report.objective}: {format_ratio(c)} × {ANCHOR_LABEL}{rounds}" + (f"; {eager}" if eager else ""))
    if report.timing.get("uncertain"):
        notes.append("speed figures uncertain (loaded machine or wide spread): see report.json notes")
    if c.criterion:
        notes.append(f"fidelity judged by {c.criterion}")
    if c.integer_ops is not None:
        notes.append(f"integer ops in the graph: {c.integer_ops}")
    if not c.within_budget or c.kept_within_noise:
        notes.append(c.reason)
    return tuple(notes)


def fill(staging: Path, final: Path, model: Model, variant: Variant, report: Report,
         cfg: AccelerateConfig, step: Callable[[str], None]) -> None:
    """Write the version folder: the chosen graph, its preprocessor files, plan, report, profile."""
    from inferno.models.zoo.cache import sha256_file
    from inferno.repository.plan import Plan

    report = published(report, final)
    shutil.copyfile(variant.path, staging / MODEL_FILE)
    for file_name, source in model.preprocessor.files().items():
        shutil.copyfile(source, staging / file_name)
    c = report.chosen
    artifact = artifact_for(model, variant, cfg)
    plan = Plan(
        name=final.parent.name, variant=c.name, passes=variant.passes, runtime=c.runtime,
        provider=c.provider, threads=cfg.threads, graph_precision=artifact.graph_precision,
        compute_precision=artifact.compute_precision, hints=artifact.options.to_dict(), task=model.task.value,
        signature=model.signature.to_dict(), preprocessor=model.preprocessor.to_dict(),
        metrics=c.metrics, within_budget=c.within_budget, budget=report.budget,
        objective=cfg.objective, batch_size=cfg.batch_size, throughput_per_s=c.throughput_per_s,
        latency_ms_p50=c.latency_ms_p50, source=model.source,
        model_sha256=sha256_file(staging / MODEL_FILE), inferno_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=_plan_notes(report), requested_provider=c.requested_provider,
        shapes=report.evaluation["shapes"],
    )
    (staging / "plan.json").write_text(plan.to_json())
    (staging / "report.json").write_text(report.to_json())
    (staging / "report.md").write_text(to_markdown(report))
    plot(report, staging / "report.png")
    step("profiling the reference data (for drift monitoring)")
    _profile(staging, model)


def _profile(folder: Path, model: Model) -> None:
    """Write the reference profile: the saved plan's own outputs on the calibration data."""
    from inferno.monitoring.profile import build_profile
    from inferno.repository.plan import PlanRunner

    data = model.calibration_data.take(PROFILE_SAMPLES)
    runner = PlanRunner(folder, trust=True)  # this run wrote the plan, from the source it loaded itself
    try:
        signature = model.signature
        axis = signature.outputs[signature.primary_output()].batch_axis
        batches = data.batches(PROFILE_BATCH if signature.batched else 1)  # else: one row a call
        predicted = [runner.predict(batch) for batch in batches]
        outputs = (np.stack(predicted) if axis is None
                   else np.concatenate([np.moveaxis(p, axis, 0) for p in predicted]))
        text = model.preprocessor if isinstance(model.preprocessor, TextPreprocessor) else None
        if text is not None:  # the server answers text models with L2-normalized embeddings
            outputs = outputs / np.maximum(np.linalg.norm(outputs, axis=1, keepdims=True), 1e-12)
        profile = build_profile(
            model.task, data.samples, outputs, model.signature.outputs[model.signature.primary_output()].name,
            tokenize=text.encodings if text else None, unk_id=text.unk_id if text else None,
            source=data.source,
        )
    finally:
        runner.close()
    profile.save(folder)
