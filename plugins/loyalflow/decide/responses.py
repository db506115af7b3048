"""Customer responses (positive, negative, "contact me later"), from links, SMS replies or imports."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from loyalflow.state import responses

ANSWERS = ("positive", "negative", "later")


def record(
    engine: sa.Engine,
    customer_id: str,
    answer: str,
    *,
    at: dt.datetime,
    source: str,
    campaign: str | None = None,
    channel: str | None = None,
    snooze_days: int = 30,
) -> bool:
    """Store one answer; "later" snoozes the customer for ``snooze_days``.

    The same answer from the same customer about the same campaign on the same day counts once
    (repeated clicks, link scanners). Returns whether a row was added.
    """
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {', '.join(ANSWERS)}, got {answer!r}")
    day = dt.datetime.combine(at.date(), dt.time())
    same = [
        responses.c.customer_id == customer_id,
        responses.c.answer == answer,
        responses.c.received_at >= day,
        responses.c.received_at < day + dt.timedelta(days=1),
        responses.c.campaign.is_(None) if campaign is None else responses.c.campaign == campaign,
    ]
    with engine.begin() as conn:
        if conn.execute(sa.select(responses.c.id).where(*same)).first() is not None:
            return False
        conn.execute(
            responses.insert().values(
                customer_id=customer_id,
                campaign=campaign,
                answer=answer,
                channel=channel,
                source=source,
                received_at=at,
                snooze_until=at.date() + dt.timedelta(days=snooze_days) if answer == "later" else None,
            )
        )
    return True
