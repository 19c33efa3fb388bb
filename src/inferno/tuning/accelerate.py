"""``accelerate``: build variants, measure each on every runtime, choose under the budget, save.

The flow: load the model → encode the evaluation data once → reference outputs (PyTorch
eager FP32 when the source module exists, else ONNX Runtime FP32) → build variants → measure
variant × runtime → re-time the fastest few side by side with ONNX Runtime FP32 and the
eager baseline (``tuning.compare``) → choose the fastest within budget that beats the FP32
graph beyond the spread → write the version folder.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from inferno._version import __version__
from inferno.config import AccelerateConfig, describe_validation_error
from inferno.errors import ConfigError, InfernoError
from inferno.hardware import HardwareInfo, detect
from inferno.models.model import EvalData, Model
from inferno.models.text import TextPreprocessor
from inferno.models.zoo import DEFAULT
from inferno.passes import PassContext
from inferno.repository import MODEL_FILE, check_name, write_version
from inferno.runtimes import RUNTIMES, Artifact, Feeds, RuntimeSettings
from inferno.tuning.compare import (
    ANCHOR_LABEL,
    ANCHOR_RUNTIME,
    ANCHOR_VARIANT,
    SPREAD,
    TWIN_SUFFIX,
    WITHIN_NOISE,
    Ratio,
    assess,
    choose,
    format_ratio,
    is_anchor,
    median_ms,
    ratios,
    rows_per_second,
    run_rounds,
    with_ratio,
)
from inferno.tuning.measure import (
    MachineLoad,
    PeakMemory,
    Rows,
    Timing,
    encode_batches,
    energy_per_inference,
    run_outputs,
    time_runtime,
    timed_unit,
)
from inferno.tuning.metrics import fidelity, judge
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
FINAL_ROUNDS = 9
"""Close candidates measured minutes apart can swap places on a noisy machine: the fastest
few are loaded together with ONNX Runtime FP32 (twice: the twin shows the noise) and the
eager baseline and re-timed in rounds, a shuffled order each; speed-ups are the median of
the per-round ratios (9 rounds: an interquartile range that is not just the extremes)."""
TURN_SECONDS = 0.03
"""A contender's timed work in one round (at least one call, after one untimed call)."""
SETTLE_SECONDS = 0.06
"""Idle time after each turn: ONNX Runtime's threads spin for tens of milliseconds after
a call (measured here: 20 ms was not enough, 60 ms was); 9 rounds × 6 contenders ≈ 5 s."""
ANCHOR_KEY = f"{ANCHOR_VARIANT}@{ANCHOR_RUNTIME}"
TWIN_KEY = ANCHOR_KEY + TWIN_SUFFIX
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
    rows: Rows
    """Rows in a call's feeds (``Signature.rows``: the batch axis need not be axis 0)."""
    output_axis: int | None = 0
    """The judged output's batch axis; None: each call's output is one row."""


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
    notify = progress or (lambda *_: None)
    with tempfile.TemporaryDirectory(prefix="inferno-") as tmp:
        ctx = PassContext(
            hardware=hardware, calibration=_calibration(loaded),
            samples=_calibration_samples(loaded), threads=cfg.threads,
            model_type=loaded.architecture.get("model_type"),
            attributes={k: v for k, v in loaded.architecture.items() if isinstance(v, int)},
        )
        recipes = select_recipes(loaded, cfg.variants)
        targets, notes = select_targets(cfg.device, cfg.runtimes, hardware)
        total = len(recipes) + len(recipes) * len(targets) + 4
        step = _Counter(notify, total)
        with MachineLoad() as load:
            reference, ref_metrics, baseline = _reference(loaded, inputs, cfg, step)
            variants, skipped = build_variants(recipes, loaded, ctx, Path(tmp), step)
            measured = [
                _measure(loaded, v, target, inputs, reference, ref_metrics, cfg, step)
                for v in variants for target in targets if _runs(loaded, target, v, cfg)
            ]
            measured, baseline, timing = _retime(loaded, variants, measured, baseline, inputs, cfg, step)
        noise = Ratio(**timing["noise"]) if "noise" in timing else None
        best, reason = choose(measured, cfg.objective, noise)
        load_info, load_notes = assess(load.reading, best, noise)
        step("saving the plan")
        chosen_variant = next(v for v in variants if v.name == best.variant)
        report = _report(loaded, cfg, hardware, inputs, ref_metrics, baseline, measured, best,
                         reason, skipped, started, [*notes, *load_notes], timing | load_info)
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
    # a graph without a batch axis takes one fixed-size call: its "batch" is that call
    batch_size = cfg.batch_size if model.signature.batched else 1
    batches = encode_batches(model, data, batch_size)
    model.signature.check_feeds(batches[0])
    rows = model.signature.rows
    full = [b for b in batches if rows(b) == batch_size] or batches[:1]
    picks = np.unique(np.linspace(0, len(full) - 1, min(TIMING_BATCHES, len(full))).round().astype(int))
    index = model.signature.primary_output()
    return _Inputs(batches, [full[i] for i in picks], singles, data.labels, index, rows,
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


def _artifact(model: Model, variant: Variant | None, cfg: AccelerateConfig) -> Artifact:
    """What a runtime loads. Variants whose graph is the unmodified export also carry the
    source module (PyTorch runtimes run it at the variant's precision) and the shape hints
    that GPU runtimes size their buckets and TensorRT profiles by."""
    names = model.signature.input_names
    if variant is None:
        return Artifact(None, names, torch_factory=model.torch_factory)
    artifact = variant.artifact(names)
    shapes: dict[str, Any] = {"max_batch_size": max(cfg.batch_size, GPU_MAX_BATCH), "opt_batch_size": cfg.batch_size,
                              # verified by the loader; runtimes must not split on axis 0
                              "batch_first": model.signature.batch_first}
    if isinstance(model.preprocessor, TextPreprocessor):
        shapes |= {"sequence_inputs": tuple(model.preprocessor.input_names),
                   "max_sequence_length": model.preprocessor.max_length}
    factory = model.torch_factory if source_equivalent(variant.recipe) else None
    return replace(artifact, torch_factory=factory, options=artifact.options.with_defaults(**shapes))


def _runs(model: Model, target: Target, variant: Variant, cfg: AccelerateConfig) -> bool:
    # ORT contrib ops (fused attention, ...) load only in ONNX Runtime, and not in TensorRT.
    if variant.ort_only and (target.runtime != "onnxruntime" or target.provider == "tensorrt"):
        return False
    return RUNTIMES[target.runtime].supports(_artifact(model, variant, cfg), target.provider)


def _run_one(target: Target, artifact: Artifact, inputs: _Inputs,
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


def _reference(model: Model, inputs: _Inputs, cfg: AccelerateConfig, step: _Counter,
               ) -> tuple[np.ndarray, dict[str, Any], Measurement | None]:
    """Reference outputs: PyTorch eager FP32 (also the baseline) when possible, else ORT FP32."""
    step("measuring the PyTorch eager baseline")
    torch_rt = RUNTIMES[BASELINE_RUNTIME]
    if model.torch_factory is not None and torch_rt.available():
        outputs, timing, provider, kernels = _run_one(Target(BASELINE_RUNTIME), _artifact(model, None, cfg), inputs, cfg)
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


def _measure(model: Model, variant: Variant, target: Target, inputs: _Inputs, reference: np.ndarray,
             ref: dict[str, Any], cfg: AccelerateConfig, step: _Counter) -> Measurement:
    step(f"measuring {variant.name} on {target.label}")
    base = Measurement(variant.name, target.runtime, "", variant.precision, variant.description,
                       size_mb=variant.size_mb, requested_provider=target.provider,
                       integer_ops=variant.integer_ops)
    try:
        outputs, timing, provider, kernels = _run_one(target, _artifact(model, variant, cfg), inputs, cfg)
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


_LOCATION = re.compile(
    r"(exception from |check .* failed at |at |in )?\S+\.(c|cc|cpp|cxx|h|hpp|py)(:\d+)+:?", re.IGNORECASE
)
ERROR_CHARS = 300


def error_message(exc: BaseException) -> str:
    """``Type: the first line that says something`` (OpenVINO's first lines name only the
    source file that raised), at most ``ERROR_CHARS`` characters."""
    lines = [line.strip() for line in str(exc).splitlines()]
    telling = [line for line in lines if line and not _LOCATION.fullmatch(line)]
    text = (telling or lines or [""])[0]
    return f"{type(exc).__name__}: {text}"[:ERROR_CHARS]


def _retime(model: Model, variants: list[Variant], measured: list[Measurement],
            baseline: Measurement | None, inputs: _Inputs, cfg: AccelerateConfig, step: _Counter,
            ) -> tuple[list[Measurement], Measurement | None, dict[str, Any]]:
    """Re-time the fastest few within budget side by side with ONNX Runtime FP32 and the eager
    baseline; every speed-up becomes a median of per-round ratios to ONNX Runtime FP32.

    Returns:
        (the measurements, the baseline, ``Report.timing``), figures replaced where re-timed.
    """
    step("re-timing the fastest side by side with ONNX Runtime FP32")
    ranked = sorted((m for m in measured if m.ok and m.within_budget and not is_anchor(m)),
                    key=lambda m: speed(m, cfg.objective), reverse=True)
    finalists = ranked[:FINALISTS]
    by_name = {v.name: v for v in variants}
    anchor = next((m for m in measured if m.ok and is_anchor(m)), None)
    anchor_artifact = (_artifact(model, by_name[ANCHOR_VARIANT], cfg) if anchor is not None
                       else Artifact(model.onnx_path, model.signature.input_names))
    contenders = [(ANCHOR_KEY, Target(ANCHOR_RUNTIME), anchor_artifact),
                  (TWIN_KEY, Target(ANCHOR_RUNTIME), anchor_artifact)]
    if baseline is not None:
        contenders.append((baseline.key, Target(BASELINE_RUNTIME), _artifact(model, None, cfg)))
    contenders += [(m.key, Target(m.runtime, m.requested_provider), _artifact(model, by_name[m.variant], cfg))
                   for m in finalists]
    samples = _rounds(contenders, inputs, cfg) if len(contenders) > 2 else None
    if samples is None:
        return _sweep_ratios(measured, baseline, anchor, cfg.objective)
    relative = ratios(samples, ANCHOR_KEY, cfg.objective)
    eager = ratios(samples, baseline.key, cfg.objective) if baseline and baseline.key in samples else {}
    medians = {key: float(np.median(values)) for key, values in samples.items()}
    figure = "latency_ms_p50" if cfg.objective == "latency" else "throughput_per_s"

    def retimed(m: Measurement) -> Measurement:
        if m.key not in relative:
            return _sweep_ratio(m, anchor, cfg.objective)
        m = with_ratio(m, relative[m.key], eager.get(m.key))
        if cfg.objective == "latency":
            return replace(m, latency_ms_p50=medians[m.key])
        return replace(m, throughput_per_s=medians[m.key])

    timing = {"anchor": ANCHOR_KEY, "anchor_label": f"{ANCHOR_LABEL} (the reference graph, CPU)",
              "rounds": FINAL_ROUNDS, "turn_s": TURN_SECONDS, "settle_s": SETTLE_SECONDS, "spread": SPREAD,
              "objective": cfg.objective, "contenders": list(samples),
              f"anchor_{figure}": medians[ANCHOR_KEY]}
    if TWIN_KEY in relative:
        timing["noise"] = asdict(relative[TWIN_KEY])
    return [retimed(m) for m in measured], retimed(baseline) if baseline else None, timing


def _rounds(contenders: list[tuple[str, Target, Artifact]], inputs: _Inputs,
            cfg: AccelerateConfig) -> dict[str, list[float]] | None:
    """Load every contender, then time them in ``FINAL_ROUNDS`` rotating rounds; None when
    the anchor (the first) cannot be loaded. A finalist that fails to load is left out."""
    loaded: list[tuple[str, Any]] = []
    try:
        for key, target, artifact in contenders:
            runtime = RUNTIMES[target.runtime](RuntimeSettings(cfg.threads, target.provider))
            try:
                runtime.load(artifact)
                runtime.warmup(inputs.timing_batches[0], cfg.warmup)
                for feeds in inputs.singles[: cfg.warmup]:
                    runtime.run(feeds)
            except Exception as exc:  # measured once already; a reload failing must not end the run
                log.warning("re-timing %s: %s", key, error_message(exc))
                log.debug("re-timing %s: traceback", key, exc_info=True)
                runtime.close()
                if key == ANCHOR_KEY:
                    return None
                continue
            loaded.append((key, runtime))
        if len(loaded) < 2:
            return None
        latency = cfg.objective == "latency"
        work = inputs.singles if latency else inputs.timing_batches
        units = [(key, timed_unit(runtime, work, inputs.rows, TURN_SECONDS)) for key, runtime in loaded]
        return run_rounds(units, FINAL_ROUNDS, median_ms if latency else rows_per_second,
                          settle=lambda: time.sleep(SETTLE_SECONDS))
    finally:
        for _, runtime in loaded:
            runtime.close()


def _sweep_ratio(m: Measurement, anchor: Measurement | None, objective: str) -> Measurement:
    """A speed-up from two single sweep measurements (shown as rough: ``speedup_rounds`` 0)."""
    if anchor is None or not m.ok or not anchor.throughput_per_s or not m.latency_ms_p50:
        return replace(m, speedup=None)
    if objective == "latency":
        return replace(m, speedup=anchor.latency_ms_p50 / m.latency_ms_p50)
    return replace(m, speedup=m.throughput_per_s / anchor.throughput_per_s)


def _sweep_ratios(measured: list[Measurement], baseline: Measurement | None, anchor: Measurement | None,
                  objective: str) -> tuple[list[Measurement], Measurement | None, dict[str, Any]]:
    """Nothing to re-time against (no other contender, or the anchor would not load)."""
    against = anchor or baseline
    label = ANCHOR_KEY if anchor is not None else (baseline.key if baseline else None)
    timing = {"anchor": label, "rounds": 0, "spread": None, "objective": objective}
    return ([_sweep_ratio(m, against, objective) for m in measured],
            _sweep_ratio(baseline, against, objective) if baseline else None, timing)


def _report(model: Model, cfg: AccelerateConfig, hardware: HardwareInfo, inputs: _Inputs,
            ref: dict[str, Any], baseline: Measurement | None, measured: list[Measurement],
            best: Measurement, reason: str, skipped: dict[str, str], started: float,
            notes: list[str], timing: dict[str, Any]) -> Report:
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
                    "labels": inputs.labels is not None, **_shapes(model)},
        reference=ref, hardware=hardware.to_dict(), baseline=baseline, variants=tuple(measured),
        chosen=chosen, skipped=skipped, duration_s=time.perf_counter() - started,
        inferno_version=__version__, device=cfg.device, notes=tuple(notes), timing=timing,
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


def _fill(staging: Path, final: Path, model: Model, variant: Variant, report: Report,
          cfg: AccelerateConfig, step: _Counter) -> None:
    from inferno.models.zoo.cache import sha256_file
    from inferno.repository.plan import Plan

    report = _published(report, final)
    shutil.copyfile(variant.path, staging / MODEL_FILE)
    for file_name, source in model.preprocessor.files().items():
        shutil.copyfile(source, staging / file_name)
    c = report.chosen
    artifact = _artifact(model, variant, cfg)
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
