"""Personal referral codes: deterministic per customer, stored so referred orders can be attributed."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalflow.state import bulk, referral_codes
from loyalflow.warehouse import ID_BATCH, select_in

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


def codes_for(engine: sa.Engine, secret: str, customer_ids: Iterable[str]) -> dict[str, str]:
    """Each customer's referral code: the stored one when they were ever sent one (so a code in an old
    message keeps working, also after a key rotation), else the derived one. A derived code that another
    customer already holds (40 bits: a few pairs per million customers) takes the next variant,
    ``code_for(secret, "<id>|1")`` and so on, so no two customers share a code. One or two queries."""
    ids = sorted({str(c) for c in customer_ids})
    out: dict[str, str] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), ID_BATCH):
            _, rows = select_in(
                conn, referral_codes, "customer_id, code", "customer_id", ids[start : start + ID_BATCH]
            )
            out.update((str(c), str(code)) for c, code in rows)
        derived = {c: code_for(secret, c) for c in ids if c not in out}
        held = _held(conn, list(derived.values()))
        used = set(out.values()) | held
        for cid, code in derived.items():
            variant = 0
            while code in used:
                variant += 1
                code = code_for(secret, f"{cid}|{variant}")
                used |= _held(conn, [code])
            used.add(code)
            out[cid] = code
    return out


def _held(conn: sa.Connection, codes: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(codes), ID_BATCH):
        found.update(
            str(code)
            for (code,) in select_in(conn, referral_codes, "code", "code", codes[start : start + ID_BATCH])[1]
        )
    return found


def remember(
    engine: sa.Engine, secret: str, customer_ids: list[str], codes: dict[str, str] | None = None
) -> None:
    """Store the codes of customers who were sent one: ``codes`` (what their messages carried, from
    :func:`codes_for` before rendering), else :func:`codes_for` now. Idempotent; never fails on a taken
    code: a concurrent chunk that stored the same new code first wins, and this customer's next message
    derives the next variant."""
    if not customer_ids:
        return
    if codes is None or not set(customer_ids) <= set(codes):
        codes = codes_for(engine, secret, customer_ids)
    codes = {c: codes[c] for c in customer_ids}
    insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(referral_codes)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [{"customer_id": c, "code": code, "created_at": now} for c, code in sorted(codes.items())]
    with engine.begin() as conn:
        bulk.execute_many(conn, insert.on_conflict_do_nothing(), rows)


def customer_for(engine: sa.Engine, code: str) -> str | None:
    """The referrer behind a code, when it was ever sent."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(referral_codes.c.customer_id).where(referral_codes.c.code == code.strip().upper())
        ).scalar_one_or_none()
