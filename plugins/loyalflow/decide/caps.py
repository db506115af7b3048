"""Marketing frequency caps across campaigns: per-customer reservations taken atomically, by priority.

A marketing message first *reserves* a slot (``held``) on the customer's local day of its ``send_at``,
inside one transaction that holds a per-customer lock (PostgreSQL advisory lock; SQLite's write lock).
When the day or 7-day cap binds, a higher-priority campaign may preempt ``held`` reservations of
lower-priority campaigns that have not started sending; the preempted message then fails
:func:`confirm` and is recorded as ``frequency_cap`` instead of being sent. Before sending, a
reservation moves to ``sending`` (no longer preemptible), then ``sent`` or, on a certain failure,
``released``. Ledger rows of marketing messages sent without a reservation count too.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable

import sqlalchemy as sa

from loyalflow.deliver.ledger import COUNTED
from loyalflow.state import cap_reservations as res
from loyalflow.state import ledger

ACTIVE = ("held", "sending", "sent")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _lock(conn: sa.Connection, customer_id: str) -> None:
    """Serialise reservations of one customer (SQLite: take the database write lock now)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(customer_id.encode())})
    else:
        conn.execute(sa.update(res).where(sa.false()).values(status="held"))


def _over(days: list[dt.date], day: dt.date, per_day: int, per_week: int) -> str | None:
    """Why one more message on ``day`` breaks a cap (any 7-day window containing it), else None."""
    if sum(d == day for d in days) + 1 > per_day:
        return f"cap {per_day}/day reached on {day}"
    for offset in range(7):
        start = day - dt.timedelta(days=6 - offset)
        if sum(start <= d <= start + dt.timedelta(days=6) for d in days) + 1 > per_week:
            return f"cap {per_week}/7 days reached in {start}..{start + dt.timedelta(days=6)}"
    return None


def reserve(
    engine: sa.Engine,
    *,
    customer_id: str,
    key: str,
    day: dt.date,
    campaign: str,
    priority: int,
    per_day: int,
    per_week: int,
    commit: bool = True,
) -> str | None:
    """Take a cap slot for ``key``; None when granted, else the reason (naming who holds the slots)."""
    lo, hi = day - dt.timedelta(days=6), day + dt.timedelta(days=6)
    with engine.connect() as conn, conn.begin() as tx:
        _lock(conn, customer_id)
        mine = conn.execute(sa.select(res.c.status).where(res.c.idempotency_key == key)).scalar()
        if mine in ACTIVE:
            return None
        rows = conn.execute(
            sa.select(res.c.idempotency_key, res.c.day, res.c.campaign, res.c.priority, res.c.status).where(
                res.c.customer_id == customer_id, res.c.day.between(lo, hi), res.c.status.in_(ACTIVE)
            )
        ).all()
        known = {r.idempotency_key for r in rows}
        legacy = conn.execute(
            sa.select(ledger.c.idempotency_key, ledger.c.send_at, ledger.c.as_of).where(
                ledger.c.customer_id == customer_id,
                ledger.c.category == "marketing",
                ledger.c.status.in_(COUNTED),
                ledger.c.as_of.between(lo - dt.timedelta(days=1), hi),
            )
        ).all()
        fixed = [r.day for r in rows if r.status != "held" or r.priority >= priority]
        fixed += [
            (r.send_at.date() if r.send_at else r.as_of) for r in legacy if r.idempotency_key not in known
        ]
        preemptible = sorted(
            (r for r in rows if r.status == "held" and r.priority < priority),
            key=lambda r: r.priority,
            reverse=True,
        )
        why = _over(fixed + [r.day for r in preemptible], day, per_day, per_week)
        victims = []
        while why and preemptible:
            victims.append(preemptible.pop())  # lowest priority first
            why = _over(fixed + [r.day for r in preemptible], day, per_day, per_week)
        if why:
            unreserved = any(r.idempotency_key not in known for r in legacy)
            holders = sorted({r.campaign for r in rows} | ({"earlier sends"} if unreserved else set()))
            tx.rollback()
            return f"{why} (held by {', '.join(holders) or 'other messages'})"
        if not commit:
            tx.rollback()
            return None
        now = _utcnow()
        for victim in victims:
            done = conn.execute(
                sa.update(res)
                .where(res.c.idempotency_key == victim.idempotency_key, res.c.status == "held")
                .values(
                    status="released", detail=f"preempted by {campaign} (priority {priority})", updated_at=now
                )
            ).rowcount
            if not done:
                tx.rollback()
                return f"cap reached: {victim.campaign} started sending"
        values = {
            "customer_id": customer_id,
            "day": day,
            "campaign": campaign,
            "priority": priority,
            "status": "held",
            "detail": None,
            "updated_at": now,
        }
        if mine is None:
            conn.execute(sa.insert(res).values(idempotency_key=key, **values))
        else:
            conn.execute(sa.update(res).where(res.c.idempotency_key == key).values(**values))
        tx.commit()
    return None


def confirm(engine: sa.Engine, keys: Iterable[str]) -> set[str]:
    """Move reservations to ``sending``; returns the keys still holding a slot (the rest were preempted)."""
    keys = list(keys)
    ok: set[str] = set()
    with engine.begin() as conn:
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            conn.execute(
                sa.update(res)
                .where(res.c.idempotency_key.in_(batch), res.c.status == "held")
                .values(status="sending", updated_at=_utcnow())
            )
            ok.update(
                r[0]
                for r in conn.execute(
                    sa.select(res.c.idempotency_key).where(
                        res.c.idempotency_key.in_(batch), res.c.status.in_(("sending", "sent"))
                    )
                )
            )
    return ok


def preempted_by(engine: sa.Engine, key: str) -> str:
    """The detail of a released reservation (who took its slot)."""
    with engine.connect() as conn:
        detail = conn.execute(sa.select(res.c.detail).where(res.c.idempotency_key == key)).scalar()
    return str(detail or "cap slot released")


def finish(engine: sa.Engine, sent: Iterable[str], released: Iterable[str]) -> None:
    """Mark reservations ``sent`` (went or may have gone out) or ``released`` (certainly not sent)."""
    now = _utcnow()
    with engine.begin() as conn:
        for status, keys in (("sent", list(sent)), ("released", list(released))):
            for start in range(0, len(keys), 500):
                conn.execute(
                    sa.update(res)
                    .where(res.c.idempotency_key.in_(keys[start : start + 500]), res.c.status != "sent")
                    .values(status=status, updated_at=now)
                )
