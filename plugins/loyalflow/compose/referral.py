"""Personal referral codes: deterministic per customer, stored so referred orders can be attributed."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalflow.state import referral_codes


def code_for(secret: str, customer_id: str) -> str:
    """A short, unguessable, stable code such as ``HP-7QK2M4XA``."""
    digest = hmac.new(secret.encode(), f"referral|{customer_id}".encode(), hashlib.sha256).digest()
    return "HP-" + base64.b32encode(digest)[:8].decode()


def remember(engine: sa.Engine, secret: str, customer_ids: list[str]) -> None:
    """Store the codes of customers who were sent one (idempotent)."""
    if not customer_ids:
        return
    insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(referral_codes)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [
        {"customer_id": c, "code": code_for(secret, c), "created_at": now} for c in sorted(set(customer_ids))
    ]
    with engine.begin() as conn:
        conn.execute(insert.on_conflict_do_nothing(index_elements=["customer_id"]), rows)


def customer_for(engine: sa.Engine, code: str) -> str | None:
    """The referrer behind a code, when it was ever sent."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(referral_codes.c.customer_id).where(referral_codes.c.code == code.strip().upper())
        ).scalar_one_or_none()
