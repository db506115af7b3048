"""Step days: anchor + delay, and a "contact me later" snooze that resumes the sequence at its next step."""

from __future__ import annotations

import datetime as dt

from loyalflow.audience.due import step_days
from loyalflow.spec import load_campaign
from tests.conftest import ROOT

ENTRY = dt.datetime(2026, 9, 1)


def days(pause: tuple[dt.date, dt.date] | None = None) -> dict[str, dt.date]:
    campaign = load_campaign(ROOT / "campaigns" / "dormant_reactivation.yaml")
    return {step.id: day for step, day in step_days(campaign, ENTRY, pause)}


def test_steps_count_from_the_entry_day() -> None:
    start = ENTRY.date()
    assert days() == {
        "reminder": start,
        "offer": start + dt.timedelta(days=7),
        "why_stop": start + dt.timedelta(days=14),
        "last_call": start + dt.timedelta(days=30),
    }


def test_later_on_why_stop_sends_the_last_call_when_the_snooze_ends() -> None:
    answered, until = ENTRY.date() + dt.timedelta(days=14), ENTRY.date() + dt.timedelta(days=44)
    got = days((answered, until))
    assert got["why_stop"] == answered  # the message that was answered stays where it was
    assert got["last_call"] == until  # the next step waits for the snooze, then goes at once


def test_a_short_snooze_moves_nothing() -> None:
    answered = ENTRY.date() + dt.timedelta(days=2)
    assert days((answered, answered + dt.timedelta(days=3))) == days()  # the offer (day 7) is after it


def test_later_steps_keep_their_spacing() -> None:
    answered, until = ENTRY.date() + dt.timedelta(days=1), ENTRY.date() + dt.timedelta(days=20)
    got = days((answered, until))
    assert got["offer"] == until and got["why_stop"] == until + dt.timedelta(days=7)
    assert got["last_call"] == until + dt.timedelta(days=23)
