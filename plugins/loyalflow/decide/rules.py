"""Response rules: what customers answered, joined to the segment's rows on loyalflow's side.

Answers (positive, negative, "contact me later") live in loyalflow's state, so segment SQL never reads
them; a campaign declares in its YAML how they count (``responses:``), and :func:`apply` is the one
place that applies it, leaving a reason on every row it changes:

- ``qualify_on_positive``: a row whose ``qualifies`` column is false stays only for a positive answerer;
- ``exit_on_negative``: ``ever`` (any "no thanks" before the as-of day) or ``since_anchor`` (one given
  since the row's anchor day) sets ``exit_reason``;
- ``snooze``: the latest "contact me later" since the anchor pauses the sequence: the next step after the
  answer's day waits for the day the snooze ends and the steps after it keep their spacing (the
  sequence resumes). The step of the answer's day itself (usually the message answered) stays.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from loyalflow.spec import Campaign
from loyalflow.state import responses
from loyalflow.warehouse import ID_BATCH, having_rows


@dataclass(frozen=True)
class Answer:
    """One stored answer, as the rules need it."""

    answer: str
    on: dt.date
    snooze_until: dt.date | None


Pause = tuple[dt.date, dt.date]  # (the day of the answer, the first day after the snooze)


def load_answers(state: sa.Engine, customer_ids: list[str], as_of: dt.date) -> dict[str, list[Answer]]:
    """Answers received up to the end of ``as_of``, oldest first, per customer."""
    out: dict[str, list[Answer]] = defaultdict(list)
    end = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time())
    with state.connect() as conn:
        for start in range(0, len(customer_ids), ID_BATCH):
            batch = having_rows(conn, responses, "customer_id", customer_ids[start : start + ID_BATCH])
            if not batch:
                continue
            rows = conn.execute(
                sa.select(
                    responses.c.customer_id,
                    responses.c.answer,
                    responses.c.received_at,
                    responses.c.snooze_until,
                )
                .where(
                    responses.c.customer_id.in_(batch),
                    responses.c.received_at < end,
                )
                .order_by(responses.c.received_at, responses.c.id)
            )
            for cid, answer, at, until in rows:
                out[str(cid)].append(Answer(answer, at.date(), until))
    return out


def _falsy(value: Any) -> bool:
    return value is None or value is False or value == 0 or str(value).lower() in ("false", "f", "0", "no")


def apply(campaign: Campaign, rows: list[dict[str, Any]], answers: dict[str, list[Answer]]) -> list[dict]:
    """The rows that stay, with ``exit_reason`` and ``_pause`` set where the campaign's rules say so."""
    rules = campaign.responses
    out = []
    for row in rows:
        mine = answers.get(str(row["customer_id"]), [])
        if rules.qualify_on_positive and "qualifies" in row and _falsy(row["qualifies"]):
            if not any(a.answer == "positive" for a in mine):
                continue
        anchor_day = row["anchor_at"].date()
        if rules.exit_on_negative != "never" and not row.get("exit_reason"):
            since = anchor_day if rules.exit_on_negative == "since_anchor" else dt.date.min
            negative = [a.on for a in mine if a.answer == "negative" and a.on >= since]
            if negative:
                row = {**row, "exit_reason": f"negative response on {negative[-1]}"}
        if rules.snooze:
            later = [a for a in mine if a.answer == "later" and a.snooze_until and a.on >= anchor_day]
            if later:
                row = {**row, "_pause": (later[-1].on, later[-1].snooze_until)}
        out.append(row)
    return out


def resume_shift(days: list[dt.date], pause: Pause | None) -> int:
    """How many days the steps from the pause on move: the next step waits for the snooze to end."""
    if pause is None:
        return 0
    upcoming = [d for d in days if d > pause[0]]
    return max(0, (pause[1] - min(upcoming)).days) if upcoming else 0
