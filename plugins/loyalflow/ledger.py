"""The send ledger: one row per idempotency key, claimed atomically before a message is sent."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalflow.state import ledger
from loyalflow.warehouse import ID_BATCH

COUNTED = ("claimed", "sent", "unknown")  # a message that went, or may have gone, out


def idempotency_key(campaign: str, step: str, customer_id: str, anchor_id: str) -> str:
    """Deterministic key from campaign, step, customer and anchor (never a try number or random value)."""
    return hashlib.sha256(f"{campaign}|{step}|{customer_id}|{anchor_id}".encode()).hexdigest()[:40]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def existing_keys(engine: sa.Engine, keys: Iterable[str]) -> set[str]:
    """The keys already in the ledger, whatever their state (claimed, sent, failed, unknown)."""
    keys = list(keys)
    found: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(keys), ID_BATCH):
            batch = keys[start : start + ID_BATCH]
            rows = conn.execute(
                sa.select(ledger.c.idempotency_key).where(ledger.c.idempotency_key.in_(batch))
            )
            found.update(r[0] for r in rows)
    return found


def marketing_sends(engine: sa.Engine, customer_ids: list[str], since: dt.date) -> dict[str, list[dt.date]]:
    """Per customer, the days of marketing messages sent (or possibly sent) since ``since``."""
    out: dict[str, list[dt.date]] = defaultdict(list)
    with engine.connect() as conn:
        for start in range(0, len(customer_ids), ID_BATCH):
            rows = conn.execute(
                sa.select(ledger.c.customer_id, ledger.c.as_of).where(
                    ledger.c.customer_id.in_(customer_ids[start : start + ID_BATCH]),
                    ledger.c.category == "marketing",
                    ledger.c.status.in_(COUNTED),
                    ledger.c.as_of >= since,
                )
            )
            for customer_id, as_of in rows:
                out[customer_id].append(as_of)
    return out


def _insert(engine: sa.Engine) -> Any:
    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(ledger)


def claim(engine: sa.Engine, rows: list[dict]) -> set[str]:
    """Insert ``claimed`` rows; return the keys this caller won (a concurrent copy gets none of them)."""
    if not rows:
        return set()
    now = _utcnow()
    won: set[str] = set()
    with engine.begin() as conn:
        for start in range(0, len(rows), 500):
            batch = [
                {**r, "status": "claimed", "claimed_at": now, "updated_at": now}
                for r in rows[start : start + 500]
            ]
            stmt = _insert(engine).values(batch).on_conflict_do_nothing(index_elements=["idempotency_key"])
            won.update(r[0] for r in conn.execute(stmt.returning(ledger.c.idempotency_key)))
    return won


def record(engine: sa.Engine, results: list[tuple[str, str, str | None, str | None]]) -> None:
    """Store send outcomes as (key, status, provider_message_id, error)."""
    now = _utcnow()
    stmt = (
        sa.update(ledger)
        .where(ledger.c.idempotency_key == sa.bindparam("k"))
        .values(
            status=sa.bindparam("s"),
            provider_message_id=sa.bindparam("m"),
            error=sa.bindparam("e"),
            updated_at=now,
        )
    )
    with engine.begin() as conn:
        if results:
            conn.execute(stmt, [{"k": k, "s": s, "m": m, "e": e} for k, s, m, e in results])
