"""Build small contract-only warehouses (docs/architecture.md §2 columns only) for tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import sqlalchemy as sa

META = sa.MetaData()
CUSTOMERS = sa.Table(
    "customers",
    META,
    sa.Column("customer_id", sa.String, primary_key=True),
    sa.Column("email", sa.String),
    sa.Column("phone", sa.String),
    sa.Column("first_name", sa.String),
    sa.Column("last_name", sa.String),
    sa.Column("locale", sa.String),
    sa.Column("timezone", sa.String),
    sa.Column("persona", sa.String),
    sa.Column("created_at", sa.DateTime),
)
ORDERS = sa.Table(
    "orders",
    META,
    sa.Column("order_id", sa.String, primary_key=True),
    sa.Column("customer_id", sa.String),
    sa.Column("ordered_at", sa.DateTime),
    sa.Column("total", sa.Float),
    sa.Column("status", sa.String),
    sa.Column("product", sa.String),
    sa.Column("referred_by", sa.String),
)
PREFS = sa.Table(
    "channel_preferences",
    META,
    sa.Column("customer_id", sa.String),
    sa.Column("channel", sa.String),
    sa.Column("opted_in", sa.Boolean),
    sa.Column("source", sa.String),
    sa.Column("consented_at", sa.DateTime),
)
EVENTS = sa.Table(
    "events",
    META,
    sa.Column("customer_id", sa.String),
    sa.Column("event_type", sa.String),
    sa.Column("occurred_at", sa.DateTime),
    sa.Column("content_id", sa.String),
)


@dataclass
class Shop:
    """A tiny warehouse with helpers to add customers, consent, orders and events."""

    engine: sa.Engine
    _ids: count = field(default_factory=lambda: count(1))

    def __post_init__(self) -> None:
        META.create_all(self.engine)

    def customer(
        self,
        *,
        email: str | None = "auto",
        phone: str | None = None,
        first_name: str | None = "Ana",
        channels: tuple[str, ...] = ("email",),
        persona: str | None = "vacationing_family",
        timezone: str | None = "UTC",
        customer_id: str | None = None,
        **extra: Any,
    ) -> str:
        """Add a customer opted in to ``channels``; returns the customer id."""
        cid = customer_id or f"C{next(self._ids):05d}"
        row = {
            "customer_id": cid,
            "email": f"{cid.lower()}@example.com" if email == "auto" else email,
            "phone": phone,
            "first_name": first_name,
            "last_name": "Test",
            "locale": "en_US",
            "timezone": timezone,
            "persona": persona,
            "created_at": dt.datetime(2025, 1, 1),
            **extra,
        }
        with self.engine.begin() as conn:
            conn.execute(CUSTOMERS.insert(), row)
        for channel in channels:
            self.consent(cid, channel, True)
        return cid

    def consent(
        self, customer_id: str, channel: str, opted_in: bool, at: dt.datetime = dt.datetime(2025, 1, 2)
    ) -> None:
        """Record a consent (or withdrawal) row."""
        with self.engine.begin() as conn:
            conn.execute(
                PREFS.insert(),
                {
                    "customer_id": customer_id,
                    "channel": channel,
                    "opted_in": opted_in,
                    "source": "test",
                    "consented_at": at,
                },
            )

    def order(
        self,
        customer_id: str,
        at: dt.datetime,
        *,
        total: float = 120.0,
        status: str = "completed",
        product: str = "Harbor Suite, 2 nights",
        referred_by: str | None = None,
        order_id: str | None = None,
    ) -> str:
        """Add an order; returns its id."""
        oid = order_id or f"O{next(self._ids):06d}"
        with self.engine.begin() as conn:
            conn.execute(
                ORDERS.insert(),
                {
                    "order_id": oid,
                    "customer_id": customer_id,
                    "ordered_at": at,
                    "total": total,
                    "status": status,
                    "product": product,
                    "referred_by": referred_by,
                },
            )
        return oid

    def event(
        self, customer_id: str, event_type: str, at: dt.datetime, content_id: str | None = None
    ) -> None:
        """Add a behavioural event."""
        with self.engine.begin() as conn:
            conn.execute(
                EVENTS.insert(),
                {
                    "customer_id": customer_id,
                    "event_type": event_type,
                    "occurred_at": at,
                    "content_id": content_id,
                },
            )

    def set_order_status(self, order_id: str, status: str) -> None:
        """Change an order's status (a return or cancellation)."""
        with self.engine.begin() as conn:
            conn.execute(ORDERS.update().where(ORDERS.c.order_id == order_id).values(status=status))
