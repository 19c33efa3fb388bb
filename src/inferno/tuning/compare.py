"""Honest speed claims: interleaved rounds → ratios with their spread → the choice.

A sweep measures each variant once, minutes apart from the others: on a shared machine two
identical graphs can come out 1.0× and 2.0×. So the fastest few within budget are loaded
together with the FP32 graph on ONNX Runtime (the anchor every speed-up is quoted against),
a second session of that same graph (the twin: what "no difference" looks like here) and
the PyTorch eager baseline, and timed finely interleaved in rounds. Each round gives each
contender a ratio to the anchor timed alongside it; the claim is the median of those
ratios, with their interquartile range. A variant is chosen over the FP32 graph only when
the low end of that range is above 1 and above the twin's high end. ``assess`` says when
the machine was visibly loaded, the twin strayed or the spread is wide, so a report never
states a shaky figure as a solid one.

Pure logic: the timers come in as callables, so tests drive made-up numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inferno.errors import InfernoError
from inferno.tuning.measure import LoadReading
from inferno.tuning.report import Chosen, Measurement, speed

ANCHOR_VARIANT, ANCHOR_RUNTIME = "fp32", "onnxruntime"
ANCHOR_LABEL = "ONNX Runtime FP32"
TWIN_SUFFIX = " (twin)"
"""Key suffix of the anchor's twin: a second session of the same graph, the noise floor."""
TWIN_TOLERANCE = 1.1
"""The twin's median ratio outside [1/1.1, 1.1]: identical graphs timed apart, noise."""
SPREAD = "interquartile range of the per-round ratios"
WITHIN_NOISE = "within noise"
LOADED_SHARE = 0.15
"""Other processes using more than this share of our CPUs while timing: a loaded machine."""
SPIN_DRIFT = 1.3
"""The spin yardstick slower (or faster) by more than this at the end than at the start."""
WIDE_SPREAD = 1.25
"""A ratio whose interquartile range spans more than this factor (high / low) is not solid."""


@dataclass(frozen=True)
class Ratio:
    """One contender against the anchor over the rounds: median and interquartile range."""

    median: float
    low: float
    high: float
    rounds: int

    @property
    def wide(self) -> bool:
        return self.high > WIDE_SPREAD * max(self.low, 1e-12)


def is_anchor(m: Measurement) -> bool:
    """The FP32 reference graph on ONNX Runtime, CPU: what every speed-up is relative to."""
    return m.variant == ANCHOR_VARIANT and m.runtime == ANCHOR_RUNTIME and m.requested_provider is None


Unit = Callable[[], list[tuple[float, float]]]
"""Runs one turn of a contender's work; returns (seconds, rows) for each call it timed."""


def run_rounds(units: Sequence[tuple[str, Unit]], rounds: int,
               figure: Callable[[list[tuple[float, float]]], float],
               settle: Callable[[], None] = lambda: None, seed: int = 0) -> dict[str, list[float]]:
    """Time the contenders in rounds: each round, every contender takes one turn, in a fresh
    (seeded) random order, and ``settle`` runs after each turn; ``figure`` turns a turn's
    calls into the contender's figure for the round.

    The shuffled order gives nobody a fixed neighbour, and ``settle`` (a short sleep) lets
    the runtime that just ran go quiet: ONNX Runtime's idle threads keep spinning for tens of
    milliseconds after a call, and would slow whoever comes next by half on a small machine.

    Returns:
        Each key's figures, one per round.
    """
    order = random.Random(seed)
    samples: dict[str, list[float]] = {key: [] for key, _ in units}
    for _ in range(rounds):
        turns = list(units)
        order.shuffle(turns)
        for key, unit in turns:
            samples[key].append(float(figure(unit())))
            settle()
    return samples


def rows_per_second(calls: list[tuple[float, float]]) -> float:
    """Throughput over a turn's calls: all rows over all seconds."""
    return sum(rows for _, rows in calls) / max(sum(seconds for seconds, _ in calls), 1e-12)


def median_ms(calls: list[tuple[float, float]]) -> float:
    """Latency over a turn's calls (batch 1): the median call time, in ms."""
    return float(np.median([seconds for seconds, _ in calls])) * 1e3


def ratios(samples: dict[str, list[float]], anchor: str, objective: str) -> dict[str, Ratio]:
    """Every key's per-round ratio to ``anchor`` (higher is faster: throughput over the
    anchor's, or the anchor's latency over its own), summarized as median and IQR."""
    base = np.asarray(samples[anchor], dtype=np.float64)
    found = {}
    for key, values in samples.items():
        mine = np.asarray(values, dtype=np.float64)
        per_round = base / mine if objective == "latency" else mine / base
        found[key] = summarize(per_round)
    return found


def summarize(per_round: Sequence[float] | np.ndarray) -> Ratio:
    values = np.asarray(per_round, dtype=np.float64)
    low, median, high = np.percentile(values, [25, 50, 75])
    return Ratio(float(median), float(low), float(high), len(values))


def with_ratio(m: Measurement, ratio: Ratio, eager: Ratio | None) -> Measurement:
    """``m`` with its speed-up taken from the rounds (and its ratio to the eager baseline)."""
    return replace(m, speedup=ratio.median, speedup_low=ratio.low, speedup_high=ratio.high,
                   speedup_rounds=ratio.rounds, speedup_eager=eager.median if eager else None)


def format_ratio(m: Measurement | Chosen) -> str:
    """``1.32× (1.25–1.40)`` for a re-timed figure, ``~1.3×`` for a single sweep one."""
    if m.speedup is None:
        return "-"
    if m.speedup_rounds and m.speedup_low is not None and m.speedup_high is not None:
        return f"{m.speedup:.2f}× ({m.speedup_low:.2f}–{m.speedup_high:.2f})"
    return f"~{m.speedup:.1f}×"


