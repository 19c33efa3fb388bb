"""Re-time the fastest candidates side by side, in rounds, against ONNX Runtime FP32.

Close candidates measured minutes apart can swap places on a noisy machine: the fastest few
are loaded together with ONNX Runtime FP32 (twice: the twin shows the noise) and the eager
baseline and re-timed in rounds, a shuffled order each; speed-ups are the median of the
per-round ratios. Without anything to re-time against, ratios come from the single sweep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from inferno.config import AccelerateConfig
from inferno.models.model import Model
from inferno.runtimes import RUNTIMES, Artifact, RuntimeSettings
from inferno.tuning.compare import (
    ANCHOR_LABEL,
    ANCHOR_RUNTIME,
    ANCHOR_VARIANT,
    SPREAD,
    TWIN_SUFFIX,
    is_anchor,
    median_ms,
    ratios,
    rows_per_second,
    run_rounds,
    with_ratio,
)
from inferno.tuning.measure import EvalInputs, error_message, timed_unit
from inferno.tuning.report import Measurement, speed
from inferno.tuning.targets import BASELINE_RUNTIME, Target
from inferno.tuning.variants import Variant, artifact_for

log = logging.getLogger(__name__)

FINALISTS = 3
FINAL_ROUNDS = 9
"""Rounds of the side-by-side re-timing (9 rounds: an interquartile range that is not just
the extremes)."""
TURN_SECONDS = 0.03
"""A contender's timed work in one round (at least one whole pass over the timing batches,
after one untimed call)."""
SETTLE_SECONDS = 0.06
"""Idle time after each turn: ONNX Runtime's threads spin for tens of milliseconds after
a call (measured here: 20 ms was not enough, 60 ms was); 9 rounds × 6 contenders ≈ 5 s."""
ANCHOR_KEY = f"{ANCHOR_VARIANT}@{ANCHOR_RUNTIME}"
TWIN_KEY = ANCHOR_KEY + TWIN_SUFFIX


def retime(model: Model, variants: list[Variant], measured: list[Measurement],
           baseline: Measurement | None, inputs: EvalInputs, cfg: AccelerateConfig, step: Callable[[str], None],
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
    anchor_artifact = (artifact_for(model, by_name[ANCHOR_VARIANT], cfg) if anchor is not None
                       else Artifact(model.onnx_path, model.signature.input_names))
    contenders = [(ANCHOR_KEY, Target(ANCHOR_RUNTIME), anchor_artifact),
                  (TWIN_KEY, Target(ANCHOR_RUNTIME), anchor_artifact)]
    if baseline is not None:
        contenders.append((baseline.key, Target(BASELINE_RUNTIME), artifact_for(model, None, cfg)))
    contenders += [(m.key, Target(m.runtime, m.requested_provider), artifact_for(model, by_name[m.variant], cfg))
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


def _rounds(contenders: list[tuple[str, Target, Artifact]], inputs: EvalInputs,
            cfg: AccelerateConfig) -> dict[str, list[float]] | None:
    """Load every contender, then time them in ``FINAL_ROUNDS`` rotating rounds; None when
    the anchor (the first) cannot be loaded. A finalist that fails to load is left out."""
    loaded: list[tuple[str, Any]] = []
    try:
        for key, target, artifact in contenders:
            runtime = RUNTIMES[target.runtime](RuntimeSettings(cfg.threads, target.provider))
            try:
                runtime.load(artifact)
                runtime.prepare(inputs.timing_batches)
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
