"""Cap reservations in bulk: one book per chunk, atomic across concurrent chunks (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from loyalflow.decide import caps
from loyalflow.deliver.ledger import COUNTED
from loyalflow.state import cap_reservations, ensure_schema, ledger

DAY = dt.date(2026, 11, 20)
CUSTOMERS = [f"C{i:04d}" for i in range(300)]


def _engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 60} if url.startswith("sqlite") else {})
    ensure_schema(engine)
    return engine


def _chunk(engine: sa.Engine, campaign: str, priority: int, order: list[str]) -> dict[str, str | None]:
    with caps.reserving(engine, order, [f"{campaign}|{c}" for c in order], DAY) as book:
        return {c: book.reserve(c, f"{campaign}|{c}", DAY, campaign, priority, 1, 2) for c in order}


def _decided_chunk(
    engine: sa.Engine, campaign: str, priority: int, order: list[str]
) -> dict[str, str | None]:
    """As the pipeline reserves: decided on an unlocked book, written (or decided again) under the locks."""

    def decide(book: caps.CapBook) -> dict[str, str | None]:
        return {c: book.reserve(c, f"{campaign}|{c}", DAY, campaign, priority, 1, 2) for c in order}

    return caps.decided(engine, order, [f"{campaign}|{c}" for c in order], DAY, decide)


@pytest.mark.parametrize("chunk", [_chunk, _decided_chunk], ids=["reserving", "decided"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_chunks_never_exceed_a_cap_or_deadlock(
    backend: str, chunk: Callable[..., dict[str, str | None]], request: pytest.FixtureRequest
) -> None:
    """Four chunks of equal priority reserve the same customers in different orders at once."""
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    engine = _engine(url)
    orders = [CUSTOMERS, CUSTOMERS[::-1], CUSTOMERS[150:] + CUSTOMERS[:150], sorted(CUSTOMERS, key=hash)]
    results: dict[str, dict[str, str | None]] = {}

    def run(i: int) -> None:
        results[f"promo{i}"] = chunk(engine, f"promo{i}", 50, orders[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 4, "a chunk did not finish (deadlock or error)"
    granted = Counter(c for res in results.values() for c, why in res.items() if why is None)
    assert granted == Counter(CUSTOMERS)  # exactly one slot per customer per day
    with engine.connect() as conn:
        held = conn.execute(
            sa.select(cap_reservations.c.customer_id, sa.func.count())
            .where(cap_reservations.c.status == "held")
            .group_by(cap_reservations.c.customer_id)
        ).all()
    assert {c: n for c, n in held} == dict.fromkeys(CUSTOMERS, 1)


def test_a_chunk_sees_its_own_reservations_and_a_dry_run_writes_nothing(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    with caps.reserving(engine, ["C1"], ["a", "b"], DAY, commit=False) as book:
        assert book.reserve("C1", "a", DAY, "promo", 50, 1, 2) is None
        assert book.reserve("C1", "b", DAY, "promo", 50, 1, 2) is None  # dry run: nothing held
    with caps.reserving(engine, ["C1"], ["a", "b"], DAY) as book:
        assert book.reserve("C1", "a", DAY, "promo", 50, 1, 2) is None
        denied = book.reserve("C1", "b", DAY, "promo", 50, 1, 2)
    assert denied and "cap 1/day" in denied and "promo" in denied
    with engine.connect() as conn:
        assert conn.execute(sa.select(cap_reservations.c.idempotency_key)).scalars().all() == ["a"]


def test_preemption_inside_a_chunk_releases_the_lower_priority_slot(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    assert (
        caps.reserve(
            engine, customer_id="C1", key="lo", day=DAY, campaign="lo", priority=10, per_day=1, per_week=2
        )
        is None
    )
    with caps.reserving(engine, ["C1"], ["hi"], DAY) as book:
        assert book.reserve("C1", "hi", DAY, "hi", 90, 1, 2) is None
    assert caps.confirm(engine, ["lo", "hi"]) == {"hi"}
    assert "preempted by hi" in caps.preempted_by(engine, "lo")


def test_chunks_of_the_default_size_reserve_side_by_side_on_postgres(pg_url: str) -> None:
    """Two workers' chunks of 10,000 customers each (the default chunk size) at once. A lock per customer
    overflowed PostgreSQL's shared lock table (``max_locks_per_transaction`` 64 per connection): "out of
    shared memory" on the first marketing chunks. Now a chunk holds at most ``LOCK_BUCKETS`` locks."""
    engine = _engine(pg_url)
    chunks = [[f"C{w}{i:05d}" for i in range(10_000)] for w in range(2)]
    results: list[dict[str, str | None]] = []
    threads = [
        threading.Thread(target=lambda ids=ids: results.append(_chunk(engine, "promo", 50, ids)))
        for ids in chunks
    ]
    for t in threads:
        t.start()
    most = 0
    with engine.connect() as conn:
        while any(t.is_alive() for t in threads):
            count = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            most = max(most, conn.execute(sa.text(count)).scalar_one())
            conn.rollback()
    assert [list(r.values()) for r in results] == [[None] * 10_000] * 2
    assert 0 < most <= 2 * caps.LOCK_BUCKETS
    again = _chunk(engine, "other", 50, chunks[0][:10])  # the cap of 1 a day now binds
    assert all(why and why.startswith("cap 1/day") for why in again.values()), again


