"""``accelerate``: build variants, measure each on every runtime, choose under the budget, save.

The flow: load the model → encode the evaluation data once → reference outputs (PyTorch
eager FP32 when the source module exists, else ONNX Runtime FP32) → build variants → measure
variant × runtime → choose the fastest within budget → write the version folder.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

import inferno
from inferno.config import AccelerateConfig, describe_validation_error
from inferno.errors import ConfigError, InfernoError
from inferno.hardware import HardwareInfo, detect
from inferno.models.model import EvalData, Model
from inferno.models.text import TextPreprocessor
from inferno.models.zoo import DEFAULT
from inferno.passes import PassContext
from inferno.repository import MODEL_FILE, check_name, write_version
from inferno.runtimes import RUNTIMES, Artifact, Feeds, RuntimeSettings
from inferno.tuning.measure import (
    PeakMemory,
    Timing,
    batches_per_s,
    encode_batches,
    energy_per_inference,
    latencies_ms,
    run_outputs,
    time_runtime,
)
from inferno.tuning.metrics import fidelity, within_budget
from inferno.tuning.recipes import source_equivalent
from inferno.tuning.render import plot, to_markdown
from inferno.tuning.report import Chosen, Measurement, Report, speed
from inferno.tuning.targets import BASELINE_RUNTIME, Target, select_targets
from inferno.tuning.variants import Variant, build_variants, select_recipes

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""Called as work advances: (what is happening, steps done, steps in all)."""

CALIBRATION_SAMPLES = 128
FINALISTS = 3
FINAL_ROUNDS = 5
"""Close candidates measured minutes apart can swap places on a noisy machine: the fastest
few are loaded together and re-timed round-robin, and the choice uses those medians."""
PROFILE_SAMPLES = 5000
"""Calibration samples the reference profile is built on (drift monitoring)."""
PROFILE_BATCH = 32
GPU_MAX_BATCH = 256
"""Largest batch GPU runtimes prepare for (TensorRT profiles, CUDA graph buckets): the
serving default for a GPU plan."""
TIMING_BATCHES = 4
"""Throughput is timed on the first full batches of the evaluation data (real lengths)."""


@dataclass
class _Inputs:
    """The evaluation data encoded once, shared by every measurement."""

    batches: list[Feeds]
    timing_batches: list[Feeds]
    singles: list[Feeds]
    labels: np.ndarray | None
    output_index: int


