"""SMS STOP/START and complaints are consent changes: ledger rows in the same transaction as suppressions."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from loyalflow.decide import consent, suppressions
from loyalflow.runtime import Runtime
from loyalflow.settings import Settings
from loyalflow.state import consent as ledger
from loyalflow.state import delivery_events
from loyalflow.web import events
from tests.factories import Shop

PHONE = "+14155550123"


def rows(settings: Settings) -> list[tuple[str, str, bool, str, str]]:
    with Runtime(settings).state.connect() as conn:
        found = conn.execute(sa.select(ledger).order_by(ledger.c.id)).mappings().all()
    return [(r["customer_id"], r["channel"], r["opted_in"], r["source"], r["scope"]) for r in found]


def sms(text: str, event_id: str) -> bytes:
    return json.dumps([{"from": PHONE, "body": text, "id": event_id}]).encode()


def test_stop_and_start_append_sms_keyword_rows_once(settings: Settings, shop: Shop) -> None:
    cid = shop.customer(phone=PHONE, channels=("sms",))
    counts = events.ingest(settings, "sms", sms("Stop.", "in-1"))
    assert counts["suppressed_unsubscribed"] == 1 and counts["consent_sms_keyword"] == 1
    assert rows(settings) == [(cid, "sms", False, "sms_keyword", "all")]
    assert events.ingest(settings, "sms", sms("Stop.", "in-1")) == {"duplicate": 1}  # a replay
    assert len(rows(settings)) == 1
    rt = Runtime(settings)
    book = consent.effective(rt.warehouse, rt.state, [cid])
    assert book.latest(cid, "sms").source == "sms_keyword" and not book.latest(cid, "sms").opted_in
    assert events.ingest(settings, "sms", sms("start", "in-2"))["resubscribed"] == 1
    assert rows(settings)[-1] == (cid, "sms", True, "sms_keyword", "all")
    assert suppressions.list_(rt.state, "sms", PHONE) == []
    book = consent.effective(rt.warehouse, rt.state, [cid])
    assert book.latest(cid, "sms").opted_in


def test_a_stop_from_an_unknown_number_still_suppresses(settings: Settings, shop: Shop) -> None:
    counts = events.ingest(settings, "sms", sms("STOP", "in-3"))
    assert counts == {"stop": 1, "suppressed_unsubscribed": 1}  # nobody to attach a consent row to
    assert rows(settings) == []


def test_complaints_append_complaint_rows(settings: Settings, shop: Shop) -> None:
    cid = shop.customer()
    spam = [{"event": "spamreport", "email": f"{cid.lower()}@example.com", "sg_event_id": "e1",
             "timestamp": 1790000000, "customer_id": cid}]  # fmt: skip
    counts = events.ingest(settings, "sendgrid", json.dumps(spam).encode())
    assert counts["suppressed_complained"] == 1 and counts["consent_complaint"] == 1
    other = shop.customer()
    message = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": f"{other.lower()}@example.com"}]},
        "mail": {"messageId": "m1", "tags": {"customer_id": [other]}},
    }
    note = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "Message": json.dumps(message)}
    body = json.dumps([note])
    assert events.ingest(settings, "ses", body.encode())["consent_complaint"] == 1
    assert rows(settings) == [
        (cid, "email", False, "complaint", "all"),
        (other, "email", False, "complaint", "all"),
    ]
    bounce = [{"event": "bounce", "email": "x@example.com", "sg_event_id": "e2", "customer_id": cid}]
    assert "consent_complaint" not in events.ingest(settings, "sendgrid", json.dumps(bounce).encode())
    assert len(rows(settings)) == 2  # a bounce is not a consent change


def test_event_suppression_and_consent_row_are_one_transaction(
    settings: Settings, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop.customer(phone=PHONE, channels=("sms",))
    st = Runtime(settings).state

    def broken(*args: object, **kwargs: object) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk full"))

    with monkeypatch.context() as patch, pytest.raises(sa.exc.OperationalError):
        patch.setattr(consent, "record", broken)
        events.ingest(settings, "sms", sms("STOP", "in-9"))
    assert suppressions.list_(st, "sms", PHONE) == []  # rolled back with the consent row
    with st.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(delivery_events)).scalar() == 0
    assert events.ingest(settings, "sms", sms("STOP", "in-9"))["consent_sms_keyword"] == 1  # retried whole
    assert suppressions.list_(st, "sms", PHONE)[0]["reason"] == "unsubscribed"
    assert rows(settings)[0][3] == "sms_keyword"