def _held(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        query = sa.select(cap_reservations.c.idempotency_key, cap_reservations.c.status)
        return sorted(conn.execute(query.order_by(cap_reservations.c.idempotency_key)).tuples())


def _take(engine: sa.Engine, key: str, campaign: str, priority: int) -> str | None:
    return caps.reserve(
        engine,
        customer_id="C1",
        key=key,
        day=DAY,
        campaign=campaign,
        priority=priority,
        per_day=1,
        per_week=2,
    )


def test_decided_again_under_the_lock_when_another_campaign_reserved_meanwhile(sqlite_url: str) -> None:
    """Another campaign takes C1's slot while this chunk decides on its unlocked book: the reservation it
    would have written is stale, so it decides again under the lock and is denied (one slot a day)."""
    engine = _engine(sqlite_url)
    calls: list[str | None] = []

    def decide(book: caps.CapBook) -> str | None:
        if not calls:
            assert _take(engine, "other|C1", "other", 50) is None  # meanwhile, committed
        calls.append(book.reserve("C1", "promo|C1", DAY, "promo", 50, 1, 2))
        return calls[-1]

    denied = caps.decided(engine, ["C1"], ["promo|C1"], DAY, decide)
    assert calls[0] is None and denied and "cap 1/day" in denied and "other" in denied
    assert _held(engine) == [("other|C1", "held")]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_preemption_is_decided_under_the_lock(backend: str, request: pytest.FixtureRequest) -> None:
    """Preempting a lower-priority slot writes: SQLite's unlocked book refuses it and the chunk decides
    again under the lock, where the slot is released; PostgreSQL decides under its locks from the start."""
    engine = _engine(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    assert _take(engine, "lo|C1", "lo", 10) is None
    optimistic: list[bool] = []

    def decide(book: caps.CapBook) -> str | None:
        optimistic.append(book.optimistic)
        return book.reserve("C1", "hi|C1", DAY, "hi", 90, 1, 2)

    assert caps.decided(engine, ["C1"], ["hi|C1"], DAY, decide) is None
    assert optimistic == ([True, False] if backend == "sqlite" else [False])
    assert _held(engine) == [("hi|C1", "held"), ("lo|C1", "released")]


def test_an_uncontended_chunk_decides_once_and_a_dry_run_writes_nothing(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    calls: list[bool] = []

    def decide(book: caps.CapBook) -> list[str | None]:
        calls.append(book.optimistic)
        return [book.reserve("C1", k, DAY, "promo", 50, 1, 2) for k in ("a", "b")]

    assert caps.decided(engine, ["C1"], ["a", "b"], DAY, decide, commit=False) == [None, None]
    assert _held(engine) == []
    got = caps.decided(engine, ["C1"], ["a", "b"], DAY, decide)
    assert got[0] is None and got[1] and "cap 1/day" in got[1]
    assert calls == [False, True] and _held(engine) == [("a", "held")]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_book_reads_what_the_typed_query_reads(backend: str, request: pytest.FixtureRequest) -> None:
    """``_read`` runs on the driver's cursor: the same rows, typed as SQLAlchemy types them (dates, times,
    integers), as the query written with SQLAlchemy, on either side of each day and status bound."""
    engine = _engine(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    since = DAY - dt.timedelta(days=6)
    now = dt.datetime(2026, 11, 20, 9, 30, 15, 123456)
    slots = [
        {"idempotency_key": f"r{i}", "customer_id": f"C{i % 3}", "day": since + dt.timedelta(days=d)}
        | {"campaign": "promo", "priority": 10 + i, "status": status, "detail": None, "updated_at": now}
        for i, (d, status) in enumerate(
            [(-1, "held"), (0, "held"), (0, "released"), (3, "sending"), (9, "sent"), (0, "sent")]
        )
    ]
    sent = [
        {"idempotency_key": f"l{i}", "campaign": "old", "step": "s", "customer_id": f"C{i % 3}"}
        | {"anchor_id": "a", "channel": "email", "category": category, "status": status, "provider": "outbox"}
        | {"run_id": "r", "as_of": since + dt.timedelta(days=d), "send_at": send_at}
        | {"claimed_at": now, "updated_at": now}
        for i, (d, category, status, send_at) in enumerate(
            [
                (-2, "marketing", "sent", now),
                (-1, "marketing", "sent", None),
                (0, "marketing", "released", now),
                (2, "relationship", "sent", now),
                (4, "marketing", "unknown", now),
            ]
        )
    ]
    with engine.begin() as conn:
        conn.execute(cap_reservations.insert(), slots)
        conn.execute(ledger.insert(), sent)
    ids, keys = ["C0", "C1", "C2", "C9"], ["r0", "r2", "r5", "nope"]
    res = cap_reservations
    with engine.connect() as conn:
        got = caps._read(conn, ids, keys, since)
        want = (
            sorted(
                conn.execute(
                    sa.select(*caps.SLOT_COLUMNS).where(
                        res.c.customer_id.in_(ids), res.c.day >= since, res.c.status.in_(caps.ACTIVE)
                    )
                ).tuples()
            ),
            sorted(
                conn.execute(
                    sa.select(*caps.SENT_COLUMNS).where(
                        ledger.c.customer_id.in_(ids),
                        ledger.c.category == "marketing",
                        ledger.c.status.in_(COUNTED),
                        ledger.c.as_of >= since - dt.timedelta(days=1),
                    )
                ).tuples(),
                key=lambda r: (r[0], r[1]),
            ),
            sorted(
                conn.execute(
                    sa.select(res.c.idempotency_key, res.c.status).where(res.c.idempotency_key.in_(keys))
                ).tuples()
            ),
        )
    assert got == want
    assert [len(part) for part in got] == [4, 2, 3]
    assert {type(r[2]) for r in got[0]} == {dt.date} and {type(r[4]) for r in got[0]} == {int}
    assert got[1][0][2] is None and got[1][1][2] == now and isinstance(got[1][1][3], dt.date)
