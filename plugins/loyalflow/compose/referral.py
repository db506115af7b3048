"""Personal referral codes: deterministic per customer, stored so referred orders can be attributed."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalflow.state import referral_codes

B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 base32
_PAIRS = [a + b for a in B32 for b in B32]  # two base32 characters per 10 bits


@lru_cache(maxsize=8)
def _keyed(secret: str) -> hmac.HMAC:
    return hmac.new(secret.encode(), b"referral|", hashlib.sha256)


def code_for(secret: str, customer_id: str) -> str:
    """A short, unguessable, stable code such as ``HP-7QK2M4XA``: the first 8 base32 characters (the
    first 40 bits) of HMAC-SHA256(secret, ``referral|<customer_id>``)."""
    mac = _keyed(secret).copy()
    mac.update(customer_id.encode())
    bits = int.from_bytes(mac.digest()[:5], "big")
    pairs = _PAIRS
    return (
        f"HP-{pairs[bits >> 30]}{pairs[(bits >> 20) & 1023]}{pairs[(bits >> 10) & 1023]}{pairs[bits & 1023]}"
    )


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
