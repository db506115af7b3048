"""Bulk writes: PostgreSQL COPY (direct or staged) and SQLite executemany store exactly the values given."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from loyalflow.deliver import ledger
from loyalflow.state import bulk, decisions, ensure_schema
from loyalflow.state import ledger as table
from tests.deliver.test_ledger_rows import row

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


def test_claim_and_record_stage_rows_where_the_role_may(pg_url: str, no_temp_url: str) -> None:
    """Staged (COPY into a temporary table) where allowed; statements over bound rows where not."""
    for url, staged in ((pg_url, True), (no_temp_url, False)):
        engine = sa.create_engine(url, poolclass=sa.pool.StaticPool)  # one connection: its temp tables
        ensure_schema(engine)
        with engine.connect() as conn:
            assert bulk.can_stage(conn) is staged, url
        assert ledger.claim(engine, [row("b"), row("a"), row("b")]) == {"a", "b"}
        assert ledger.claim(engine, [row("a"), row("c")]) == {"c"}
        ledger.record(
            engine, [("a", "unknown", None, "x"), ("b", "sent", "m-b", None), ("a", "sent", "m-a", None)]
        )
        with engine.connect() as conn:
            got = conn.execute(
                sa.select(
                    table.c.idempotency_key,
                    table.c.status,
                    table.c.provider_message_id,
                    table.c.error,
                ).order_by(table.c.idempotency_key)
            ).all()
            assert sa.inspect(conn).get_temp_table_names() == []  # the stage went with its transaction
        assert [tuple(r) for r in got] == [
            ("a", "sent", "m-a", None),
            ("b", "sent", "m-b", None),
            ("c", "claimed", None, None),
        ], url
        engine.dispose()


@pytest.mark.parametrize(
    "values",
    [
        ["a", None, "a", 'q"uote', None],
        [True, 1, 1.0, False, 0, None],
        [dt.date(2026, 11, 20), dt.datetime(2026, 11, 20), dt.date(2026, 11, 20)],
        [{"a": 1}, None, "x"],
    ],
)
def test_csv_fields_are_each_value_formatted_on_its_own(values: list[object]) -> None:
    """Formatting once per distinct value must not merge values that are equal but written differently."""
    text = bulk._csv([{"v": v} for v in values], ["v"]).getvalue()
    assert text.splitlines() == [bulk._field(v) for v in values]
