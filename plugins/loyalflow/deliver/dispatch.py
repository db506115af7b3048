"""Scheduled messages: kept in the ledger when a provider cannot schedule, dispatched when due.

Quiet hours and send windows give a message a future ``send_at``. The outbox records it and SendGrid
schedules up to 72 hours ahead; SES, SMTP and SNS cannot, so such a message is claimed, stored with
status ``scheduled`` and sent by :func:`dispatch` (the ``dispatch_scheduled`` DAG, every 15 minutes).
Consent and suppressions are checked again at dispatch: a customer who opted out meanwhile gets nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

import sqlalchemy as sa

from loyalflow.decide import consent
from loyalflow.deliver import ledger as ledger_ops
from loyalflow.deliver.channels.base import Message
from loyalflow.runtime import Runtime
from loyalflow.state import ledger, suppressions

log = logging.getLogger(__name__)
SLACK = dt.timedelta(minutes=5)  # a send_at this close counts as now


def is_due(msg: Message, horizon: dt.timedelta, now: dt.datetime) -> bool:
    """Whether the provider can take ``msg`` now (its send_at is near, or within the provider's horizon)."""
    return msg.send_at <= now + max(horizon, SLACK)


def to_json(msg: Message) -> str:
    """The message as stored in the ledger while scheduled."""
    return json.dumps({**dataclasses.asdict(msg), "send_at": msg.send_at.isoformat()})


def from_json(payload: str) -> Message:
    """The inverse of :func:`to_json`."""
    data = json.loads(payload)
    return Message(**{**data, "send_at": dt.datetime.fromisoformat(data["send_at"])})


def keep(engine: sa.Engine, messages: list[Message]) -> None:
    """Store claimed messages as ``scheduled`` until their send_at."""
    stmt = (
        sa.update(ledger)
        .where(ledger.c.idempotency_key == sa.bindparam("k"), ledger.c.status == "claimed")
        .values(status="scheduled", payload=sa.bindparam("p"), updated_at=sa.bindparam("t"))
    )
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if messages:
        with engine.begin() as conn:
            conn.execute(stmt, [{"k": m.idempotency_key, "p": to_json(m), "t": now} for m in messages])


def _take(conn: sa.Connection, key: str) -> bool:
    """Atomically move one scheduled row to claimed (a concurrent dispatcher gets nothing)."""
    result = conn.execute(
        sa.update(ledger)
        .where(ledger.c.idempotency_key == key, ledger.c.status == "scheduled")
        .values(status="claimed", claimed_at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
    )
    return result.rowcount == 1


def _still_allowed(rt: Runtime, msg: Message, category: str, now: dt.datetime) -> str | None:
    """Why the message may no longer go (opted out or suppressed since it was scheduled), or None."""
    with rt.state.connect() as conn:
        blocked = conn.execute(
            sa.select(suppressions.c.reason).where(
                suppressions.c.address == msg.to,
                suppressions.c.channel == msg.channel,
                suppressions.c.scope.in_(("all", category, msg.campaign)),
            )
        ).first()
    if blocked:
        return f"suppressed before dispatch ({blocked[0]})"
    book = consent.effective(rt.warehouse, rt.state, [msg.customer_id])
    latest = book.latest(msg.customer_id, msg.channel, ("all", category, msg.campaign), at=now)
    return None if latest and latest.opted_in else "consent withdrawn before dispatch"


def dispatch(rt: Runtime, now: dt.datetime | None = None, limit: int = 10_000) -> dict[str, int]:
    """Send every scheduled message whose send_at has come; returns counts by outcome."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with rt.state.connect() as conn:
        rows = conn.execute(
            sa.select(ledger.c.idempotency_key, ledger.c.payload, ledger.c.category, ledger.c.channel)
            .where(ledger.c.status == "scheduled", ledger.c.send_at <= now + SLACK)
            .order_by(ledger.c.send_at)
            .limit(limit)
        ).all()
    for kind in sorted({row.channel for row in rows}):  # a set-up error stops before any row is taken
        rt.channel(kind)
    counts: dict[str, int] = {}
    by_kind: dict[str, list[Message]] = {}
    for key, payload, category, _ in rows:
        with rt.state.begin() as conn:
            if not _take(conn, key):
                continue
        msg = from_json(payload)
        reason = _still_allowed(rt, msg, category, now)
        if reason:
            ledger_ops.record(rt.state, [(key, "failed", None, reason)])
            counts["cancelled"] = counts.get("cancelled", 0) + 1
            log.info("dispatch cancelled customer %s key %s: %s", msg.customer_id, key, reason)
            continue
        by_kind.setdefault(msg.channel, []).append(msg)
    for kind, messages in by_kind.items():
        results = rt.channel(kind).send(messages)
        ledger_ops.record(
            rt.state, [(r.idempotency_key, r.status, r.provider_message_id, r.error) for r in results]
        )
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
    return counts
