"""Test sends: real templates for real customers, only to the test addresses, never a customer send."""

from __future__ import annotations

import datetime as dt
import email
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from loyalflow.deliver.testsend import HEADER, Recipient, parse_recipients, send_tests
from loyalflow.errors import LoyalflowError
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.state import cap_reservations, decisions, ledger, referral_codes
from tests.conftest import ROOT
from tests.dagbag import load_dagbag
from tests.factories import Shop

AS_OF = dt.date(2026, 11, 20)
DAY = dt.datetime(2026, 11, 20, 9, 30)
STAFF = ["Marketing.Lead@Example.com", "+1 415 555 0100"]


def outbox(settings: Settings) -> list[dict]:
    return [json.loads(line) for f in sorted(Path(settings.outbox_dir).rglob("*.jsonl")) for line in f.open()]


def state_rows(rt: Runtime) -> dict[str, int]:
    with rt.state.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (ledger, decisions, cap_reservations, referral_codes)
        }


def test_recipients_are_validated_and_a_bad_one_is_named() -> None:
    assert parse_recipients(
        ["Marketing.Lead@Example.com", "+1 415 555 0100", "marketing.lead@example.com"]
    ) == [
        Recipient("email", "marketing.lead@example.com"),
        Recipient("sms", "+14155550100"),
    ]
    assert parse_recipients("a@example.com, b@example.com\n") == [
        Recipient("email", "a@example.com"),
        Recipient("email", "b@example.com"),
    ]
    assert parse_recipients(None) == [] and parse_recipients([]) == []
    with pytest.raises(LoyalflowError, match=r"test_recipients: 'anna@' is not a valid email address"):
        parse_recipients(["ok@example.com", "anna@"])
    with pytest.raises(LoyalflowError, match=r"'0171 555' is not a valid phone number in E.164 form"):
        parse_recipients(["0171 555"])


def test_only_the_test_addresses_get_marked_messages_and_no_state_is_written(
    settings: Settings, shop: Shop
) -> None:
    buyers = [shop.customer(first_name=name) for name in ("Maya", "Leo", "Ida")]
    for cid in buyers:
        shop.order(cid, DAY)
    rt = Runtime(settings)
    campaign = rt.campaign("thank_you")
    before = state_rows(rt)

    rows = send_tests(rt, campaign, parse_recipients(STAFF), RunOptions(AS_OF, "manual__test"))
    assert [(r["to"], r["channel"], r["status"]) for r in rows] == [
        ("marketing.lead@example.com", "email", "sent"),
        ("+14155550100", "sms", "sent"),
    ]
    sent = outbox(settings)
    assert [m["to"] for m in sent] == ["marketing.lead@example.com", "+14155550100"]
    mail, sms = sent
    assert mail["subject"].startswith("[TEST] ") and "thank you" in mail["subject"]
    assert mail["headers"][HEADER] == "true" and mail["headers"]["List-Unsubscribe"].startswith("<http")
    assert sms["text"].startswith("[TEST] ")
    for m in sent:
        assert m["test"] is True
        assert m["idempotency_key"].startswith("test-") and m["customer_id"].startswith("test-C")
        assert m["customer_id"].removeprefix("test-") in buyers  # rendered for a real customer
        assert m["campaign"] == "thank_you" and m["step"] == "thanks"
    eml = email.message_from_bytes(next(Path(settings.outbox_dir).rglob("*.eml")).read_bytes())
    assert eml[HEADER] == "true" and eml["Subject"].startswith("[TEST]")
    assert state_rows(rt) == before  # no ledger, decision, cap reservation or referral code

    # the customers' own messages are still due: the test took none of their keys
    assert run(rt, "thank_you", RunOptions(AS_OF, "real")) == {"sent": 3}
    real = [m for m in outbox(settings) if not m["idempotency_key"].startswith("test-")]
    assert sorted(m["customer_id"] for m in real) == sorted(buyers)
    assert not {m["to"] for m in real} & {"marketing.lead@example.com", "+14155550100"}


def test_a_dry_test_send_renders_but_sends_nothing(settings: Settings, shop: Shop) -> None:
    shop.order(shop.customer(), DAY)
    rt = Runtime(settings)
    rows = send_tests(
        rt,
        rt.campaign("thank_you"),
        parse_recipients(["a@example.com"]),
        RunOptions(AS_OF, "d", dry_run=True),
    )
    assert [r["status"] for r in rows] == ["would send"]
    assert outbox(settings) == []


def test_nobody_due_or_a_channel_the_campaign_lacks_is_a_clear_error(settings: Settings, shop: Shop) -> None:
    rt = Runtime(settings)
    with pytest.raises(LoyalflowError, match="the segment returns nobody on 2026-11-20"):
        send_tests(rt, rt.campaign("thank_you"), parse_recipients(["a@example.com"]), RunOptions(AS_OF, "x"))
    email_only = rt.campaign("thank_you").model_copy(update={"channels": ["email"]})
    with pytest.raises(LoyalflowError, match=r"sends on email, not sms \(\+14155550100\)"):
        send_tests(rt, email_only, parse_recipients(["+14155550100"]), RunOptions(AS_OF, "x"))


@pytest.mark.airflow
def test_test_send_through_the_dag_sets_no_customer_send(
    airflow_db: str, settings: Settings, shop: Shop
) -> None:
    buyers = [shop.customer() for _ in range(2)]
    for cid in buyers:
        shop.order(cid, DAY)
    dag = load_dagbag(ROOT / "dags").get_dag("thank_you")
    assert dag.params["test_recipients"] == []
    logical = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    done = dag.test(
        logical_date=logical, run_conf={"as_of": "2026-11-20", "test_recipients": ["qa@example.com"]}
    )
    assert str(done.state) == "success"
    assert [m["to"] for m in outbox(settings)] == ["qa@example.com"]
    assert state_rows(Runtime(settings))["loyalflow_ledger"] == 0

    bad = dag.test(logical_date=logical + dt.timedelta(days=1), run_conf={"test_recipients": ["qa@"]})
    assert str(bad.state) == "failed"
    assert len(outbox(settings)) == 1
