"""The cap rule itself: one more message on a day, against the day cap and every 7-day window."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from loyalflow.decide.caps import _over

DAY = dt.date(2026, 11, 20)


def _counted(days: list[dt.date], day: dt.date, per_day: int, per_week: int) -> str | None:
    """The rule written out with every count taken (no shortcut)."""
    if days.count(day) + 1 > per_day:
        return f"cap {per_day}/day reached on {day}"
    for first in (day - dt.timedelta(days=n) for n in range(6, -1, -1)):
        last = first + dt.timedelta(days=6)
        if sum(first <= d <= last for d in days) + 1 > per_week:
            return f"cap {per_week}/7 days reached in {first}..{last}"
    return None


@given(
    st.lists(st.integers(-8, 8).map(lambda n: DAY + dt.timedelta(days=n)), max_size=6),
    st.integers(1, 4),
    st.integers(1, 6),
)
def test_over_matches_the_rule_with_every_count_taken(
    days: list[dt.date], per_day: int, per_week: int
) -> None:
    assert _over(days, DAY, per_day, per_week) == _counted(days, DAY, per_day, per_week)


def test_over_names_the_cap_that_binds() -> None:
    assert _over([], DAY, 1, 2) is None
    assert _over([DAY], DAY, 1, 2) == f"cap 1/day reached on {DAY}"
    before = DAY - dt.timedelta(days=3)
    assert (
        _over([before, before], DAY, 2, 2) == f"cap 2/7 days reached in {DAY - dt.timedelta(days=6)}..{DAY}"
    )
