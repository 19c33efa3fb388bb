"""``accelerate``: build variants, measure each on every runtime, choose under the budget, save.

The flow: load the model → encode the evaluation data once → reference outputs (PyTorch
eager FP32 when the source module exists, else ONNX Runtime FP32) → build variants → measure
variant × runtime → re-time the fastest few side by side with ONNX Runtime FP32 and the
eager baseline (``tuning.compare``) → choose the fastest within budget that beats the FP32
graph beyond the spread → write the version folder.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from inferno.config import AccelerateConfig, describe_validation_error
from inferno.errors import ConfigError, InfernoError
from inferno.hardware import HardwareInfo, detect
from inferno.models.model import EvalData, Model
from inferno.models.zoo import DEFAULT
from inferno.passes import PassContext
from inferno.repository import check_name, write_version
from inferno.runtimes import RUNTIMES, Artifact, Feeds, RuntimeSettings
from inferno.tuning import publish
from inferno.tuning.compare import Ratio, assess, choose
from inferno.tuning.measure import (
    EvalInputs,
    MachineLoad,
    PeakMemory,
    Timing,
    encode_batches,
    energy_per_inference,
    error_message,
    run_outputs,
    time_runtime,
)
from inferno.tuning.metrics import fidelity, judge
from inferno.tuning.publish import Found
from inferno.tuning.report import Measurement, Report
from inferno.tuning.retime import retime
from inferno.tuning.targets import BASELINE_RUNTIME, Target, select_targets
from inferno.tuning.variants import Variant, artifact_for, build_variants, select_recipes

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""Called as work advances: (what is happening, steps done, steps in all)."""

