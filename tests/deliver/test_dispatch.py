"""Messages a provider cannot schedule wait in the ledger and go out once due, never earlier, never twice."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from loyalflow.deliver.channels import Message, SendResult
from loyalflow.deliver.dispatch import dispatch
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.state import ledger
from tests.factories import Shop


class Recorder:
    """A provider that cannot schedule (like SNS): records what it is asked to send."""

    provider = "recorder"
    horizon = dt.timedelta(0)

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, messages: list[Message]) -> list[SendResult]:
        self.sent += messages
        return [SendResult(m.idempotency_key, "sent", f"id-{m.idempotency_key[:8]}") for m in messages]


def statuses(rt: Runtime) -> dict[str, str]:
    with rt.state.connect() as conn:
        return {k: s for k, s in conn.execute(sa.select(ledger.c.customer_id, ledger.c.status))}


def test_quiet_hours_sms_is_scheduled_then_dispatched_once(settings: Settings, shop: Shop) -> None:
    night = dt.datetime.combine(dt.date.today() + dt.timedelta(days=3), dt.time(23, 30))  # in the future
    stays, leaves = (
        shop.customer(email=None, phone=p, channels=("sms",), timezone="UTC")
        for p in ("+14155550101", "+14155550102")
    )
    for cid in (stays, leaves):
        shop.order(cid, night - dt.timedelta(hours=2))
    recorder = Recorder()
    rt = Runtime(settings, channels={"sms": recorder})
    opts = RunOptions(night.date(), "night", now=night)
    assert run(rt, "thank_you", opts) == {"scheduled": 2}
    assert recorder.sent == [] and set(statuses(rt).values()) == {"scheduled"}
    assert run(rt, "thank_you", RunOptions(night.date(), "rerun", now=night)) == {"already_sent": 2}

    opens = dt.datetime.combine(night.date() + dt.timedelta(days=1), dt.time(9))
    assert dispatch(rt, now=opens - dt.timedelta(hours=1)) == {}
    shop.consent(leaves, "sms", False, at=opens - dt.timedelta(minutes=30))  # opted out while waiting
    assert dispatch(rt, now=opens) == {"sent": 1, "cancelled": 1}
    assert [m.customer_id for m in recorder.sent] == [stays]
    assert "Reply STOP to opt out" in recorder.sent[0].text
    assert recorder.sent[0].send_at == opens
    assert statuses(rt) == {stays: "sent", leaves: "failed"}
    assert dispatch(rt, now=opens + dt.timedelta(hours=1)) == {}
    assert len(recorder.sent) == 1
