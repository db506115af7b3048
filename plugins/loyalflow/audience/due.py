"""Which steps of a campaign are due for a segment row on the as-of day; programs that prepare rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from loyalflow.audience.programs import PROGRAMS
from loyalflow.decide.rules import Pause, resume_shift
from loyalflow.runtime import Runtime
from loyalflow.spec import Campaign, Step


def step_days(
    campaign: Campaign, anchor_at: dt.datetime, pause: Pause | None = None
) -> list[tuple[Step, dt.date]]:
    """Each step with the day it falls on: anchor + offset + delay, the steps after a snooze resumed."""
    start = anchor_at.date() + dt.timedelta(days=campaign.anchor_offset_days)
    days = [start + dt.timedelta(days=s.delay_days) for s in campaign.steps]
    shift = dt.timedelta(days=resume_shift(days, pause))
    return [
        (s, day + shift if pause is not None and day > pause[0] else day)
        for s, day in zip(campaign.steps, days, strict=True)
    ]


def due_steps(
    campaign: Campaign,
    anchor_at: dt.datetime,
    as_of: dt.date,
    only_step: str | None = None,
    pause: Pause | None = None,
) -> list[tuple[Step, dt.date]]:
    """Steps (with their day) that fall on as_of or within the catch-up window before it.

    A segment may return a ``step`` column to make a row count for that step alone.
    """
    earliest = as_of - dt.timedelta(days=campaign.catch_up_days)
    return [
        (s, day)
        for s, day in step_days(campaign, anchor_at, pause)
        if earliest <= day <= as_of and only_step in (None, s.id)
    ]


def segment_params(rt: Runtime, campaign: Campaign) -> dict[str, Any]:
    """Bound parameters a campaign's program adds to its segment query."""
    program = PROGRAMS.get(campaign.program or "")
    return program.params(rt.settings.campaigns_dir) if program else {}


def prepare(rt: Runtime, campaign: Campaign, frame: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Apply the campaign's program (if any) to segment rows before steps are worked out."""
    program = PROGRAMS.get(campaign.program or "")
    if program is None:
        return frame
    return program.prepare(rt.state, rt.settings.campaigns_dir, campaign.id, frame, as_of)
