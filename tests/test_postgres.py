"""The pipeline against a PostgreSQL warehouse (state tables in the same database)."""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from loyalflow.deliver import ledger
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.state import ensure_schema
from tests.factories import Shop


def test_thank_you_on_postgres_twice_sends_once(settings: Settings, pg_url: str) -> None:
    shop = Shop(sa.create_engine(pg_url))
    buyers = [shop.customer() for _ in range(4)]
    for cid in buyers:
        shop.order(cid, dt.datetime(2026, 11, 20, 8))
    pg = settings.model_copy(update={"warehouse_url": pg_url})
    first = run(Runtime(pg), "thank_you", RunOptions(dt.date(2026, 11, 20), "pg-1"))
    second = run(Runtime(pg), "thank_you", RunOptions(dt.date(2026, 11, 20), "pg-2"))
    assert first == {"sent": 4} and second == {"already_sent": 4}
    lines = [json.loads(x) for f in Path(settings.outbox_dir).rglob("*.jsonl") for x in f.open()]
    assert sorted(m["customer_id"] for m in lines) == sorted(buyers)


def test_concurrent_claims_are_disjoint_on_postgres(pg_url: str) -> None:
    engine = sa.create_engine(pg_url, pool_size=8)
    ensure_schema(engine)
    rows = [
        {
            "idempotency_key": f"k{i}",
            "campaign": "c",
            "step": "s",
            "customer_id": f"C{i}",
            "anchor_id": "a",
            "channel": "email",
            "category": "marketing",
            "provider": "outbox",
            "run_id": "r",
            "as_of": dt.date(2026, 11, 20),
            "send_at": None,
        }
        for i in range(300)
    ]
    with ThreadPoolExecutor(4) as pool:
        won = list(pool.map(lambda _: ledger.claim(engine, rows), range(4)))
    assert sum(len(w) for w in won) == 300
    assert set().union(*won) == {r["idempotency_key"] for r in rows}