def choose(measured: list[Measurement], objective: str, noise: Ratio | None = None) -> tuple[Measurement, str]:
    """The fastest variant within budget that beats the FP32 graph beyond the spread.

    When the candidates were re-timed side by side (``speedup_rounds`` > 0), only they
    compete, by the median ratio to ONNX Runtime FP32, and one whose ratio's low end is not
    above 1 (nor above ``noise.high``: the twin's ratio, identical graphs) does not count as
    faster: when none is, the FP32 graph on ONNX Runtime is kept (the reason starts with
    ``within noise``). Without re-timed figures: the fastest within budget by the sweep.
    When nothing is within budget: the FP32 reference on its fastest runtime.

    Raises:
        InfernoError: nothing could be measured, not even the FP32 reference.
    """
    ok = [m for m in measured if m.ok]
    within = [m for m in ok if m.within_budget]
    if not within:
        fp32 = [m for m in ok if m.variant == ANCHOR_VARIANT]
        if not fp32:
            raise InfernoError("no variant could be measured, not even the FP32 reference; see the log")
        return (max(fp32, key=lambda m: speed(m, objective)),
                "no variant met the budget: the FP32 reference is kept on its fastest runtime")
    retimed = [m for m in within if m.retimed and m.speedup is not None]
    if not retimed:
        best = max(within, key=lambda m: speed(m, objective))
        return best, f"fastest by {objective} of {len(within)} variant(s) within budget"
    return _choose_retimed(retimed, len(within), objective, noise)


def _choose_retimed(retimed: list[Measurement], n_within: int, objective: str,
                    noise: Ratio | None) -> tuple[Measurement, str]:
    def ratio(m: Measurement) -> float:
        return m.speedup if m.speedup is not None else 0.0

    floor = max(1.0, noise.high if noise is not None else 1.0)
    anchor = next((m for m in retimed if is_anchor(m)), None)
    fastest = max(retimed, key=ratio)
    beyond = [m for m in retimed if not is_anchor(m) and (m.speedup_low or 0.0) > floor]
    rounds = fastest.speedup_rounds
    versus = f"× {ANCHOR_LABEL}, IQR over {rounds} interleaved rounds"
    if floor > 1.0:
        versus += f"; identical FP32 sessions differ by up to {floor:.2f}× here"
    if beyond:
        best = max(beyond, key=ratio)
        reason = (f"fastest by {objective} of {n_within} variant(s) within budget that beats "
                  f"{ANCHOR_LABEL} beyond the spread ({format_ratio(best)} {versus})")
        if best is not fastest:
            reason += (f"; {fastest.key} has a higher median ({format_ratio(fastest)}) "
                       "but does not beat the FP32 graph beyond its spread")
        return best, reason
    if fastest is anchor or (anchor is not None and ratio(fastest) <= 1.0):
        return anchor, f"the FP32 graph on ONNX Runtime is the fastest of {n_within} variant(s) within budget"
    if anchor is None:
        return fastest, (f"fastest by {objective} of {n_within} variant(s) within budget at "
                         f"{format_ratio(fastest)} ({versus}): not beyond the spread, but the FP32 "
                         "graph on ONNX Runtime was not among the candidates to keep")
    return anchor, (f"{WITHIN_NOISE}: kept the FP32 graph — {fastest.key}, the fastest within budget at "
                    f"{format_ratio(fastest)} ({versus}), does not beat it beyond the spread")


def assess(load: LoadReading | None, chosen: Measurement | None,
           noise: Ratio | None = None) -> tuple[dict[str, Any], list[str]]:
    """Whether the machine was visibly loaded while timing, the anchor's twin strayed from
    1 (two sessions of one graph timed side by side), or the chosen ratio's spread is wide.

    Returns:
        (entries for ``Report.timing``, notes for the report and the CLI summary).
    """
    info: dict[str, Any] = {}
    notes: list[str] = []
    loaded = False
    if load is not None:
        info |= {"foreign_cpu_share": load.foreign_share, "spin_before_ms": load.spin_before_ms,
                 "spin_after_ms": load.spin_after_ms, "measured_s": load.seconds}
        if load.foreign_share is not None and load.foreign_share > LOADED_SHARE:
            loaded = True
            notes.append(f"the machine was loaded while measuring: other processes used "
                         f"{load.foreign_share:.0%} of this process's CPUs; speed-ups are rough")
        if not 1 / SPIN_DRIFT <= load.spin_ratio <= SPIN_DRIFT:
            loaded = True
            notes.append(f"this process ran {load.spin_ratio:.2f}× as slow at the end as at the start "
                         f"(spin yardstick {load.spin_before_ms:.1f} → {load.spin_after_ms:.1f} ms): "
                         "the load changed while measuring")
    wide = bool(chosen is not None and chosen.retimed and chosen.speedup_low is not None
                and chosen.speedup_high is not None
                and chosen.speedup_high > WIDE_SPREAD * max(chosen.speedup_low, 1e-12))
    if wide and chosen is not None:
        notes.append(f"wide spread: {chosen.key} at {format_ratio(chosen)} × {ANCHOR_LABEL} "
                     "is not a solid figure; re-run on a quieter machine for one")
    strayed = noise is not None and (noise.wide or not 1 / TWIN_TOLERANCE <= noise.median <= TWIN_TOLERANCE)
    if strayed and noise is not None:
        notes.append(f"two sessions of the same FP32 graph timed side by side differed: "
                     f"{noise.median:.2f}× ({noise.low:.2f}–{noise.high:.2f}); that is the noise here, "
                     "and a variant had to beat it to be chosen")
    info |= {"loaded": loaded, "uncertain": loaded or wide or strayed}
    return info, notes
