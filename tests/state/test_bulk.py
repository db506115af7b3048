"""Bulk inserts: PostgreSQL COPY and SQLite executemany store exactly the values given."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from loyalflow.state import bulk, decisions, ensure_schema

AWKWARD = ["plain", 'with "quotes", commas', "line\nbreak", "\\N", "", "Zoë 日本 ✓", None]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_insert_many_round_trips_awkward_values(backend: str, request: pytest.FixtureRequest) -> None:
    engine = sa.create_engine(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    ensure_schema(engine)
    at = dt.datetime(2026, 11, 20, 15, 30, 5, 123456)
    rows = [
        {
            "run_id": f"run-{i}",
            "as_of": dt.date(2026, 11, 20),
            "campaign": "thank_you",
            "step": "thanks",
            "customer_id": str(i),
            "anchor_id": "a",
            "channel": None if i % 2 else "email",
            "outcome": "sent",
            "reason": "sent",
            "detail": text,
            "idempotency_key": f"k{i}",
            "decided_at": at,
        }
        for i, text in enumerate(AWKWARD)
    ]
    with engine.begin() as conn:
        bulk.insert_many(conn, decisions, rows)
        bulk.insert_many(conn, decisions, [])
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(
                decisions.c.detail, decisions.c.channel, decisions.c.decided_at, decisions.c.as_of
            ).order_by(decisions.c.id)
        ).all()
    assert [r.detail for r in got] == AWKWARD
    assert [r.channel for r in got] == [r["channel"] for r in rows]
    assert {r.decided_at for r in got} == {at} and {r.as_of for r in got} == {dt.date(2026, 11, 20)}