CALIBRATION_SAMPLES = 128
TIMING_BATCHES = 4
"""Throughput is timed on the first full batches of the evaluation data (real lengths)."""


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
    shapes: Sequence[str] = (),
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
        shapes: ``NAME:DIMS`` sizes for an ONNX graph's dynamic axes (``x:N,3,320,320``);
            default: sizes the graph is found to accept (``models.shapes``).

    Returns:
        The Report; ``report.chosen.path`` is the saved version folder.

    Raises:
        InfernoError: a bad model, data or setting (the message says which).
    """
    started = time.perf_counter()
    cfg = _config(config, settings)
    loaded = model if isinstance(model, Model) else _load(model, trust, data, task, name, shapes)
    model_name = check_name(name or loaded.name)
    hardware = detect()
    inputs = _encode(loaded, cfg)
    with tempfile.TemporaryDirectory(prefix="inferno-") as tmp:
        step = _Counter(progress or (lambda *_: None))
        variants, found = _search(loaded, cfg, hardware, inputs, Path(tmp), step)
        step("saving the plan")
        chosen = next(v for v in variants if v.name == found.best.variant)
        report = publish.report(loaded, cfg, hardware, found, started)
        folder = write_version(
            Path(repository), model_name,
            lambda staging, final: publish.fill(staging, final, loaded, chosen, report, cfg, step),
        )
    return publish.published(report, folder)


def _search(model: Model, cfg: AccelerateConfig, hardware: HardwareInfo, inputs: EvalInputs, tmp: Path,
            step: _Counter) -> tuple[list[Variant], Found]:
    """Build the variants, measure each on every target, re-time the fastest, choose one."""
    ctx = PassContext(
        hardware=hardware, calibration=_calibration(model),
        samples=_calibration_samples(model), threads=cfg.threads,
        model_type=model.architecture.get("model_type"),
        attributes={k: v for k, v in model.architecture.items() if isinstance(v, int)},
    )
    recipes = select_recipes(model, cfg.variants)
    targets, notes = select_targets(cfg.device, cfg.runtimes, hardware)
    step.total = len(recipes) + len(recipes) * len(targets) + 4
    with MachineLoad() as load:
        reference, ref_metrics, baseline = _reference(model, inputs, cfg, step)
        variants, skipped = build_variants(recipes, model, ctx, tmp, step)
        measured = [
            _measure(model, v, target, inputs, reference, ref_metrics, cfg, step)
            for v in variants for target in targets if _runs(model, target, v, cfg)
        ]
        measured, baseline, timing = retime(model, variants, measured, baseline, inputs, cfg, step)
    noise = Ratio(**timing["noise"]) if "noise" in timing else None
    best, reason = choose(measured, cfg.objective, noise)
    load_info, load_notes = assess(load.reading, best, noise)
    return variants, Found(ref_metrics, baseline, measured, best, reason, skipped, [*notes, *load_notes],
                           timing | load_info, inputs.labels is not None)


class _Counter:
    """Progress in steps: each call reports one more done (``total`` is set once known)."""

    def __init__(self, notify: ProgressFn, total: int = 0) -> None:
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


def _load(ref: str, trust: bool, data: str | Path | None, task: str | None, name: str | None,
          shapes: Sequence[str] = ()) -> Model:
    from inferno.models.loaders import load_model
    from inferno.models.signature import Task

    try:
        task_value = Task(task) if task else None
    except ValueError as exc:
        raise ConfigError(f"--task {task!r}: expected one of {', '.join(t.value for t in Task)}") from exc
    return load_model(ref, trust=trust, data=Path(data) if data else None, task=task_value, name=name,
                      shapes=shapes)


def _encode(model: Model, cfg: AccelerateConfig) -> EvalInputs:
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
    # a graph without a batch axis takes one fixed-size call: its "batch" is that call
    batch_size = cfg.batch_size if model.signature.batched else 1
    batches = encode_batches(model, data, batch_size)
    model.signature.check_feeds(batches[0])
    rows = model.signature.rows
    full = [b for b in batches if rows(b) == batch_size] or batches[:1]
    picks = np.unique(np.linspace(0, len(full) - 1, min(TIMING_BATCHES, len(full))).round().astype(int))
    index = model.signature.primary_output()
    return EvalInputs(batches, [full[i] for i in picks], singles, data.labels, index, rows,
                   model.signature.outputs[index].batch_axis)


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
        return encode_batches(model, data, 16 if model.signature.batched else 1)
    (feeds,) = encode_batches(model, data, len(data))
    return [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(len(data))]


def _calibration_samples(model: Model) -> list[Feeds]:
    """The calibration samples one per feed, each at its own shape (text: unpadded)."""
    data = model.calibration_data.take(CALIBRATION_SAMPLES)
    return encode_batches(model, data, 1) if model.signature.batched else []


def _runs(model: Model, target: Target, variant: Variant, cfg: AccelerateConfig) -> bool:
    # ORT contrib ops (fused attention, ...) load only in ONNX Runtime, and not in TensorRT.
    if variant.ort_only and (target.runtime != "onnxruntime" or target.provider == "tensorrt"):
        return False
    return RUNTIMES[target.runtime].supports(artifact_for(model, variant, cfg), target.provider)


def _run_one(target: Target, artifact: Artifact, inputs: EvalInputs,
             cfg: AccelerateConfig) -> tuple[np.ndarray, Timing, str, str | None]:
    """Load, run the accuracy pass, time, meter energy; return (outputs, figures, provider, kernels)."""
    runtime = RUNTIMES[target.runtime](RuntimeSettings(cfg.threads, target.provider))
    with PeakMemory() as memory:
        runtime.load(artifact)
        try:
            outputs = run_outputs(runtime, inputs.batches, inputs.output_index, inputs.output_axis)
            p50, p99, throughput = time_runtime(
                runtime, inputs.singles, inputs.timing_batches, cfg.repeats, cfg.warmup, inputs.rows
            )
            joules, source = energy_per_inference(runtime, inputs.timing_batches, target.device, inputs.rows)
        finally:
            provider, kernels = runtime.provider, runtime.kernels
            runtime.close()
    return outputs, Timing(p50, p99, throughput, memory.peak_mb, joules, source), provider, kernels


def _reference(model: Model, inputs: EvalInputs, cfg: AccelerateConfig, step: _Counter,
               ) -> tuple[np.ndarray, dict[str, Any], Measurement | None]:
    """Reference outputs: PyTorch eager FP32 (also the baseline) when possible, else ORT FP32."""
    step("measuring the PyTorch eager baseline")
    torch_rt = RUNTIMES[BASELINE_RUNTIME]
    if model.torch_factory is not None and torch_rt.available():
        outputs, timing, provider, kernels = _run_one(Target(BASELINE_RUNTIME), artifact_for(model, None, cfg), inputs, cfg)
        metrics = fidelity(model.task, outputs, outputs, inputs.labels)
        baseline = Measurement(
            "fp32", BASELINE_RUNTIME, provider, "fp32", "PyTorch eager, the source module",
            metrics=metrics, within_budget=True, criterion=judge(metrics, metrics, cfg.budget)[1],
            kernels=kernels, **asdict(timing),
        )
        return outputs, {"runtime": "PyTorch eager FP32", "metrics": metrics}, baseline
    artifact = Artifact(model.onnx_path, model.signature.input_names)
    outputs, *_ = _run_one(Target("onnxruntime"), artifact, inputs, cfg)
    metrics = fidelity(model.task, outputs, outputs, inputs.labels)
    return outputs, {"runtime": "ONNX Runtime FP32 (no PyTorch source)", "metrics": metrics}, None


def _measure(model: Model, variant: Variant, target: Target, inputs: EvalInputs, reference: np.ndarray,
             ref: dict[str, Any], cfg: AccelerateConfig, step: _Counter) -> Measurement:
    step(f"measuring {variant.name} on {target.label}")
    base = Measurement(variant.name, target.runtime, "", variant.precision, variant.description,
                       size_mb=variant.size_mb, requested_provider=target.provider,
                       integer_ops=variant.integer_ops)
    try:
        outputs, timing, provider, kernels = _run_one(target, artifact_for(model, variant, cfg), inputs, cfg)
    except InfernoError as exc:
        return replace(base, error=str(exc))
    except Exception as exc:  # a runtime rejecting this graph: record it, measure the rest
        message = error_message(exc)
        log.warning("%s on %s failed: %s", variant.name, target.label, message)
        log.debug("%s on %s: traceback", variant.name, target.label, exc_info=True)
        return replace(base, error=message)
    if outputs.shape != reference.shape:  # e.g. a runtime sizing a data-dependent axis otherwise
        return replace(base, provider=provider, kernels=kernels, error=f"outputs shaped {list(outputs.shape)}, the "
                       f"FP32 reference's {list(reference.shape)}")
    metrics = fidelity(model.task, outputs, reference, inputs.labels)
    passed, criterion = judge(metrics, ref["metrics"], cfg.budget)
    return replace(base, provider=provider, kernels=kernels, metrics=metrics, within_budget=passed, criterion=criterion,
                   **asdict(timing))


