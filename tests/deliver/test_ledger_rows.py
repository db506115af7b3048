"""The ledger rows claim, take-over, record and mark_bundled leave behind (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from loyalflow.deliver import ledger
from loyalflow.state import ledger as table
from tests.delivery_helpers import AS_OF

SEND_AT = dt.datetime(2026, 11, 20, 15, 30, 0, 250000)


def row(key: str, run_id: str = "r1", provider: str = "sendgrid", send_at: dt.datetime | None = None) -> dict:
    return {
        "idempotency_key": key,
        "campaign": "thank_you",
        "step": "thanks",
        "customer_id": key.upper(),
        "anchor_id": "O1",
        "channel": "email",
        "category": "relationship",
        "provider": provider,
        "run_id": run_id,
        "as_of": AS_OF,
        "send_at": send_at,
    }


def _rows(engine: sa.Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.idempotency_key: r._asdict() for r in conn.execute(sa.select(table))}


def test_claim_record_take_over_and_bundle_store_every_field(state: sa.Engine) -> None:
    assert ledger.claim(state, [row("b", send_at=SEND_AT), row("a"), row("b", send_at=SEND_AT)]) == {"a", "b"}
    got = _rows(state)
    assert set(got) == {"a", "b"}
    b = got["b"]
    assert (b["status"], b["provider"], b["run_id"], b["send_at"], b["as_of"]) == (
        "claimed", "sendgrid", "r1", SEND_AT, AS_OF
    )  # fmt: skip
    assert b["claimed_at"] == b["updated_at"] and isinstance(b["claimed_at"], dt.datetime)
    assert b["error"] is None and b["provider_message_id"] is None and got["a"]["send_at"] is None

    ledger.record(state, [("a", "sent", "m-ä'1", None), ("b", "released", None, 'said "no"')])
    got = _rows(state)
    assert (got["a"]["status"], got["a"]["provider_message_id"], got["a"]["error"]) == ("sent", "m-ä'1", None)
    assert (got["b"]["status"], got["b"]["error"]) == ("released", 'said "no"')

    later = SEND_AT + dt.timedelta(days=1)
    again = [row("a", "r2"), row("b", "r2", "outbox", later), row("c", "r2")]
    assert ledger.claim(state, again) == {"b", "c"}
    got = _rows(state)
    b = got["b"]
    assert (b["status"], b["provider"], b["run_id"], b["send_at"], b["error"], b["provider_message_id"]) == (
        "claimed", "outbox", "r2", later, None, None
    )  # fmt: skip
    assert b["claimed_at"] == b["updated_at"] and b["claimed_at"] >= got["a"]["claimed_at"]
    assert got["a"]["run_id"] == "r1" and got["a"]["status"] == "sent"

    ledger.mark_bundled(state, [{**row("d", "r2"), "anchor_id": "O2"}, {**row("a", "r3"), "anchor_id": "O9"}])
    got = _rows(state)
    assert (got["d"]["status"], got["d"]["anchor_id"], got["d"]["error"]) == ("bundled", "O2", None)
    assert (got["a"]["status"], got["a"]["anchor_id"]) == ("sent", "O1")  # an existing key is left alone
    ledger.record(state, [])
    ledger.mark_bundled(state, [])
    assert ledger.claim(state, []) == set()


def test_statuses_of_more_keys_than_one_query_takes(state: sa.Engine) -> None:
    keys = [f"k{i:05d}" for i in range(2 * 900 + 7)]
    assert ledger.claim(state, [row(k) for k in keys[::2]]) == set(keys[::2])
    ledger.record(state, [(k, "released", None, None) for k in keys[::4]])
    with state.connect() as conn:
        got = ledger.statuses(conn, keys)
        assert ledger.statuses(conn, []) == {}
    assert got == {k: "released" if i % 4 == 0 else "claimed" for i, k in enumerate(keys) if i % 2 == 0}
    assert ledger.claim(state, [row(k, "r2") for k in keys]) == set(keys[1::2]) | set(keys[::4])
