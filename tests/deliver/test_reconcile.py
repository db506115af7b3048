"""Reconciliation: unknown rows settled by provider events, released only after the event window."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from loyalflow.deliver import ledger
from loyalflow.deliver.reconcile import reconcile, record_delivery_events
from tests.deliver.test_ledger_claims import row
from tests.delivery_helpers import ledger_states

NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)


def event(key: str, event_type: str, provider: str = "sendgrid", n: int = 0) -> dict:
    return {
        "provider": provider,
        "event_id": f"{key}-{event_type}-{n}",
        "event_type": event_type,
        "idempotency_key": key,
        "provider_message_id": f"msg-{key}",
        "customer_id": key.upper(),
        "occurred_at": NOW,
    }


def seed(engine: sa.Engine, states: dict[str, tuple[str, str | None]]) -> None:
    ledger.claim(engine, [row(k) for k in states])
    ledger.record(engine, [(k, s, None, e) for k, (s, e) in states.items()])


def test_events_settle_unknown_rows(state: sa.Engine) -> None:
    seed(state, {"a": ("unknown", None), "b": ("unknown", None), "c": ("unknown", None), "d": ("sent", None)})
    added = record_delivery_events(
        state,
        [event("a", "delivered"), event("a", "open"), event("b", "dropped"), event("d", "delivered")],
    )
    assert added == 4
    assert record_delivery_events(state, [event("a", "delivered")]) == 0  # duplicates ignored
    counts = reconcile(state, event_window_seconds=3600)
    assert (counts["sent"], counts["failed"], counts["released"]) == (1, 1, 0)
    assert ledger_states(state) == {"a": "sent", "b": "failed", "c": "unknown", "d": "sent"}
    with state.connect() as conn:
        mid = conn.execute(
            sa.select(ledger.ledger.c.provider_message_id).where(ledger.ledger.c.idempotency_key == "a")
        )
        assert mid.scalar_one() == "msg-a"


def test_ses_events_carry_the_key_from_tags(state: sa.Engine) -> None:
    seed(state, {"s": ("unknown", None)})
    record_delivery_events(state, [event("s", "send", provider="ses")])
    assert reconcile(state, 3600)["sent"] == 1


def test_no_event_after_the_window_releases_for_a_later_run(state: sa.Engine) -> None:
    seed(state, {"c": ("unknown", None)})
    assert reconcile(state, 3600)["released"] == 0
    assert ledger.claim(state, [row("c", "r2")]) == set()  # never resent blindly inside the window
    assert reconcile(state, 3600, now=NOW + dt.timedelta(hours=2))["released"] == 1
    assert ledger.existing_keys(state, ["c"]) == set()
    assert ledger.claim(state, [row("c", "r3")]) == {"c"}


def test_retryable_failures_are_released_and_permanent_ones_kept(state: sa.Engine) -> None:
    seed(state, {"r": ("failed", "retryable: http 429"), "p": ("failed", "http 400: bad address")})
    assert reconcile(state, 3600)["retry_released"] == 1
    assert ledger_states(state) == {"r": "released", "p": "failed"}


def test_scoped_to_one_campaign(state: sa.Engine) -> None:
    seed(state, {"x": ("failed", "retryable: http 503")})
    assert reconcile(state, 0, campaign="other")["retry_released"] == 0
    assert reconcile(state, 0, campaign="thank_you")["retry_released"] == 1