def accelerate(
    model: str | Model = DEFAULT,
    *,
    repository: str | Path = "model_repository",
    config: AccelerateConfig | None = None,
    trust: bool = False,
    data: str | Path | None = None,
    task: str | None = None,
    name: str | None = None,
    progress: ProgressFn | None = None,
    **settings: Any,
) -> Report:
    """Optimize ``model``, measure every variant on every runtime, save the winner.

    Args:
        model: a bundled name (``minilm``, ``digits``), a path, ``package.module:attr``, or a Model.
        repository: the model repository folder; the plan goes to ``<repository>/<name>/<version>``.
        config: all settings at once; or pass them as keyword ``settings`` (see AccelerateConfig).
        trust: allow loading pickles (runs code from the file).
        data: an ``.npz`` of evaluation inputs named like the model's inputs (plus ``labels``).
        task: override the inferred task (``classification``, ``embedding``, ...).
        name: the model's name in the repository.
        progress: callback for progress displays.

    Returns:
        The Report; ``report.chosen.path`` is the saved version folder.

    Raises:
        InfernoError: a bad model, data or setting (the message says which).
    """
    started = time.perf_counter()
    cfg = _config(config, settings)
    loaded = model if isinstance(model, Model) else _load(model, trust, data, task, name)
    model_name = check_name(name or loaded.name)
    hardware = detect()
    inputs = _encode(loaded, cfg)
    notify = progress or (lambda *_: None)
    with tempfile.TemporaryDirectory(prefix="inferno-") as tmp:
        ctx = PassContext(
            hardware=hardware, calibration=_calibration(loaded), threads=cfg.threads,
            model_type=loaded.architecture.get("model_type"),
            attributes={k: v for k, v in loaded.architecture.items() if isinstance(v, int)},
        )
        recipes = select_recipes(loaded, cfg.variants)
        targets, notes = select_targets(cfg.device, cfg.runtimes, hardware)
        total = len(recipes) + len(recipes) * len(targets) + 4
        step = _Counter(notify, total)
        reference, ref_metrics, baseline = _reference(loaded, inputs, cfg, step)
        variants, skipped = build_variants(recipes, loaded, ctx, Path(tmp), step)
        measured = [
            _measure(loaded, v, target, inputs, reference, ref_metrics, cfg, step)
            for v in variants for target in targets if _runs(loaded, target, v, cfg)
        ]
        measured, finalists = _retime_finalists(loaded, variants, measured, inputs, cfg, step)
        measured = _with_speedups(measured, baseline, cfg.objective)
        baseline = _with_speedups([baseline], baseline, cfg.objective)[0] if baseline else None
        best, reason = choose(measured, cfg.objective)
        if finalists > 1:
            reason += f" (the {finalists} fastest re-timed side by side, {FINAL_ROUNDS} interleaved rounds)"
        step("saving the plan")
        chosen_variant = next(v for v in variants if v.name == best.variant)
        report = _report(loaded, cfg, hardware, inputs, ref_metrics, baseline, measured, best,
                         reason, skipped, started, notes)
        folder = write_version(
            Path(repository), model_name,
            lambda staging, final: _fill(staging, final, loaded, chosen_variant, report, cfg, step),
        )
    return _published(report, folder)


def _published(report: Report, folder: Path) -> Report:
    """The report as saved: ``chosen.path`` names the version folder."""
    return replace(report, chosen=replace(report.chosen, path=str(folder.resolve())))


class _Counter:
    def __init__(self, notify: ProgressFn, total: int) -> None:
        self.notify, self.total, self.done = notify, total, 0

    def __call__(self, what: str) -> None:
        self.notify(what, self.done, self.total)
        self.done += 1


def _config(config: AccelerateConfig | None, settings: dict[str, Any]) -> AccelerateConfig:
    try:
        if config is None:
            return AccelerateConfig(**settings)
        return config.model_copy(update=settings) if settings else config
    except ValidationError as exc:
        raise ConfigError(f"setting {describe_validation_error(exc)}") from exc


def _load(ref: str, trust: bool, data: str | Path | None, task: str | None, name: str | None) -> Model:
    from inferno.models.loaders import load_model
    from inferno.models.signature import Task

    try:
        task_value = Task(task) if task else None
    except ValueError as exc:
        raise ConfigError(f"--task {task!r}: expected one of {', '.join(t.value for t in Task)}") from exc
    return load_model(ref, trust=trust, data=Path(data) if data else None, task=task_value, name=name)


def _encode(model: Model, cfg: AccelerateConfig) -> _Inputs:
    """Encode the evaluation data once.

    Text is ordered by length first, as a length-grouping batcher would batch it: padding
    stays small, and the timed batches (``TIMING_BATCHES`` spread from shortest to longest)
    cover the real mix of lengths instead of every batch padding to its one long sentence.
    """
    data = model.eval_data.take(cfg.max_eval_samples)
    if len(data) == 0:
        raise ConfigError(f"model {model.name!r}: the evaluation data is empty")
    singles = encode_batches(model, data.take(max(cfg.repeats, 1)), 1)
    data = _by_length(model, data)
    batches = encode_batches(model, data, cfg.batch_size)
    model.signature.check_feeds(batches[0])
    full = [b for b in batches if len(next(iter(b.values()))) == cfg.batch_size] or batches[:1]
    picks = np.unique(np.linspace(0, len(full) - 1, min(TIMING_BATCHES, len(full))).round().astype(int))
    return _Inputs(batches, [full[i] for i in picks], singles, data.labels,
                   model.signature.primary_output())


