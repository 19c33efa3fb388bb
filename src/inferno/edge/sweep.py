"""The cascade's arithmetic: confidence, routing by threshold, the sweep table, the operating
point, its cross-validated check, and the plot. Pure functions of arrays: no model, no network.

Accuracy within ``tolerance`` means ``accuracy >= cloud_only_accuracy - tolerance`` (fractions:
0.005 is half a point). The operating point is the threshold with the highest edge share
that stays within it (ties: the higher accuracy, then the higher threshold).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast, overload

import numpy as np

from inferno.errors import ConfigError, DataMismatchError

Rule = Literal["top", "margin"]
RULES: tuple[Rule, ...] = ("top", "margin")
DEFAULT_THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999, 1.0)
SUM_TOLERANCE = 1e-3
"""Rows that are non-negative and sum to 1 within this are probabilities already; others are logits."""
_EPS = 1e-12  # accuracy comparisons: fractions of whole rows, exact up to rounding


def check_threshold(value: float, option: str = "--threshold") -> float:
    """``value`` as a float in 0..1; ConfigError naming ``option`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{option} {value!r}: expected a confidence between 0 and 1")
    return float(value)


def check_rule(rule: str) -> Rule:
    """``rule`` when it is ``top`` or ``margin``; ConfigError otherwise."""
    if rule not in RULES:
        raise ConfigError(f"--rule {rule!r}: expected one of {', '.join(RULES)}")
    return cast(Rule, rule)


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """``scores`` ``[rows, classes]`` as probabilities: unchanged when every row is non-negative
    and sums to 1, else a softmax over each row (they were logits).

    Raises:
        DataMismatchError: not a 2-D array with at least two classes.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] < 2 or scores.dtype.kind != "f":
        raise DataMismatchError(f"class scores: expected float [rows, classes] with classes >= 2, "
                                f"got {scores.dtype} {list(scores.shape)}")
    if len(scores) == 0 or (np.all(scores >= -1e-6) and np.allclose(scores.sum(axis=1), 1.0, atol=SUM_TOLERANCE)):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(scores.dtype, copy=False)


def confidence(probabilities: np.ndarray, rule: str) -> np.ndarray:
    """Per row: the top probability (``top``) or the best minus the second best (``margin``)."""
    check_rule(rule)
    if rule == "top":
        return np.asarray(probabilities.max(axis=1))
    best_two = np.partition(probabilities, -2, axis=1)[:, -2:]
    return np.asarray(best_two[:, 1] - best_two[:, 0])


@dataclass(frozen=True)
class SweepPoint:
    """The cascade at one threshold."""

    threshold: float
    edge_share: float
    """Share of the rows answered on the edge."""
    edge_rows: int
    accuracy: float
    """Overall: the edge's answers where it was confident, the cloud's elsewhere."""
    edge_accuracy: float | None
    """The edge's accuracy on the rows it answered (None: it answered none)."""
    cloud_accuracy: float | None
    """The cloud's accuracy on the rows forwarded to it (None: none were)."""
    mean_latency_ms: float
    """Per request: edge time + (forwarded) × (cloud time + the simulated round trip)."""
    within_tolerance: bool


@dataclass(frozen=True)
class CrossValidated:
    """The operating point chosen on one half of the data and scored on the other, both ways."""

    edge_share: float
    accuracy: float
    """Pooled over both held-out halves: every row scored once, by a threshold not chosen on it."""
    thresholds: tuple[float | None, float | None]
    """The threshold chosen on each half (None: no threshold kept accuracy; all to the cloud)."""
    cloud_accuracy: float
    within_tolerance: bool


@dataclass(frozen=True)
class SweepResult(Sequence[SweepPoint]):
    """The sweep: its points (it is a sequence of them) and the figures around them."""

    points: tuple[SweepPoint, ...]
    rule: str
    rtt_ms: float
    tolerance: float
    rows: int
    cloud_accuracy: float
    """The cloud alone on every row: the reference the tolerance is counted from."""
    edge_accuracy: float
    """The edge alone on every row."""
    cloud_latency_ms: float
    """The cloud alone: its time + the round trip, per request."""
    edge_latency_ms: float
    operating: SweepPoint | None
    cross_validated: CrossValidated | None

    @overload
    def __getitem__(self, index: int) -> SweepPoint: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SweepPoint]: ...

    def __getitem__(self, index: int | slice) -> SweepPoint | Sequence[SweepPoint]:
        return self.points[index]

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[SweepPoint]:
        return iter(self.points)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Rows:
    """Per-row facts every threshold is scored from."""

    conf: np.ndarray
    edge_ok: np.ndarray
    cloud_ok: np.ndarray
    edge_ms: np.ndarray
    cloud_ms: np.ndarray

    def take(self, index: np.ndarray) -> _Rows:
        return _Rows(self.conf[index], self.edge_ok[index], self.cloud_ok[index],
                     self.edge_ms[index], self.cloud_ms[index])


def evaluate(edge_probs: np.ndarray, cloud_probs: np.ndarray, labels: np.ndarray, edge_ms: np.ndarray,
             cloud_ms: np.ndarray, thresholds: Sequence[float], *, rule: str = "top", rtt_ms: float = 0.0,
             tolerance: float = 0.005, seed: int = 0) -> SweepResult:
    """Score every threshold from the edge's and the cloud's answers on the same rows.

    Args:
        edge_probs, cloud_probs: ``[rows, classes]`` from each side. labels: ``[rows]`` class ids.
        edge_ms, cloud_ms: ``[rows]`` time per row on each side (the cloud's without the round trip).
        thresholds: confidences 0..1 to score (sorted, duplicates dropped).
        rtt_ms: the simulated network round trip added to each forwarded request.
        tolerance: how far below the cloud's accuracy the cascade may fall (fraction).
        seed: the split of the 2-fold cross-validation.

    Raises:
        ConfigError: bad thresholds, rule, ``rtt_ms`` or ``tolerance``.
        DataMismatchError: the arrays do not describe the same rows.
    """
    grid = _grid(thresholds)
    if not math.isfinite(rtt_ms) or rtt_ms < 0:
        raise ConfigError(f"--rtt-ms {rtt_ms!r}: expected a round trip of 0 ms or more")
    if not 0 <= tolerance < 1:
        raise ConfigError(f"tolerance {tolerance!r}: expected a fraction of accuracy from 0 to below 1")
    labels = np.asarray(labels).reshape(-1)
    shapes = {"edge": edge_probs.shape, "cloud": cloud_probs.shape, "labels": labels.shape,
              "edge_ms": np.shape(edge_ms), "cloud_ms": np.shape(cloud_ms)}
    n = len(labels)
    if n == 0 or edge_probs.shape != cloud_probs.shape or any(s[0] != n for s in shapes.values()):
        raise DataMismatchError(f"sweep: expected the same rows (at least one) everywhere, got shapes {shapes}")
    rows = _Rows(confidence(edge_probs, rule), edge_probs.argmax(axis=1) == labels,
                 cloud_probs.argmax(axis=1) == labels, np.asarray(edge_ms, dtype=np.float64),
                 np.asarray(cloud_ms, dtype=np.float64) + rtt_ms)
    cloud_accuracy = float(rows.cloud_ok.mean())
    points = tuple(_point(rows, t, cloud_accuracy, tolerance) for t in grid)
    return SweepResult(
        points=points, rule=rule, rtt_ms=float(rtt_ms), tolerance=tolerance, rows=n,
        cloud_accuracy=cloud_accuracy, edge_accuracy=float(rows.edge_ok.mean()),
        cloud_latency_ms=float(rows.cloud_ms.mean()), edge_latency_ms=float(rows.edge_ms.mean()),
        operating=operating_point(points), cross_validated=cross_validate(rows, grid, tolerance, seed),
    )


def _grid(thresholds: Sequence[float]) -> tuple[float, ...]:
    values = sorted({check_threshold(t, "--thresholds") for t in thresholds})
    if not values:
        raise ConfigError("--thresholds: expected at least one threshold between 0 and 1, got none")
    return tuple(values)


def _point(rows: _Rows, threshold: float, cloud_accuracy: float, tolerance: float) -> SweepPoint:
    on = rows.conf >= threshold
    correct = np.where(on, rows.edge_ok, rows.cloud_ok)
    accuracy = float(correct.mean())
    return SweepPoint(
        threshold=threshold, edge_share=float(on.mean()), edge_rows=int(on.sum()), accuracy=accuracy,
        edge_accuracy=float(rows.edge_ok[on].mean()) if on.any() else None,
        cloud_accuracy=float(rows.cloud_ok[~on].mean()) if not on.all() else None,
        mean_latency_ms=float((rows.edge_ms + np.where(on, 0.0, rows.cloud_ms)).mean()),
        within_tolerance=accuracy >= cloud_accuracy - tolerance - _EPS,
    )


def operating_point(points: Sequence[SweepPoint]) -> SweepPoint | None:
    """The point with the highest edge share within tolerance (ties: higher accuracy, then
    higher threshold); None when no point is within it."""
    kept = [p for p in points if p.within_tolerance]
    if not kept:
        return None
    return max(kept, key=lambda p: (p.edge_share, p.accuracy, p.threshold))


def cross_validate(rows: _Rows, grid: tuple[float, ...], tolerance: float, seed: int = 0) -> CrossValidated | None:
    """2-fold: choose the threshold on one half (its own cloud accuracy as the reference),
    score it on the other, swap; pooled over both held-out halves. None with fewer than 2 rows."""
    n = len(rows.conf)
    if n < 2:
        return None
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2:])
    on = np.zeros(n, dtype=bool)
    chosen: list[float | None] = []
    for fit, score in (halves, halves[::-1]):
        part = rows.take(fit)
        reference = float(part.cloud_ok.mean())
        best = operating_point([_point(part, t, reference, tolerance) for t in grid])
        chosen.append(None if best is None else best.threshold)
        if best is not None:
            on[score] = rows.conf[score] >= best.threshold
    accuracy = float(np.where(on, rows.edge_ok, rows.cloud_ok).mean())
    cloud_accuracy = float(rows.cloud_ok.mean())
    return CrossValidated(edge_share=float(on.mean()), accuracy=accuracy, thresholds=(chosen[0], chosen[1]),
                          cloud_accuracy=cloud_accuracy,
                          within_tolerance=accuracy >= cloud_accuracy - tolerance - _EPS)


def plot_sweep(result: SweepResult, path: str | Path) -> None:
    """Accuracy (top) and mean latency (bottom) against the share answered on the edge, with
    the cloud-only accuracy, the tolerance line and the operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(result.points, key=lambda p: (p.edge_share, p.threshold))
    share = [100 * p.edge_share for p in points]
    fig, (acc_ax, lat_ax) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    acc_ax.plot(share, [100 * p.accuracy for p in points], "o-", color="tab:blue", label="cascade")
    acc_ax.axhline(100 * result.cloud_accuracy, color="tab:green", label="cloud only")
    acc_ax.axhline(100 * (result.cloud_accuracy - result.tolerance), color="tab:green", linestyle="--",
                   label=f"cloud − {100 * result.tolerance:g} pt")
    lat_ax.plot(share, [p.mean_latency_ms for p in points], "o-", color="tab:orange", label="cascade")
    labelled, below = -100.0, True
    for p in points:  # threshold labels, skipping those that would overprint their neighbour
        if 100 * p.edge_share - labelled >= 5:
            labelled, below = 100 * p.edge_share, not below
            acc_ax.annotate(f"T={p.threshold:g}", (labelled, 100 * p.accuracy), fontsize=7,
                            xytext=(3, -11 if below else 5), textcoords="offset points")
    op = result.operating
    if op is not None:
        label = f"operating point (T={op.threshold:g}: {100 * op.edge_share:.1f}% on edge)"
        acc_ax.plot([100 * op.edge_share], [100 * op.accuracy], "*", color="tab:red", markersize=16, label=label)
        lat_ax.plot([100 * op.edge_share], [op.mean_latency_ms], "*", color="tab:red", markersize=16, label=label)
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_title(f"edge↔cloud cascade ({result.rule} rule, {result.rows} rows, round trip {result.rtt_ms:g} ms)")
    lat_ax.set_ylabel("mean latency per request (ms)")
    lat_ax.set_xlabel("share answered on the edge (%)")
    for ax in (acc_ax, lat_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
