"""DriftDetector on synthetic features: each test against scipy or a hand-computed value."""

from __future__ import annotations

import math
from collections import Counter, deque

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from inferno.monitoring.drift import SMALL_REFERENCE, DriftDetector, DriftSettings, Verdict
from inferno.monitoring.profile import FeatureReference, ReferenceProfile, Summarizer, build_profile

ALPHA = 0.05


def profile_of(*features: FeatureReference) -> ReferenceProfile:
    samples = max((f.count for f in features), default=0)
    return ReferenceProfile("regression", "tensor", "y", samples, "test", features)


def judge(profile: ReferenceProfile, window: np.ndarray, **settings: object) -> Verdict:
    """The verdict on exactly ``window`` ([rows, features]) as the detector's window."""
    rows = len(window)
    detector = DriftDetector(
        profile, DriftSettings(window=rows, min_rows=rows, check_every=1, **settings)
    )
    assert detector.update(window)
    return detector.evaluate()


def column(values: np.ndarray | list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[:, None]


def repeat(counts: dict[int, int]) -> np.ndarray:
    return np.repeat(list(counts), list(counts.values())).astype(np.float64)


def window_rows(detector: DriftDetector) -> list[tuple[float, ...]]:
    # the ring buffer has no public view: its content is exactly what evaluate() tests
    return sorted(tuple(row) for row in detector._window[: detector.filled].tolist())


# Kolmogorov–Smirnov (small references)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shift", [0.0, 0.4, 1.0])
def test_ks_decision_agrees_with_scipy(seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    reference, window = rng.normal(size=400), rng.normal(shift, 1.0, size=300)
    oracle = stats.ks_2samp(reference, window)
    assert not ALPHA / 2 < oracle.pvalue < ALPHA * 2, "case too close to the boundary to judge"

    (score,) = judge(profile_of(FeatureReference.numeric("x", reference)), column(window)).features

    assert score.method == "ks"
    assert score.score == pytest.approx(oracle.statistic, abs=1e-12)
    assert (score.score > score.threshold) == (oracle.pvalue < ALPHA)
    assert score.drifted == (oracle.pvalue < ALPHA)
    assert score.p_value == pytest.approx(oracle.pvalue, rel=0.2, abs=1e-6)


@pytest.mark.parametrize(("alpha", "c_alpha"), [(0.05, 1.358), (0.01, 1.628)])
def test_ks_threshold_is_the_critical_value_for_both_sample_sizes(
    alpha: float, c_alpha: float
) -> None:
    rng = np.random.default_rng(0)
    n, m = 400, 250
    feature = FeatureReference.numeric("x", rng.normal(size=n))

    (score,) = judge(profile_of(feature), column(rng.normal(size=m)), alpha=alpha).features

    # the tabulated two-sample critical value c(alpha) * sqrt((n + m) / (n m))
    assert score.threshold == pytest.approx(c_alpha * math.sqrt((n + m) / (n * m)), rel=1e-3)


def test_ks_reported_p_value_and_verdict_agree_near_the_boundary() -> None:
    reference = np.arange(1000) / 1000.0
    window = np.arange(750) / 750.0 + 0.0645  # D = 0.06533: between the two critical values
    assert stats.ks_2samp(reference, window).pvalue < ALPHA  # scipy's exact answer

    (score,) = judge(profile_of(FeatureReference.numeric("x", reference)), column(window)).features

    assert score.drifted == (score.p_value < ALPHA)


# chi-square (small references, categorical)


def test_chi_square_matches_a_hand_computed_table_with_a_category_unseen_in_the_reference() -> None:
    reference = {0: 50, 1: 30, 2: 20}
    window = {0: 20, 1: 10, 2: 10, 3: 10}  # category 3 never occurred in the reference
    table = np.array([[50, 30, 20, 0], [20, 10, 10, 10]], dtype=np.float64)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = (2 - 1) * (4 - 1)

    (score,) = judge(
        profile_of(FeatureReference.categorical("class", repeat(reference))), column(repeat(window))
    ).features

    assert (score.kind, score.method) == ("categorical", "chi2")
    assert score.score == pytest.approx(statistic, rel=1e-9)
    assert score.threshold == pytest.approx(7.8147, rel=1e-4)  # chi-square table, 3 dof, 0.05
    assert score.p_value == pytest.approx(stats.chi2.sf(statistic, dof), rel=1e-9)
    assert score.drifted == (statistic > 7.8147)
    assert score.drifted


def test_chi_square_on_window_with_reference_proportions_is_zero() -> None:
    feature = FeatureReference.categorical("class", repeat({0: 50, 1: 30, 2: 20}))

    (score,) = judge(profile_of(feature), column(repeat({0: 25, 1: 15, 2: 10}))).features

    assert score.score == pytest.approx(0.0, abs=1e-12)
    assert score.p_value == pytest.approx(1.0)
    assert not score.drifted


def test_chi_square_with_a_single_category_on_both_sides_does_not_drift() -> None:
    feature = FeatureReference.categorical("confidence", repeat({5: 300}))  # a confident classifier

    (score,) = judge(profile_of(feature), column(repeat({5: 100}))).features

    assert score.score == 0.0
    assert not score.drifted


# distances on bins (large references)


def test_jensen_shannon_equals_scipy_on_the_binned_shares() -> None:
    rng = np.random.default_rng(3)
    feature = FeatureReference.numeric("x", rng.normal(size=3000))
    window = rng.normal(0.3, 1.0, size=500)
    edges = np.array(feature.edges)
    observed = np.bincount(np.digitize(window, edges, right=True), minlength=len(edges) + 1) / len(
        window
    )
    assert len(edges) == 9 and observed.min() > 0  # no floored empty bin in this case

    (score,) = judge(profile_of(feature), column(window)).features

    assert score.method == "jensenshannon"
    assert score.score == pytest.approx(
        jensenshannon(np.array(feature.proportions), observed), rel=1e-9
    )
    assert score.threshold == 0.1
    assert score.drifted == (score.score > 0.1)


def test_jensen_shannon_on_categories_uses_the_union_of_both() -> None:
    feature = FeatureReference.categorical("class", repeat({0: 1000, 1: 600, 2: 400}))
    window = repeat({0: 20, 1: 50, 2: 30})

    (score,) = judge(profile_of(feature), column(window)).features

    assert score.method == "jensenshannon"
    assert score.score == pytest.approx(jensenshannon([0.5, 0.3, 0.2], [0.2, 0.5, 0.3]), rel=1e-9)


def test_distance_threshold_setting_overrides_the_default() -> None:
    rng = np.random.default_rng(4)
    feature = FeatureReference.numeric("x", rng.normal(size=3000))
    window = column(rng.normal(0.3, 1.0, size=500))

    (default,) = judge(profile_of(feature), window).features
    (strict,) = judge(profile_of(feature), window, threshold=default.score / 2).features

    assert strict.threshold == pytest.approx(default.score / 2)
    assert strict.drifted


@pytest.mark.parametrize(
    ("below", "psi"),
    [
        (75, 0.25 * math.log(1.5) + 0.25 * math.log(2.0)),  # 0.2747: drifted at 0.2
        (55, 0.05 * math.log(1.1) + 0.05 * math.log(0.5 / 0.45)),  # 0.0100: not drifted
    ],
)
def test_psi_on_a_hand_computed_case(below: int, psi: float) -> None:
    feature = FeatureReference("x", "numeric", 2000, edges=(0.0,), proportions=(0.5, 0.5))
    window = column([-1.0] * below + [1.0] * (100 - below))

    (score,) = judge(profile_of(feature), window, method="psi").features

    assert score.method == "psi"
    assert score.score == pytest.approx(psi, rel=1e-9)
    assert score.psi == pytest.approx(psi, rel=1e-9)
    assert score.threshold == 0.2
    assert score.drifted == (psi > 0.2)
    assert score.to_dict()["psi"] == score.psi


# choice of method


@pytest.mark.parametrize(
    ("rows", "numeric", "categorical"),
    [
        (SMALL_REFERENCE, "ks", "chi2"),
        (SMALL_REFERENCE + 1, "jensenshannon", "jensenshannon"),
    ],
)
def test_auto_method_picks_tests_for_small_references_and_distances_above(
    rows: int, numeric: str, categorical: str
) -> None:
    rng = np.random.default_rng(5)
    profile = profile_of(
        FeatureReference.numeric("x", rng.normal(size=rows)),
        FeatureReference.categorical("class", rng.integers(0, 3, size=rows)),
    )

    assert DriftDetector(profile).methods == [numeric, categorical]


@pytest.mark.parametrize(
    ("method", "rows", "numeric", "categorical"),
    [
        ("ks", 500, "ks", "chi2"),
        ("ks", 2000, "ks", "jensenshannon"),
        ("chi2", 500, "ks", "chi2"),
        ("chi2", 2000, "jensenshannon", "chi2"),
        ("jensenshannon", 500, "jensenshannon", "jensenshannon"),
        ("psi", 500, "psi", "psi"),
        ("psi", 2000, "psi", "psi"),
    ],
)
def test_forced_methods(method: str, rows: int, numeric: str, categorical: str) -> None:
    rng = np.random.default_rng(6)
    profile = profile_of(
        FeatureReference.numeric("x", rng.normal(size=rows)),
        FeatureReference.categorical("class", rng.integers(0, 3, size=rows)),
    )
    window = np.column_stack([rng.normal(size=200), rng.integers(0, 3, size=200)])

    verdict = judge(profile, window, method=method)

    assert [s.method for s in verdict.features] == [numeric, categorical]
    assert all(s.score is not None and s.threshold is not None for s in verdict.features)


# the window


def test_ring_buffer_keeps_exactly_the_last_window_rows() -> None:
    size = 7
    profile = profile_of(
        FeatureReference.numeric("a", np.arange(10.0)),
        FeatureReference.numeric("b", np.arange(10.0)),
    )
    detector = DriftDetector(profile, DriftSettings(window=size, min_rows=1, check_every=1))
    expected: deque[tuple[float, float]] = deque(maxlen=size)
    counter = 0
    for n in [3, 5, 1, 7, 0, 12, 2, 6, 4, 20, 7]:  # wraps, lands on the end, overflows, is empty
        rows = np.array(
            [(counter + i, -(counter + i)) for i in range(n)], dtype=np.float64
        ).reshape(n, 2)
        counter += n
        detector.update(rows)
        expected.extend(map(tuple, rows.tolist()))

        assert detector.filled == len(expected)
        assert window_rows(detector) == sorted(expected)


def test_observed_counts_every_row_of_an_update_larger_than_the_window() -> None:
    detector = DriftDetector(
        profile_of(FeatureReference.numeric("x", np.arange(10.0))),
        DriftSettings(window=10, min_rows=10, check_every=1),
    )

    detector.update(np.zeros((25, 1)))

    assert detector.filled == 10
    assert detector.observed == 25


def test_update_asks_for_a_check_once_min_rows_are_in_and_check_every_rows_passed() -> None:
    detector = DriftDetector(
        profile_of(FeatureReference.numeric("x", np.arange(10.0))),
        DriftSettings(window=10, min_rows=6, check_every=4),
    )

    def add(rows: int) -> bool:
        return detector.update(np.zeros((rows, 1)))

    assert [add(3), add(2)] == [False, False]  # 5 rows: check_every passed, min_rows not
    assert add(1)  # 6 rows
    assert add(1)  # still due: nothing was checked
    detector.evaluate()
    assert [add(1), add(2)] == [False, False]
    assert add(1)  # 4 rows since the check
    detector.evaluate()
    assert add(10)
    assert detector.observed == 21


def test_nan_and_inf_in_the_window_are_ignored() -> None:
    rng = np.random.default_rng(7)
    profile = profile_of(
        FeatureReference.numeric("small", rng.normal(size=400)),
        FeatureReference.numeric("large", rng.normal(size=3000)),
        FeatureReference.categorical("class", rng.integers(0, 3, size=400)),
    )
    clean = np.column_stack(
        [rng.normal(0.2, 1, 300), rng.normal(0.2, 1, 300), rng.integers(0, 3, size=300)]
    )
    junk = np.array(
        [[np.nan, np.inf, np.nan], [np.inf, np.nan, -np.inf], [-np.inf, -np.inf, np.nan]] * 10
    )
    padded = np.vstack([clean[:100], junk, clean[100:]])  # the same finite values, and junk

    expected = judge(profile, clean).features
    found = judge(profile, padded).features

    assert [s.method for s in found] == ["ks", "jensenshannon", "chi2"]
    for e, f in zip(expected, found, strict=True):
        assert f.score == pytest.approx(e.score, rel=1e-12)


def test_a_window_of_only_nan_gives_no_score_and_counts_as_not_drifted() -> None:
    rng = np.random.default_rng(8)
    profile = profile_of(
        FeatureReference.numeric("a", rng.normal(size=400)),
        FeatureReference.numeric("b", rng.normal(size=400)),
    )
    window = np.column_stack([np.full(200, np.nan), rng.normal(3.0, 1.0, size=200)])

    verdict = judge(profile, window)

    assert (
        verdict.features[0].score,
        verdict.features[0].threshold,
        verdict.features[0].drifted,
    ) == (None, None, False)
    assert verdict.features[1].drifted
    assert verdict.share == 0.5


# the verdict


@pytest.mark.parametrize(
    ("drift_share", "drifted"), [(0.25, True), (0.5, True), (0.51, False), (1.0, False)]
)
def test_verdict_is_drift_when_the_share_reaches_drift_share(
    drift_share: float, drifted: bool
) -> None:
    rng = np.random.default_rng(9)
    profile = profile_of(*(FeatureReference.numeric(name, rng.normal(size=500)) for name in "abcd"))
    window = rng.normal(size=(300, 4)) + np.array([2.0, 2.0, 0.0, 0.0])

    verdict = judge(profile, window, drift_share=drift_share)

    assert [s.drifted for s in verdict.features] == [True, True, False, False]
    assert verdict.share == 0.5
    assert verdict.drifted is drifted


@pytest.mark.parametrize(("rows", "method"), [(500, "ks"), (5000, "jensenshannon")])
def test_same_distribution_does_not_drift_and_a_shifted_one_does(rows: int, method: str) -> None:
    rng = np.random.default_rng(10)

    def draw(n: int, shift: float = 0.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
        x = rng.normal(shift, 1.0, size=(n, 3))
        return {"x": x}, x.sum(axis=1, keepdims=True)

    profile = build_profile("regression", *draw(rows), "y")
    summarize = Summarizer(profile)
    settings = DriftSettings(window=750, min_rows=750, check_every=750)

    same = DriftDetector(profile, settings)
    assert same.update(summarize(*draw(750)))
    calm = same.evaluate()
    shifted = DriftDetector(profile, settings)
    assert shifted.update(summarize(*draw(750, shift=0.5)))
    alarm = shifted.evaluate()

    assert {s.method for s in calm.features} == {method}
    assert not calm.drifted and calm.share < 0.5
    assert alarm.drifted and alarm.share == 1.0


def test_counts_of_a_categorical_reference_are_kept_as_given() -> None:
    values = repeat({2: 7, 0: 3, 5: 1})

    feature = FeatureReference.categorical("class", values)

    assert dict(zip(feature.categories, feature.counts, strict=True)) == Counter(
        values.astype(int).tolist()
    )
    assert feature.categories == (0, 2, 5)
    assert feature.count == 11
