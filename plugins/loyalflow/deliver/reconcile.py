"""Settle ledger rows in doubt from provider events, and release what was certainly not delivered.

- ``unknown`` with an event of an accepted message (processed, delivered, open, bounce, ...) → ``sent``;
  with only ``dropped`` → ``failed``; with no event after the event window → ``released``.
- ``failed`` whose error starts with ``retryable:`` (retries ran out, or not due yet) → ``released``.

A ``released`` key is claimed again by a later run (:func:`loyalflow.deliver.ledger.claim`);
nothing in doubt is resent before its event window has passed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalflow.deliver.channels.delivery import RETRYABLE_PREFIX
from loyalflow.deliver.ledger import RELEASED, _utcnow
from loyalflow.state import delivery_events, ledger

NOT_ACCEPTED = frozenset({"dropped"})  # the provider accepted the request but will never deliver it


def record_delivery_events(engine: sa.Engine, rows: Iterable[dict[str, Any]]) -> int:
    """Store provider events (duplicates by ``(provider, event_id)`` are ignored); returns rows added."""
    rows = list(rows)
    if not rows:
        return 0
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    added = 0
    with engine.begin() as conn:
        for start in range(0, len(rows), 500):
            stmt = dialect.insert(delivery_events).values(rows[start : start + 500]).on_conflict_do_nothing()
            added += len(conn.execute(stmt.returning(delivery_events.c.event_id)).all())
    return added


def reconcile(
    engine: sa.Engine,
    event_window_seconds: float,
    campaign: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, int]:
    """Resolve ``unknown`` rows and release retryable failures; returns counts by what happened."""
    now = now or _utcnow()
    counts = {"sent": 0, "failed": 0, "released": 0, "retry_released": 0}
    scope = [ledger.c.campaign == campaign] if campaign is not None else []
    with engine.begin() as conn:
        unknown = conn.execute(
            sa.select(ledger.c.idempotency_key, ledger.c.updated_at).where(
                ledger.c.status == "unknown", *scope
            )
        ).all()
        events = _events(conn, [k for k, _ in unknown])
        cutoff = now - dt.timedelta(seconds=event_window_seconds)
        for key, updated_at in unknown:
            seen = events.get(key)
            if seen:
                accepted = [e for e in seen if e[0] not in NOT_ACCEPTED]
                status, (_, message_id) = ("sent", accepted[0]) if accepted else ("failed", seen[0])
                error = None if accepted else "dropped by the provider"
                counts[status] += _move(conn, key, "unknown", status, now, error, message_id)
            elif updated_at <= cutoff:
                counts["released"] += _move(
                    conn, key, "unknown", RELEASED, now, "no provider event in window"
                )
        retry = conn.execute(
            sa.update(ledger)
            .where(ledger.c.status == "failed", ledger.c.error.like(f"{RETRYABLE_PREFIX}%"), *scope)
            .values(status=RELEASED, updated_at=now)
        )
        counts["retry_released"] = int(retry.rowcount)
    return counts


def _events(conn: sa.Connection, keys: list[str]) -> dict[str, list[tuple[str, str | None]]]:
    out: dict[str, list[tuple[str, str | None]]] = {}
    for start in range(0, len(keys), 900):
        rows = conn.execute(
            sa.select(
                delivery_events.c.idempotency_key,
                delivery_events.c.event_type,
                delivery_events.c.provider_message_id,
            )
            .where(delivery_events.c.idempotency_key.in_(keys[start : start + 900]))
            .order_by(delivery_events.c.occurred_at)
        )
        for key, event_type, message_id in rows:
            out.setdefault(key, []).append((event_type, message_id))
    return out


def _move(
    conn: sa.Connection,
    key: str,
    old: str,
    new: str,
    now: dt.datetime,
    error: str | None,
    message_id: str | None = None,
) -> int:
    values: dict[str, Any] = {"status": new, "updated_at": now, "error": error}
    if message_id:
        values["provider_message_id"] = message_id
    stmt = sa.update(ledger).where(ledger.c.idempotency_key == key, ledger.c.status == old).values(**values)
    return int(conn.execute(stmt).rowcount)