def _by_length(model: Model, data: EvalData) -> EvalData:
    counts = getattr(model.preprocessor, "token_counts", None)
    if counts is None or isinstance(data.samples, dict):
        return data
    order = np.argsort(counts(data.samples), kind="stable")
    samples = [data.samples[i] for i in order]
    labels = None if data.labels is None else data.labels[order]
    return replace(data, samples=samples, labels=labels)


def _calibration(model: Model) -> list[Feeds]:
    """Calibration feeds of one shape: ORT's histogram calibrators stack every sample.

    Text is encoded as one batch (padded to the longest sentence) and split into rows.
    """
    data = model.calibration_data.take(CALIBRATION_SAMPLES)
    if not model.is_text:
        return encode_batches(model, data, 16)
    (feeds,) = encode_batches(model, data, len(data))
    return [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(len(data))]


def _artifact(model: Model, variant: Variant | None, cfg: AccelerateConfig) -> Artifact:
    """What a runtime loads. Variants whose graph is the unmodified export also carry the
    source module (PyTorch runtimes run it at the variant's precision) and the shape hints
    that GPU runtimes size their buckets and TensorRT profiles by."""
    names = model.signature.input_names
    if variant is None:
        return Artifact(None, names, torch_factory=model.torch_factory)
    artifact = variant.artifact(names)
    hints = dict(artifact.hints)
    hints.setdefault("max_batch_size", max(cfg.batch_size, GPU_MAX_BATCH))
    hints.setdefault("opt_batch_size", cfg.batch_size)
    if isinstance(model.preprocessor, TextPreprocessor):
        hints.setdefault("sequence_inputs", list(model.preprocessor.input_names))
        hints.setdefault("max_sequence_length", model.preprocessor.max_length)
    factory = model.torch_factory if source_equivalent(variant.recipe) else None
    return replace(artifact, torch_factory=factory, hints=hints)


def _runs(model: Model, target: Target, variant: Variant, cfg: AccelerateConfig) -> bool:
    # ORT contrib ops (fused attention, ...) load only in ONNX Runtime, and not in TensorRT.
    if variant.ort_only and (target.runtime != "onnxruntime" or target.provider == "tensorrt"):
        return False
    return RUNTIMES[target.runtime].supports(_artifact(model, variant, cfg), target.provider)


def _run_one(target: Target, artifact: Artifact, inputs: _Inputs,
             cfg: AccelerateConfig) -> tuple[np.ndarray, Timing, str]:
    """Load, run the accuracy pass, time, meter energy; return (outputs, figures, provider)."""
    runtime = RUNTIMES[target.runtime](RuntimeSettings(cfg.threads, target.provider))
    with PeakMemory() as memory:
        runtime.load(artifact)
        try:
            outputs = run_outputs(runtime, inputs.batches, inputs.output_index)
            p50, p99, throughput = time_runtime(
                runtime, inputs.singles, inputs.timing_batches, cfg.repeats, cfg.warmup
            )
            joules, source = energy_per_inference(runtime, inputs.timing_batches, target.device)
        finally:
            provider = runtime.provider
            runtime.close()
    return outputs, Timing(p50, p99, throughput, memory.peak_mb, joules, source), provider


