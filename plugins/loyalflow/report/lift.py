"""Lift of a message over its holdout: a difference of proportions with a 95% confidence interval.

The interval is Newcombe's hybrid score interval (Newcombe 1998, method 10), built from the Wilson
score interval of each rate. Unlike the Wald interval it stays inside [-1, 1] and keeps close to 95%
coverage with small holdouts and rates near 0. Relative lift uses the log risk ratio (Katz) interval;
revenue per recipient a normal (Welch) interval. docs/report.md explains every figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z = 1.959963984540054  # two-sided 95%
METHOD = "Newcombe hybrid score interval (Wilson score per rate), 95%"
MIN_EFFECT = 0.01  # the smallest lift (1 point) worth waiting for when the observed lift is about 0


def wilson(successes: float, n: float, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of ``successes / n``."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson: successes must be within 0..{n:g}, got {successes:g}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: float, n1: float, x2: float, n2: float, z: float = Z) -> tuple[float, float]:
    """Interval of ``x1/n1 - x2/n2`` (Newcombe's hybrid score method)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def relative(x1: int, n1: int, x2: int, n2: int, z: float = Z) -> tuple[float, float, float] | None:
    """Relative lift ``p1/p2 - 1`` with the log risk ratio interval; None when a rate is 0."""
    if x1 == 0 or x2 == 0:
        return None
    ratio = (x1 / n1) / (x2 / n2)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    return ratio - 1, ratio * math.exp(-z * se) - 1, ratio * math.exp(z * se) - 1


@dataclass(frozen=True)
class Mean:
    """A mean with its 95% normal interval (``n`` values, standard error ``se``)."""

    n: int
    mean: float
    se: float

    @classmethod
    def of(cls, total: float, squares: float, n: int) -> Mean:
        """From the sum and the sum of squares of ``n`` values."""
        if n <= 0:
            return cls(0, math.nan, math.nan)
        mean = total / n
        var = max(squares / n - mean * mean, 0.0) * n / (n - 1) if n > 1 else 0.0
        return cls(n, mean, math.sqrt(var / n))

    @property
    def ci(self) -> tuple[float, float]:
        """The 95% interval."""
        return self.mean - Z * self.se, self.mean + Z * self.se


def mean_difference(a: Mean, b: Mean) -> tuple[float, float, float]:
    """``a - b`` with its Welch normal interval."""
    d = a.mean - b.mean
    se = math.hypot(a.se, b.se)
    return d, d - Z * se, d + Z * se


def more_needed(x1: int, n1: int, x2: int, n2: int, z: float = Z) -> int:
    """About how many more customers (same send/holdout split) until the interval excludes 0.

    Assumes the observed rates hold (a lift of at least ``MIN_EFFECT``) and grows both arms by the
    same factor until the Newcombe interval of the grown counts no longer contains 0.
    """
    p1, p2 = x1 / n1, x2 / n2
    if abs(p1 - p2) < MIN_EFFECT:
        p1 = min(1.0, p2 + MIN_EFFECT)

    def clear(k: float) -> bool:
        low, high = newcombe(p1 * n1 * k, n1 * k, p2 * n2 * k, n2 * k, z)
        return low > 0 or high < 0

    low, high = 1.0, 2.0
    while not clear(high):
        low, high = high, high * 2
    for _ in range(40):  # bisection to well under one customer
        mid = (low + high) / 2
        low, high = (low, mid) if clear(mid) else (mid, high)
    return max(1, math.ceil((high - 1) * (n1 + n2)))


@dataclass(frozen=True)
class Lift:
    """Sent against holdout: rates, absolute lift with its interval and the verdict."""

    sent: int
    holdout: int
    conv_sent: int
    conv_holdout: int

    @property
    def measurable(self) -> bool:
        """Both arms have customers."""
        return self.sent > 0 and self.holdout > 0

    @property
    def rate_sent(self) -> float | None:
        return self.conv_sent / self.sent if self.sent else None

    @property
    def rate_holdout(self) -> float | None:
        return self.conv_holdout / self.holdout if self.holdout else None

    @property
    def lift(self) -> float | None:
        """Absolute lift: the difference of the conversion rates (0.02 = 2 points)."""
        if not self.measurable:
            return None
        return self.conv_sent / self.sent - self.conv_holdout / self.holdout

    @property
    def ci(self) -> tuple[float, float] | None:
        """95% interval of the absolute lift."""
        return (
            newcombe(self.conv_sent, self.sent, self.conv_holdout, self.holdout) if self.measurable else None
        )

    @property
    def relative(self) -> tuple[float, float, float] | None:
        """Relative lift and its interval (None without a holdout or with a zero rate)."""
        if not self.measurable:
            return None
        return relative(self.conv_sent, self.sent, self.conv_holdout, self.holdout)

    @property
    def more_needed(self) -> int | None:
        """Customers still needed for a clear answer; None once the interval excludes 0."""
        if not self.measurable or self.verdict_kind != "unclear":
            return None
        return more_needed(self.conv_sent, self.sent, self.conv_holdout, self.holdout)

    @property
    def verdict_kind(self) -> str:
        """``helps``, ``hurts``, ``unclear``, ``no_holdout`` or ``not_sent``."""
        if self.sent == 0:
            return "not_sent"
        if self.holdout == 0:
            return "no_holdout"
        low, high = self.ci or (0.0, 0.0)
        return "helps" if low > 0 else "hurts" if high < 0 else "unclear"

    @property
    def verdict(self) -> str:
        """The plain-language verdict shown next to the figures."""
        kind = self.verdict_kind
        if kind == "unclear":
            return f"no clear effect yet (needs about {self.more_needed:,} more customers)"
        return {
            "helps": "helps",
            "hurts": "hurts",
            "no_holdout": "not measured: no holdout",
            "not_sent": "not measured: nothing sent",
        }[kind]
