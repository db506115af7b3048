"""Suppressions: addresses that must not be messaged, whatever the provider.

Keyed by normalised address and channel (not customer id), so they survive a customer being deleted
and re-imported. ``scope`` is ``all``, a campaign category (``marketing``/``relationship``) or a
campaign id; ``reason`` is unsubscribed, bounced, complained or manual.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalflow.decide.addresses import normalise
from loyalflow.errors import LoyalflowError
from loyalflow.state import suppressions as table
from loyalflow.warehouse import ID_BATCH, select_in

REASONS = ("unsubscribed", "bounced", "complained", "manual")


def _address(channel: str, value: str) -> str:
    address = normalise(channel, value)
    if address is None:
        raise LoyalflowError(f"not a valid {channel} address")  # never echo the address itself
    return address


def _begin(bind: sa.Engine | sa.Connection) -> AbstractContextManager[sa.Connection]:
    """A transaction on an engine, or the caller's own transaction when given a connection."""
    return nullcontext(bind) if isinstance(bind, sa.Connection) else bind.begin()


def add(
    engine: sa.Engine | sa.Connection,
    channel: str,
    address: str,
    reason: str,
    *,
    scope: str = "all",
    source: str | None = None,
    customer_id: str | None = None,
) -> bool:
    """Suppress ``address`` on ``channel`` for ``scope``; False when it already was (same reason)."""
    if reason not in REASONS:
        raise LoyalflowError(f"unknown suppression reason '{reason}' (use {', '.join(REASONS)})")
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    row = {
        "address": _address(channel, address),
        "channel": channel,
        "scope": scope,
        "reason": reason,
        "source": source,
        "customer_id": customer_id,
        "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }
    stmt = dialect.insert(table).values(row).on_conflict_do_nothing()
    with _begin(engine) as conn:
        return bool(conn.execute(stmt).rowcount)


def remove(
    engine: sa.Engine | sa.Connection,
    channel: str,
    address: str,
    *,
    reasons: Iterable[str] = ("unsubscribed",),
    scope: str | None = None,
) -> int:
    """Lift suppressions of ``address`` (by default only unsubscribes: bounces and complaints stay)."""
    stmt = sa.delete(table).where(
        table.c.channel == channel,
        table.c.address == _address(channel, address),
        table.c.reason.in_(list(reasons)),
    )
    if scope is not None:
        stmt = stmt.where(table.c.scope == scope)
    with _begin(engine) as conn:
        return int(conn.execute(stmt).rowcount)


def list_(engine: sa.Engine, channel: str | None = None, address: str | None = None) -> list[dict[str, Any]]:
    """Suppression rows, newest first (optionally for one channel and address)."""
    stmt = sa.select(table).order_by(table.c.id.desc())
    if channel:
        stmt = stmt.where(table.c.channel == channel)
    if channel and address:
        stmt = stmt.where(table.c.address == _address(channel, address))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def lookup(engine: sa.Engine, addresses: Iterable[str]) -> dict[tuple[str, str, str], str]:
    """``(channel, address, scope) -> reason`` for the given normalised addresses."""
    ordered = sorted(set(addresses))
    found: dict[tuple[str, str, str], str] = {}
    with engine.connect() as conn:
        for start in range(0, len(ordered), ID_BATCH):
            batch = ordered[start : start + ID_BATCH]
            _, rows = select_in(conn, table, "channel, address, scope, reason", "address", batch)
            for channel, address, scope, reason in rows:
                key = (channel, address, scope)
                found[key] = f"{found[key]}, {reason}" if key in found else reason
    return found


def for_customer(engine: sa.Engine, customer: dict[str, Any]) -> list[dict[str, Any]]:
    """Every suppression on the customer's current email and phone (for ``explain``)."""
    rows = []
    for channel, column in (("email", "email"), ("sms", "phone")):
        address = normalise(channel, customer.get(column))
        if address:
            rows += list_(engine, channel, address)
    return rows
