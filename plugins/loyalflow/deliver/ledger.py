"""The send ledger: one row per idempotency key, claimed atomically before a message is sent."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import lru_cache
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalflow.state import bulk, key_formats, ledger
from loyalflow.warehouse import ID_BATCH, select_in

COUNTED = ("claimed", "scheduled", "sent", "unknown")  # went, will go, or may have gone out
RELEASED = "released"  # certainly not delivered: free to be claimed again
BUNDLED = "bundled"  # an anchor that went out inside another anchor's message (same step and day)


_NUMBER = re.compile(r"0|[1-9][0-9]{0,18}")  # a non-negative integer id up to a bigint, written plainly
_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,36}")  # an id that is safe as it is in a Message-ID (UUIDs fit)
KeyFunction = Callable[[str, str, str], str]  # (step, customer_id, anchor_id) -> key, for one campaign


def _sha(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@lru_cache(maxsize=1024)
def _step_prefix(campaign: str, step: str) -> str:
    return _sha(f"{campaign}|{step}", 8)  # the same for every key of a step: hashed once


def idempotency_key(campaign: str, step: str, customer_id: str, anchor_id: str) -> str:
    """Deterministic key from campaign, step, customer and anchor (never a try number or random value).

    In customer order within a step, so that a chunk's keys sit side by side in the ledger's index:
    a hash of campaign and step, the customer id (integers zero-padded; an id with other characters, or
    a longer one, hashed), then a hash of all four. Letters, digits, ``_`` and ``-`` only, at most 61.
    """
    if _NUMBER.fullmatch(customer_id):
        who = "n" + customer_id.zfill(19)
    elif _PLAIN.fullmatch(customer_id):
        who = "s" + customer_id
    else:
        who = "h" + _sha(customer_id, 24)
    return _step_prefix(campaign, step) + who + _sha(f"{campaign}|{step}|{customer_id}|{anchor_id}", 16)


def hashed_key(campaign: str, step: str, customer_id: str, anchor_id: str) -> str:
    """The key of campaigns that sent before keys were ordered (listed in ``loyalflow_key_formats``)."""
    return _sha(f"{campaign}|{step}|{customer_id}|{anchor_id}", 40)


def keys_for(engine: sa.Engine, campaign: str) -> KeyFunction:
    """The key function of ``campaign``: hashed if it sent before ordered keys existed, else ordered.

    The list of hashed-key campaigns is written once, by the migration that introduced ordered keys,
    so a key never changes once a message may have gone out under it.
    """
    with engine.connect() as conn:
        fmt = conn.execute(sa.select(key_formats.c.format).where(key_formats.c.campaign == campaign)).scalar()
    derive = hashed_key if fmt == "hashed" else idempotency_key
    return lambda step, customer_id, anchor_id: derive(campaign, step, customer_id, anchor_id)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def statuses(conn: sa.Connection, keys: Iterable[str]) -> dict[str, str]:
    """The ledger status of each key that has a row (one query per ``ID_BATCH`` keys)."""
    keys = list(keys)
    found: dict[str, str] = {}
    for start in range(0, len(keys), ID_BATCH):
        _, rows = select_in(
            conn, ledger, "idempotency_key, status", "idempotency_key", keys[start : start + ID_BATCH]
        )
        found.update((str(k), str(status)) for k, status in rows)
    return found


def existing_keys(engine: sa.Engine, keys: Iterable[str]) -> set[str]:
    """The keys already in the ledger in any state but ``released`` (claimed, sent, failed, unknown)."""
    with engine.connect() as conn:
        return {k for k, status in statuses(conn, keys).items() if status != RELEASED}


def recent_anchors(
    engine: sa.Engine, campaign: str, customer_ids: list[str], as_of: dt.date, days: int | None
) -> dict[str, dict[str, dt.date]]:
    """Per customer: anchors of ``campaign`` messaged in the ``days`` before as_of, with their last day."""
    out: dict[str, dict[str, dt.date]] = defaultdict(dict)
    if days is None:
        return out
    with engine.connect() as conn:
        for start in range(0, len(customer_ids), ID_BATCH):
            rows = conn.execute(
                sa.select(ledger.c.customer_id, ledger.c.anchor_id, sa.func.max(ledger.c.as_of))
                .where(
                    ledger.c.campaign == campaign,
                    ledger.c.customer_id.in_(customer_ids[start : start + ID_BATCH]),
                    ledger.c.status.in_(COUNTED),
                    ledger.c.as_of > as_of - dt.timedelta(days=days),
                )
                .group_by(ledger.c.customer_id, ledger.c.anchor_id)
            )
            for customer_id, anchor_id, day in rows:
                out[customer_id][anchor_id] = day
    return out


def _insert(engine: sa.Engine) -> Any:
    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(ledger)


def claim(engine: sa.Engine, rows: list[dict]) -> set[str]:
    """Claim keys for sending; return the keys this caller won (a concurrent copy gets none of them).

    PostgreSQL: new keys are inserted (``ON CONFLICT DO NOTHING RETURNING``); ``released`` rows are
    taken over one by one with ``UPDATE ... WHERE status = 'released'``, which only one concurrent
    caller can match. SQLite: the database write lock is taken first, so the keys read as absent or
    ``released`` stay so until commit: those are inserted and taken over in one executemany each.
    """
    if not rows:
        return set()
    now = _utcnow()
    rows = sorted(rows, key=itemgetter("idempotency_key"))  # one lock order for every caller
    claimed = {"status": "claimed", "claimed_at": now, "updated_at": now, "error": None}
    batch = [{**r, **claimed} for r in rows]
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            return _claim_locked(conn, batch, now)
        won = _insert_new(conn, batch)
        lost = [r for r in batch if r["idempotency_key"] not in won]
        known = statuses(conn, [r["idempotency_key"] for r in lost])
        for r in lost:
            if known.get(r["idempotency_key"]) == RELEASED and _take_over(conn, r, now):
                won.add(r["idempotency_key"])
    return won


def _insert_new(conn: sa.Connection, batch: list[dict]) -> set[str]:
    """PostgreSQL: insert the rows whose keys are new, in key order; return those keys (``ON CONFLICT DO
    NOTHING RETURNING``: a key a concurrent caller inserted first is not returned)."""
    insert = postgresql.insert(ledger)
    if bulk.can_stage(conn):
        staged = bulk.stage(conn, ledger, batch)
        names = list(batch[0])
        rows = sa.select(*(staged.c[n] for n in names)).order_by(staged.c.idempotency_key)
        stmt = insert.from_select(names, rows).on_conflict_do_nothing(index_elements=["idempotency_key"])
        return set(conn.execute(stmt.returning(ledger.c.idempotency_key)).scalars())
    # one cached statement, executed for many rows (SQLAlchemy's insertmanyvalues batches it)
    stmt = insert.on_conflict_do_nothing(index_elements=["idempotency_key"])
    return set(conn.execute(stmt.returning(ledger.c.idempotency_key), batch).scalars())


def _claim_locked(conn: sa.Connection, batch: list[dict], now: dt.datetime) -> set[str]:
    """SQLite's claim: under the write lock (held to commit) no other caller can insert or take over."""
    conn.execute(sa.update(ledger).where(sa.false()).values(status="claimed"))  # the write lock, now
    known = statuses(conn, [r["idempotency_key"] for r in batch])
    fresh: dict[str, dict] = {}
    released: dict[str, dict] = {}
    for r in batch:
        key = r["idempotency_key"]
        status = known.get(key)
        if status is None:
            fresh.setdefault(key, r)
        elif status == RELEASED:
            released.setdefault(key, r)
    bulk.execute_many(conn, sa.insert(ledger), list(fresh.values()))
    if released:
        stmt = (
            sa.update(ledger)
            .where(ledger.c.idempotency_key == sa.bindparam("k"), ledger.c.status == RELEASED)
            .values(
                status="claimed",
                provider=sa.bindparam("p"),
                run_id=sa.bindparam("r"),
                send_at=sa.bindparam("t", type_=ledger.c.send_at.type),
                provider_message_id=None,
                error=None,
                claimed_at=now,
                updated_at=now,
            )
        )
        params = [
            {"k": k, "p": r["provider"], "r": r["run_id"], "t": r.get("send_at")} for k, r in released.items()
        ]
        if bulk.execute_many(conn, stmt, params) != len(params):
            raise RuntimeError("ledger rows changed under the write lock")  # cannot happen on SQLite
    return fresh.keys() | released.keys()


