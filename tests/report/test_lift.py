"""The interval method of the report: Wilson, Newcombe's hybrid score interval, verdicts, sample sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loyalflow.report.lift import Lift, Mean, mean_difference, more_needed, newcombe, relative, wilson


def test_newcombe_matches_the_published_examples() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10
    assert newcombe(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert newcombe(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=1e-4)
    assert newcombe(6, 7, 2, 7) == pytest.approx((0.0582, 0.8062), abs=1e-4)
    assert newcombe(5, 56, 0, 29) == pytest.approx((-0.0381, 0.1926), abs=1e-4)


def test_wilson_stays_inside_zero_and_one() -> None:
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(ValueError, match="n must be positive"):
        wilson(0, 0)
    with pytest.raises(ValueError, match="within 0..5"):
        wilson(6, 5)


@pytest.mark.parametrize(
    ("n1", "p1", "n2", "p2"), [(900, 0.06, 100, 0.01), (200, 0.3, 25, 0.2), (5000, 0.12, 500, 0.1)]
)
def test_the_interval_covers_the_true_difference_95_percent_of_the_time(
    n1: int, p1: float, n2: int, p2: float
) -> None:
    rng = np.random.default_rng(7)
    trials = 4000
    x1, x2 = rng.binomial(n1, p1, trials), rng.binomial(n2, p2, trials)
    covered = sum(
        lo <= p1 - p2 <= hi for lo, hi in (newcombe(a, n1, b, n2) for a, b in zip(x1, x2, strict=True))
    )
    assert 0.93 <= covered / trials <= 0.975  # close to 95% (the method is slightly conservative)


def test_verdicts_name_the_direction_or_what_is_missing() -> None:
    assert Lift(1000, 1000, 150, 100).verdict == "helps"
    assert Lift(1000, 1000, 100, 150).verdict == "hurts"
    assert Lift(500, 0, 50, 0).verdict == "not measured: no holdout"
    assert Lift(0, 10, 0, 1).verdict == "not measured: nothing sent"
    unclear = Lift(900, 100, 60, 5)
    assert unclear.verdict_kind == "unclear"
    assert unclear.verdict == f"no clear effect yet (needs about {unclear.more_needed:,} more customers)"
    assert Lift(1000, 1000, 150, 100).more_needed is None


def test_more_needed_is_enough_and_not_much_more() -> None:
    x1, n1, x2, n2 = 60, 900, 5, 100
    more = more_needed(x1, n1, x2, n2)
    k = (n1 + n2 + more) / (n1 + n2)
    low, _ = newcombe(x1 * k, n1 * k, x2 * k, n2 * k)
    assert low > 0  # with that many more customers at the same rates, the interval excludes 0
    k = (n1 + n2 + 0.9 * more) / (n1 + n2)
    assert newcombe(x1 * k, n1 * k, x2 * k, n2 * k)[0] <= 0  # and 10% fewer would not do
    # no lift at all: the answer is for the smallest lift worth waiting for (1 point)
    assert more_needed(100, 1000, 10, 100) > more_needed(150, 1000, 10, 100)


def test_relative_lift_and_revenue_intervals() -> None:
    rel = relative(150, 1000, 100, 1000)
    assert rel is not None and rel[0] == pytest.approx(0.5) and rel[1] < 0.5 < rel[2]
    assert relative(0, 100, 5, 100) is None
    values = [0.0, 0.0, 100.0, 300.0]
    mean = Mean.of(sum(values), sum(v * v for v in values), len(values))
    assert mean.mean == 100.0 and mean.se == pytest.approx(np.std(values, ddof=1) / 2)
    d, lo, hi = mean_difference(mean, Mean(10, 0.0, 0.0))
    assert d == 100.0 and lo == pytest.approx(100 - 1.96 * mean.se, abs=0.01) and hi > d
    assert math.isnan(Mean.of(0.0, 0.0, 0).mean)
