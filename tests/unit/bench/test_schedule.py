from itertools import islice, pairwise, takewhile

import numpy as np
import pytest

from inferno.bench.load import poisson_arrivals


def _until(rate: float, horizon: float, seed: int) -> np.ndarray:
    return np.array(list(takewhile(lambda t: t < horizon, poisson_arrivals(rate, seed))))


@pytest.mark.parametrize("rate", [5.0, 200.0, 3000.0])
def test_mean_rate(rate: float) -> None:
    horizon = 20_000 / rate  # about 20,000 arrivals: the count is within ±3% (over 4 sigma)
    times = _until(rate, horizon, seed=1)
    assert len(times) / horizon == pytest.approx(rate, rel=0.03)


def test_gaps_are_exponential() -> None:
    gaps = np.diff(_until(100.0, 200.0, seed=2))
    assert gaps.min() > 0
    assert gaps.mean() == pytest.approx(0.01, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV = 1


def test_deterministic_with_a_seed() -> None:
    a = list(islice(poisson_arrivals(50.0, 7), 10_000))
    b = list(islice(poisson_arrivals(50.0, 7), 10_000))
    c = list(islice(poisson_arrivals(50.0, 8), 10_000))
    assert a == b
    assert a != c
    assert all(x < y for x, y in pairwise(a))  # across the 4,096-arrival chunks too