def mark_bundled(engine: sa.Engine, rows: list[dict]) -> None:
    """Record the other anchors of claimed messages as handled (status ``bundled``), once each."""
    if not rows:
        return
    now = _utcnow()
    batch = [{**r, "status": BUNDLED, "claimed_at": now, "updated_at": now} for r in rows]
    with engine.begin() as conn:
        bulk.execute_many(
            conn, _insert(engine).on_conflict_do_nothing(index_elements=["idempotency_key"]), batch
        )


def _take_over(conn: sa.Connection, row: dict, now: dt.datetime) -> bool:
    stmt = (
        sa.update(ledger)
        .where(ledger.c.idempotency_key == row["idempotency_key"], ledger.c.status == RELEASED)
        .values(
            status="claimed",
            provider=row["provider"],
            run_id=row["run_id"],
            send_at=row.get("send_at"),
            provider_message_id=None,
            error=None,
            claimed_at=now,
            updated_at=now,
        )
    )
    return conn.execute(stmt).rowcount == 1


def expire_stale_claims(engine: sa.Engine, lease_seconds: float, campaign: str | None = None) -> int:
    """Turn rows still ``claimed`` after the lease (their process crashed) into ``unknown``."""
    now = _utcnow()
    stmt = (
        sa.update(ledger)
        .where(ledger.c.status == "claimed", ledger.c.claimed_at <= now - dt.timedelta(seconds=lease_seconds))
        .values(status="unknown", error="claim lease expired (the sending process stopped)", updated_at=now)
    )
    if campaign is not None:
        stmt = stmt.where(ledger.c.campaign == campaign)
    with engine.begin() as conn:
        return int(conn.execute(stmt).rowcount)


def record(engine: sa.Engine, results: list[tuple[str, str, str | None, str | None]]) -> None:
    """Store send outcomes as (key, status, provider_message_id, error); a key given twice keeps its last."""
    if not results:
        return
    now = _utcnow()
    with engine.begin() as conn:
        if bulk.can_stage(conn):  # PostgreSQL: the results staged, then one UPDATE ... FROM
            names = ("idempotency_key", "status", "provider_message_id", "error")
            last = {r[0]: dict(zip(names, r, strict=True)) for r in results}  # per key, as in order
            staged = bulk.stage(conn, ledger, list(last.values()))
            stmt = (
                sa.update(ledger)
                .where(ledger.c.idempotency_key == staged.c.idempotency_key)
                .values(
                    status=staged.c.status,
                    provider_message_id=staged.c.provider_message_id,
                    error=staged.c.error,
                    updated_at=now,
                )
            )
            conn.execute(stmt)
            return
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
        bulk.execute_many(conn, stmt, [{"k": k, "s": s, "m": m, "e": e} for k, s, m, e in results])
