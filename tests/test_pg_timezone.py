"""PostgreSQL sessions read loyalflow's naive UTC bounds in UTC, whatever the session's default zone."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from loyalflow.warehouse import engine_for


def test_a_new_york_session_still_counts_days_in_utc(pg_url: str) -> None:
    url = pg_url + "%20-ctimezone%3DAmerica/New_York"  # the role's or server's default zone
    raw = sa.create_engine(url)
    with raw.begin() as conn:
        assert conn.execute(sa.text("SHOW TIME ZONE")).scalar() == "America/New_York"
        conn.execute(sa.text("CREATE TABLE orders_tz (order_id int, ordered_at timestamptz)"))
        conn.execute(sa.text("INSERT INTO orders_tz VALUES (1, '2026-11-20 03:00:00+00')"))
    raw.dispose()
    engine = engine_for(url)
    day_start, day_end = dt.datetime(2026, 11, 20), dt.datetime(2026, 11, 21)  # naive UTC, as loyalflow binds
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW TIME ZONE")).scalar() == "UTC"
        found = (
            conn.execute(
                sa.text("SELECT order_id FROM orders_tz WHERE ordered_at >= :s AND ordered_at < :e"),
                {"s": day_start, "e": day_end},
            )
            .scalars()
            .all()
        )
        conn.rollback()
        assert conn.execute(sa.text("SHOW TIME ZONE")).scalar() == "UTC"  # a rollback keeps the setting
    assert found == [1]
    engine.dispose()