def _reference(model: Model, inputs: _Inputs, cfg: AccelerateConfig, step: _Counter,
               ) -> tuple[np.ndarray, dict[str, Any], Measurement | None]:
    """Reference outputs: PyTorch eager FP32 (also the baseline) when possible, else ORT FP32."""
    step("measuring the PyTorch eager baseline")
    torch_rt = RUNTIMES[BASELINE_RUNTIME]
    if model.torch_factory is not None and torch_rt.available():
        outputs, timing, provider = _run_one(Target(BASELINE_RUNTIME), _artifact(model, None, cfg), inputs, cfg)
        metrics = fidelity(model.task, outputs, outputs, inputs.labels)
        baseline = Measurement(
            "fp32", BASELINE_RUNTIME, provider, "fp32", "PyTorch eager, the source module",
            metrics=metrics, within_budget=True, **asdict(timing),
        )
        return outputs, {"runtime": "PyTorch eager FP32", "metrics": metrics}, baseline
    artifact = Artifact(model.onnx_path, model.signature.input_names)
    outputs, _, _ = _run_one(Target("onnxruntime"), artifact, inputs, cfg)
    metrics = fidelity(model.task, outputs, outputs, inputs.labels)
    return outputs, {"runtime": "ONNX Runtime FP32 (no PyTorch source)", "metrics": metrics}, None


