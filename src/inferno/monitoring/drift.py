"""Drift detection: a sliding window of live feature values compared with the reference profile.

The test per feature follows the convention of established drift tools (Evidently's
defaults), because a fixed distance threshold means different things at different sample
sizes:

- small references (≤ ``SMALL_REFERENCE`` rows): statistical tests at ``alpha`` = 0.05 —
  two-sample Kolmogorov–Smirnov for numeric features (on the kept reference values),
  chi-square for categorical ones. The score is the test statistic and the threshold its
  critical value for the current sample sizes, so "score > threshold" is "p < alpha";
- larger references: distances on the reference's quantile bins — Jensen–Shannon distance
  (natural log) with threshold 0.1 by default, or PSI with 0.2.

The verdict: drift when at least ``drift_share`` of the features drifted. Memory is bounded:
one [window, features] ring buffer per model version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from inferno.monitoring.profile import FeatureReference, ReferenceProfile, bin_index

SMALL_REFERENCE = 1000
EPSILON = 1e-4
"""Floor on bin shares, so that an empty bin gives a finite PSI."""
THRESHOLDS = {"jensenshannon": 0.1, "psi": 0.2}

Method = Literal["auto", "ks", "chi2", "jensenshannon", "psi"]


@dataclass(frozen=True)
class DriftSettings:
    window: int = 750
    """Rows in the sliding window."""
    min_rows: int = 750
    """Rows the window must hold before the first check (a part-filled window is noisier)."""
    check_every: int = 50
    """Rows between checks."""
    check_interval_s: float = 0.0
    """Seconds between checks at least (the server uses 0.5: at thousands of rows a second,
    checking every 50 rows would spend its time re-testing an almost unchanged window)."""
    drift_share: float = 0.5
    """The verdict is drift when at least this share of features drifted."""
    alpha: float = 0.05
    """Significance of the tests (small references)."""
    method: Method = "auto"
    """``auto`` picks by reference size; the others force one test or distance for every feature
    (``ks`` and ``chi2`` apply to numeric and categorical features respectively)."""
    threshold: float | None = None
    """Distance threshold (default: 0.1 for Jensen–Shannon, 0.2 for PSI)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_rows <= self.window:
            raise ValueError(f"drift window {self.window} / min_rows {self.min_rows}: expected 1 <= min_rows <= window")
        if self.check_every < 1 or not 0 < self.drift_share <= 1 or not 0 < self.alpha < 1:
            raise ValueError(f"drift settings out of range: {self}")


@dataclass(frozen=True)
class FeatureScore:
    name: str
    kind: str
    method: str
    score: float | None
    threshold: float | None
    drifted: bool
    p_value: float | None = None
    psi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {"name": self.name, "kind": self.kind, "method": self.method, "score": self.score,
               "threshold": self.threshold, "drifted": self.drifted, "p_value": self.p_value}
        if self.psi is not None:
            doc["psi"] = self.psi
        return doc


@dataclass(frozen=True)
class Verdict:
    drifted: bool
    share: float
    features: tuple[FeatureScore, ...]


class DriftDetector:
    """The window of one model version and the tests against its reference (not thread-safe)."""

    def __init__(self, profile: ReferenceProfile, settings: DriftSettings | None = None) -> None:
        self.profile = profile
        self.settings = settings or DriftSettings()
        self.features = profile.features
        self._window = np.zeros((self.settings.window, len(self.features)))
        self._next = 0
        self.filled = 0
        self.observed = 0
        self._since_check = 0
        self._checked = -float("inf")
        self._reference = [np.sort(np.array(f.values)) for f in self.features]
        self.methods = [self._method(f) for f in self.features]

    def _method(self, feature: FeatureReference) -> str:
        chosen = self.settings.method
        small = feature.count <= SMALL_REFERENCE
        if chosen == "auto" or (chosen == "ks" and feature.kind == "categorical") or (
                chosen == "chi2" and feature.kind == "numeric"):
            if small:
                return "chi2" if feature.kind == "categorical" else "ks"
            return "jensenshannon"
        return chosen

    def update(self, rows: np.ndarray) -> bool:
        """Add [rows, features] values; True when a check is due."""
        self.observed += len(rows)
        self._since_check += len(rows)
        rows = rows[-self.settings.window:]
        n = len(rows)
        end = self._next + n
        if end <= len(self._window):
            self._window[self._next:end] = rows
        else:
            split = len(self._window) - self._next
            self._window[self._next:] = rows[:split]
            self._window[:n - split] = rows[split:]
        self._next = end % len(self._window)
        self.filled = min(self.filled + n, len(self._window))
        return (self.filled >= self.settings.min_rows and self._since_check >= self.settings.check_every
                and time.monotonic() - self._checked >= self.settings.check_interval_s)

    def evaluate(self) -> Verdict:
        """Test every feature on the current window."""
        self._since_check = 0
        self._checked = time.monotonic()
        window = self._window[:self.filled]
        scores = tuple(
            self._score(f, method, ref, window[:, j])
            for j, (f, method, ref) in enumerate(zip(self.features, self.methods, self._reference, strict=True))
        )
        share = sum(s.drifted for s in scores) / max(len(scores), 1)
        return Verdict(share >= self.settings.drift_share and bool(scores), share, scores)

    def _score(self, feature: FeatureReference, method: str, reference: np.ndarray,
               values: np.ndarray) -> FeatureScore:
        clean = values[np.isfinite(values)]
        if len(clean) == 0:
            return FeatureScore(feature.name, feature.kind, method, None, None, False)
        alpha = self.settings.alpha
        if method == "ks":
            d = float(stats.ks_2samp(reference, clean).statistic)
            # threshold and p-value from the same (asymptotic Kolmogorov) distribution, so that
            # "score > threshold" and "p < alpha" always agree
            scale = np.sqrt(len(reference) * len(clean) / (len(reference) + len(clean)))
            critical = float(stats.kstwobign.isf(alpha) / scale)
            p = float(stats.kstwobign.sf(d * scale))
            return FeatureScore(feature.name, feature.kind, method, d, critical, d > critical, p)
        if method == "chi2":
            chi2, p, critical = _chi_square(feature, clean, alpha)
            return FeatureScore(feature.name, feature.kind, method, chi2, critical, chi2 > critical, p)
        expected, observed = _shares(feature, clean)
        psi = float(np.sum((observed - expected) * np.log(observed / expected)))
        threshold = self.settings.threshold or THRESHOLDS[method]
        score = psi if method == "psi" else float(jensenshannon(expected, observed))
        return FeatureScore(feature.name, feature.kind, method, score, threshold, score > threshold, psi=psi)


def _shares(feature: FeatureReference, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference and window shares over the same bins (categories: the union of both)."""
    if feature.kind == "categorical":
        window_counts = dict(zip(*np.unique(values.astype(int), return_counts=True), strict=True))
        categories = sorted(set(feature.categories) | set(window_counts))
        reference = dict(zip(feature.categories, feature.counts, strict=True))
        expected = np.array([reference.get(c, 0) for c in categories], dtype=np.float64)
        observed = np.array([window_counts.get(c, 0) for c in categories], dtype=np.float64)
    else:
        expected = np.array(feature.proportions)
        observed = np.bincount(bin_index(values, feature.edges), minlength=len(expected)).astype(np.float64)
    expected = np.maximum(expected / expected.sum(), EPSILON)
    observed = np.maximum(observed / observed.sum(), EPSILON)
    return expected / expected.sum(), observed / observed.sum()


def _chi_square(feature: FeatureReference, values: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Chi-square test of homogeneity (reference counts vs window counts)."""
    window_counts = dict(zip(*np.unique(values.astype(int), return_counts=True), strict=True))
    reference = dict(zip(feature.categories, feature.counts, strict=True))
    categories = sorted(set(reference) | set(window_counts))
    table = np.array([[reference.get(c, 0) for c in categories],
                      [window_counts.get(c, 0) for c in categories]], dtype=np.float64)
    if table.shape[1] < 2:  # one category on both sides: nothing can differ
        return 0.0, 1.0, float(stats.chi2.isf(alpha, 1))
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    return float(chi2), float(p), float(stats.chi2.isf(alpha, dof))