def _measure(model: Model, variant: Variant, target: Target, inputs: _Inputs, reference: np.ndarray,
             ref: dict[str, Any], cfg: AccelerateConfig, step: _Counter) -> Measurement:
    step(f"measuring {variant.name} on {target.label}")
    base = Measurement(variant.name, target.runtime, "", variant.precision, variant.description,
                       size_mb=variant.size_mb, requested_provider=target.provider)
    try:
        outputs, timing, provider = _run_one(target, _artifact(model, variant, cfg), inputs, cfg)
    except InfernoError as exc:
        return replace(base, error=str(exc))
    except Exception as exc:  # a runtime rejecting this graph: record it, measure the rest
        log.warning("%s on %s failed", variant.name, target.label, exc_info=True)
        return replace(base, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    metrics = fidelity(model.task, outputs, reference, inputs.labels)
    return replace(base, provider=provider, metrics=metrics,
                   within_budget=within_budget(metrics, ref["metrics"], cfg.budget), **asdict(timing))


def _retime_finalists(model: Model, variants: list[Variant], measured: list[Measurement],
                      inputs: _Inputs, cfg: AccelerateConfig, step: _Counter,
                      ) -> tuple[list[Measurement], int]:
    """Re-time the fastest few within budget side by side; return updated measurements."""
    step("re-timing the fastest side by side")
    latency = cfg.objective == "latency"
    ranked = sorted((m for m in measured if m.ok and m.within_budget),
                    key=lambda m: speed(m, cfg.objective), reverse=True)
    finalists = ranked[:FINALISTS]
    if len(finalists) < 2:
        return measured, len(finalists)
    by_name = {v.name: v for v in variants}
    loaded: list[tuple[Measurement, Any]] = []
    try:
        for m in finalists:
            runtime = RUNTIMES[m.runtime](RuntimeSettings(cfg.threads, m.requested_provider))
            runtime.load(_artifact(model, by_name[m.variant], cfg))
            runtime.warmup(inputs.timing_batches[0], cfg.warmup)
            loaded.append((m, runtime))
        samples: dict[str, list[float]] = {m.key: [] for m in finalists}
        for round_number in range(FINAL_ROUNDS):
            for m, runtime in loaded[round_number % len(loaded):] + loaded[:round_number % len(loaded)]:
                if latency:
                    samples[m.key].append(float(np.median(latencies_ms(runtime, inputs.singles, cfg.repeats))))
                else:
                    samples[m.key].append(batches_per_s(runtime, inputs.timing_batches))
    finally:
        for _, runtime in loaded:
            runtime.close()
    medians = {key: float(np.median(values)) for key, values in samples.items()}

    def retimed(m: Measurement) -> Measurement:
        if m.key not in medians:
            return m
        if latency:
            return replace(m, latency_ms_p50=medians[m.key])
        return replace(m, throughput_per_s=medians[m.key])

    return [retimed(m) for m in measured], len(finalists)


def _with_speedups(measured: list[Measurement], baseline: Measurement | None,
                   objective: str) -> list[Measurement]:
    anchor = baseline or next(
        (m for m in measured if m.ok and m.variant == "fp32" and m.target == "onnxruntime"), None
    )
    if anchor is None:
        return measured
    def speedup(m: Measurement) -> float | None:
        if not m.ok:
            return None
        if objective == "latency":
            return anchor.latency_ms_p50 / m.latency_ms_p50
        return m.throughput_per_s / anchor.throughput_per_s
    return [replace(m, speedup=speedup(m)) for m in measured]


def choose(measured: list[Measurement], objective: str) -> tuple[Measurement, str]:
    """The fastest variant within budget; else the FP32 reference on its fastest runtime."""
    ok = [m for m in measured if m.ok]
    within = [m for m in ok if m.within_budget]
    if within:
        best = max(within, key=lambda m: speed(m, objective))
        return best, f"fastest by {objective} of {len(within)} variant(s) within budget"
    fp32 = [m for m in ok if m.variant == "fp32"]
    if not fp32:
        raise InfernoError("no variant could be measured, not even the FP32 reference; see the log")
    return max(fp32, key=lambda m: speed(m, objective)), "no variant met the budget: the FP32 reference is kept on its fastest runtime"


def _report(model: Model, cfg: AccelerateConfig, hardware: HardwareInfo, inputs: _Inputs,
            ref: dict[str, Any], baseline: Measurement | None, measured: list[Measurement],
            best: Measurement, reason: str, skipped: dict[str, str], started: float,
            notes: list[str]) -> Report:
    data = model.eval_data.take(cfg.max_eval_samples)
    chosen = Chosen(best.variant, best.runtime, best.provider, best.precision,
                    best.throughput_per_s, best.latency_ms_p50, best.metrics,
                    best.within_budget, best.speedup, "", reason, best.requested_provider,
                    best.joules_per_inference)
    return Report(
        model=model.name, source=model.source, task=model.task.value, objective=cfg.objective,
        batch_size=cfg.batch_size, threads=cfg.threads, budget=cfg.budget.model_dump(),
        evaluation={"source": data.source, "samples": len(data), "synthetic": data.synthetic,
                    "labels": inputs.labels is not None},
        reference=ref, hardware=hardware.to_dict(), baseline=baseline, variants=tuple(measured),
        chosen=chosen, skipped=skipped, duration_s=time.perf_counter() - started,
        inferno_version=inferno.__version__, device=cfg.device, notes=tuple(notes),
    )


def _fill(staging: Path, final: Path, model: Model, variant: Variant, report: Report,
          cfg: AccelerateConfig, step: _Counter) -> None:
    from inferno.models.zoo.cache import sha256_file
    from inferno.plan import Plan

    report = _published(report, final)
    shutil.copyfile(variant.path, staging / MODEL_FILE)
    for file_name, source in model.preprocessor.files().items():
        shutil.copyfile(source, staging / file_name)
    c = report.chosen
    artifact = _artifact(model, variant, cfg)
    plan = Plan(
        name=final.parent.name, variant=c.name, passes=variant.passes, runtime=c.runtime,
        provider=c.provider, threads=cfg.threads, graph_precision=artifact.graph_precision,
        compute_precision=artifact.compute_precision, hints=artifact.hints, task=model.task.value,
        signature=model.signature.to_dict(), preprocessor=model.preprocessor.to_dict(),
        metrics=c.metrics, within_budget=c.within_budget, budget=report.budget,
        objective=cfg.objective, batch_size=cfg.batch_size, throughput_per_s=c.throughput_per_s,
        latency_ms_p50=c.latency_ms_p50, source=model.source,
        model_sha256=sha256_file(staging / MODEL_FILE), inferno_version=inferno.__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=() if c.within_budget else (c.reason,),
        requested_provider=c.requested_provider,
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
    from inferno.plan import PlanRunner

    data = model.calibration_data.take(PROFILE_SAMPLES)
    runner = PlanRunner(folder)
    try:
        outputs = np.concatenate([runner.predict(batch) for batch in data.batches(PROFILE_BATCH)])
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
