"""Consent, suppressions, caps, quiet hours, signed links, provider events and log hygiene."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from loyalflow.compose.tokens import LinkToken, sign
from loyalflow.decide import caps, suppressions
from loyalflow.decide.eligibility import sms_send_time
from loyalflow.ops.cli import app as cli
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings, get_settings
from loyalflow.state import consent as consent_ledger
from loyalflow.state import delivery_events, responses
from loyalflow.state import suppressions as supp_table
from loyalflow.web import events
from loyalflow.web.preferences import app as web
from tests.compliance_helpers import outbox, promo_project
from tests.factories import PREFS, Shop

DAY = dt.datetime(2026, 11, 20, 14, 30)
PHONE = "+14155550123"


def go(settings: Settings, campaign: str, now: dt.datetime = DAY, dry_run: bool = False) -> dict[str, int]:
    """One pipeline run of ``campaign`` at ``now``."""
    opts = RunOptions(now.date(), f"t-{uuid.uuid4().hex[:8]}", now=now, dry_run=dry_run)
    return run(Runtime(settings), campaign, opts)


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def state(settings: Settings) -> sa.Engine:
    return Runtime(settings).state


@pytest.fixture
def promo(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose project has marketing campaigns ``promo_hi`` (priority 80) and ``promo_lo`` (20)."""
    home = promo_project(tmp_path / "project", {"promo_hi": 80, "promo_lo": 20})
    monkeypatch.setenv("LOYALFLOW_HOME", str(home))
    get_settings.cache_clear()
    return Settings()


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(web)


def token(settings: Settings, cid: str, channel: str = "email", campaign: str | None = "thank_you") -> str:
    return sign(settings.secret_key, LinkToken(cid, channel, campaign))


# --- signed links and the preference centre ---------------------------------------------------------


def test_forged_or_altered_token_is_refused_and_changes_nothing(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    cid = shop.customer(phone=PHONE, channels=("email", "sms"))
    good = token(settings, cid)
    other_secret = sign("not-the-secret", LinkToken(cid, "email", "thank_you"))
    altered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    payload_swap = (
        sign(settings.secret_key, LinkToken("C99999", "email")).split(".")[0] + "." + good.split(".")[1]
    )
    st = state(settings)
    before = (count(shop.engine, PREFS), count(st, supp_table), count(st, responses))
    for bad in (altered, other_secret, payload_swap, "garbage", good + "x"):
        assert client.get(f"/preferences/{bad}").status_code == 400
        assert client.post(f"/preferences/{bad}", data={"email": "on"}).status_code == 400
        assert client.get(f"/unsubscribe/{bad}").status_code == 400
        assert client.post(f"/unsubscribe/{bad}").status_code == 400
        assert client.get(f"/respond/{bad}/positive").status_code == 400
        assert client.post(f"/respond/{bad}/positive").status_code == 400
    assert (count(shop.engine, PREFS), count(st, supp_table), count(st, responses)) == before
    assert client.get(f"/preferences/{good}").status_code == 200


def test_one_click_unsubscribe_then_next_run_falls_back_to_sms(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    cid = shop.customer(phone=PHONE, channels=("email", "sms"))
    client.cookies.clear()
    response = client.post(
        f"/unsubscribe/{token(settings, cid)}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and "set-cookie" not in response.headers
    rows = suppressions.list_(state(settings), "email", f"{cid.lower()}@example.com")
    assert [(r["reason"], r["scope"]) for r in rows] == [("unsubscribed", "all")]
    shop.order(cid, DAY)
    go(settings, "thank_you")
    (msg,) = outbox(settings.outbox_dir)
    assert msg["channel"] == "sms"


def test_preference_form_saves_consent_rows_and_suppression(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    cid = shop.customer(phone=PHONE, channels=("email",))
    page = client.get(f"/preferences/{token(settings, cid)}")
    assert "checked" in page.text and "pref-sms" in page.text
    saved = client.post(f"/preferences/{token(settings, cid)}", data={"sms": "on"})
    assert saved.status_code == 200 and "saved" in saved.text
    with state(settings).connect() as conn:  # loyalflow's consent ledger; the warehouse is never written
        rows = conn.execute(sa.select(consent_ledger).where(consent_ledger.c.source == "preference_centre"))
        assert {(r.channel, r.opted_in) for r in rows} == {("email", False), ("sms", True)}
    with shop.engine.connect() as conn:
        assert not conn.execute(sa.select(PREFS).where(PREFS.c.source == "preference_centre")).first()
    client.post(f"/preferences/{token(settings, cid)}", data={"email": "on", "sms": "on"})
    assert suppressions.list_(state(settings), "email", f"{cid.lower()}@example.com") == []


def test_respond_records_answers_and_snoozes(settings: Settings, shop: Shop, client: TestClient) -> None:
    cid = shop.customer()
    page = client.get(f"/respond/{token(settings, cid)}/later")  # a link scanner's GET records nothing
    assert page.status_code == 200 and 'method="post"' in page.text and count(state(settings), responses) == 0
    assert client.post(f"/respond/{token(settings, cid)}/later").status_code == 200
    assert client.post(f"/respond/{token(settings, cid)}/later").status_code == 200  # counted once a day
    assert client.post(f"/respond/{token(settings, cid)}/maybe").status_code == 400
    assert client.get(f"/respond/{token(settings, cid)}/maybe").status_code == 400
    with state(settings).connect() as conn:
        rows = conn.execute(sa.select(responses)).mappings().all()
    assert len(rows) == 1 and rows[0]["answer"] == "later" and rows[0]["campaign"] == "thank_you"
    assert rows[0]["snooze_until"] >= dt.date.today() + dt.timedelta(days=settings.snooze_days)


# --- provider events -------------------------------------------------------------------------------


def _p256() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, base64.b64encode(der).decode()


def _sign(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def sendgrid_body(cid: str = "C00001") -> bytes:
    base = {"email": f"{cid.lower()}@example.com", "timestamp": 1795000000, "customer_id": cid}
    return json.dumps(
        [
            {
                **base,
                "event": "delivered",
                "sg_event_id": "ev-1",
                "sg_message_id": "m1",
                "idempotency_key": "k1",
            },
            {**base, "event": "open", "sg_event_id": "ev-2", "sg_message_id": "m1", "idempotency_key": "k1"},
            {**base, "event": "bounce", "type": "bounce", "sg_event_id": "ev-3", "sg_message_id": "m1"},
        ]
    ).encode()


def test_sendgrid_webhook_signature_is_verified(
    settings: Settings, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, public = _p256()
    monkeypatch.setenv("LOYALFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY", public)
    get_settings.cache_clear()
    client = TestClient(web)
    body, ts = sendgrid_body(), "1795000000"
    good = _sign(key, ts, body)
    assert events.verify_sendgrid(public, good, ts, body)
    assert not events.verify_sendgrid(public, good, "1795000001", body)
    headers = {events.SIGNATURE_HEADER: good, events.TIMESTAMP_HEADER: ts}
    tampered = body.replace(b"bounce", b"bounce ")
    assert client.post("/loyalflow/webhooks/sendgrid", content=body, headers=headers).status_code == 404
    assert client.post("/webhooks/sendgrid", content=tampered, headers=headers).status_code == 403
    assert client.post("/webhooks/sendgrid", content=body).status_code == 403
    other, _ = _p256()
    forged = {**headers, events.SIGNATURE_HEADER: _sign(other, ts, body)}
    assert client.post("/webhooks/sendgrid", content=body, headers=forged).status_code == 403
    assert count(state(settings), delivery_events) == 0
    ok = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert ok.status_code == 200 and ok.json()["suppressed_bounced"] == 1
    assert count(state(settings), delivery_events) == 3


def test_sendgrid_events_dedupe_on_sg_event_id(settings: Settings) -> None:
    first = events.ingest(settings, "sendgrid", sendgrid_body())
    again = events.ingest(settings, "sendgrid", sendgrid_body())
    assert first == {"delivered": 1, "open": 1, "bounce": 1, "suppressed_bounced": 1}
    assert again == {"duplicate": 3}
    with state(settings).connect() as conn:
        rows = conn.execute(sa.select(delivery_events)).mappings().all()
    assert {(r["event_type"], r["idempotency_key"]) for r in rows} >= {("delivered", "k1"), ("open", "k1")}
    blocked = json.dumps(
        [{"event": "bounce", "type": "blocked", "email": "x@example.com", "sg_event_id": "b"}]
    )
    events.ingest(settings, "sendgrid", blocked.encode())
    assert suppressions.list_(state(settings), "email", "x@example.com") == []
    unsub = [
        {"event": e, "email": f"{e}@example.com", "sg_event_id": e} for e in ("unsubscribe", "spamreport")
    ]
    events.ingest(settings, "sendgrid", json.dumps(unsub).encode())
    assert suppressions.list_(state(settings), "email", "spamreport@example.com")[0]["reason"] == "complained"


def ses(kind: str, address: str, bounce_type: str = "Permanent") -> dict:
    detail_key = kind.lower()
    detail = {"feedbackId": f"fb-{kind}-{bounce_type}", "timestamp": "2026-11-20T10:00:00.000Z"}
    if kind == "Bounce":
        detail |= {"bounceType": bounce_type, "bouncedRecipients": [{"emailAddress": address}]}
    else:
        detail |= {"complainedRecipients": [{"emailAddress": address}]}
    message = {
        "notificationType": kind,
        detail_key: detail,
        "mail": {"messageId": "ses-1", "destination": [address], "tags": {"idempotency_key": ["k9"]}},
    }
    return {"Type": "Notification", "MessageId": str(uuid.uuid4()), "Message": json.dumps(message)}


def test_ses_permanent_bounce_and_complaint_suppress(settings: Settings) -> None:
    body = json.dumps(
        [
            ses("Bounce", "hard@example.com"),
            ses("Bounce", "soft@example.com", "Transient"),
            ses("Complaint", "angry@example.com"),
            {"Type": "SubscriptionConfirmation", "SubscribeURL": "https://example.invalid"},
        ]
    ).encode()
    counts = events.ingest(settings, "ses", body)
    assert counts["suppressed_bounced"] == 1 and counts["suppressed_complained"] == 1
    st = state(settings)
    assert suppressions.list_(st, "email", "hard@example.com")[0]["reason"] == "bounced"
    assert suppressions.list_(st, "email", "soft@example.com") == []
    assert suppressions.list_(st, "email", "angry@example.com")[0]["reason"] == "complained"
    assert events.ingest(settings, "ses", body) == {"duplicate": 3}


@pytest.mark.parametrize(
    "text",
    ["STOP", "stop", "Stop.", " opt   out ", "OPT-OUT", "Quit", "END", "revoke", "Cancel!", "UnSubscribe"],
)
def test_sms_stop_variants_suppress_and_start_lifts(settings: Settings, shop: Shop, text: str) -> None:
    cid = shop.customer(phone=PHONE, channels=("sms",))
    stop = [{"from": PHONE, "body": text, "id": f"in-{text}"}]
    assert events.ingest(settings, "sms", json.dumps(stop).encode())["suppressed_unsubscribed"] == 1
    (row,) = suppressions.list_(state(settings), "sms", PHONE)
    assert row["customer_id"] == cid and row["reason"] == "unsubscribed"
    shop.order(cid, DAY)
    assert go(settings, "thank_you").get("suppressed") == 1
    start = [{"originationNumber": PHONE, "messageBody": "start", "inboundMessageId": "in-start"}]
    assert events.ingest(settings, "sms", json.dumps(start).encode())["resubscribed"] == 1
    assert suppressions.list_(state(settings), "sms", PHONE) == []


def test_sms_stop_not_a_keyword_inside_a_sentence(settings: Settings) -> None:
    assert events.keyword(" opt   out ") == "OPTOUT" and events.keyword("Stop.") == "STOP"
    body = json.dumps([{"from": PHONE, "body": "can't stop smiling", "id": "x"}]).encode()
    assert events.ingest(settings, "sms", body) == {"reply": 1}


def test_ingest_cli_and_suppress_cli(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "sms.json"
    path.write_text(json.dumps({"from": PHONE, "body": "STOP", "id": "cli-1"}))
    result = CliRunner().invoke(cli, ["ingest", "sms", str(path)])
    assert result.exit_code == 0 and "suppressed_unsubscribed=1" in result.output
    assert PHONE not in result.output
    result = CliRunner().invoke(cli, ["ingest", "nope", str(path)])
    assert result.exit_code == 1 and "unknown provider" in result.output
    result = CliRunner().invoke(cli, ["suppress", "email", "Someone@Example.com", "--reason", "manual"])
    assert result.exit_code == 0
    assert suppressions.list_(state(settings), "email", "someone@example.com")[0]["reason"] == "manual"


def test_suppression_survives_customer_reimport(settings: Settings, shop: Shop) -> None:
    cid = shop.customer(email="Guest@Example.com")
    suppressions.add(state(settings), "email", "guest@example.com", "bounced", source="test")
    with shop.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM customers WHERE customer_id = :c"), {"c": cid})
    again = shop.customer(email="guest@EXAMPLE.com")
    shop.order(again, DAY)
    assert go(settings, "thank_you") == {"suppressed": 1}


# --- caps, priority and quiet hours ---------------------------------------------------------------


def test_marketing_caps_per_day_and_week(promo: Settings, shop: Shop) -> None:
    cid = shop.customer()
    assert go(promo, "promo_lo") == {"sent": 1}
    assert go(promo, "promo_hi") == {"frequency_cap": 1}  # already sent today: not preemptible
    assert go(promo, "promo_hi", DAY + dt.timedelta(days=1)) == {"sent": 1}
    assert go(promo, "promo_hi", DAY + dt.timedelta(days=2)) == {"frequency_cap": 1}  # 2 per 7 days
    assert go(promo, "promo_hi", DAY + dt.timedelta(days=7)) == {"sent": 1}
    shop.order(cid, DAY + dt.timedelta(days=7))
    assert go(promo, "thank_you", DAY + dt.timedelta(days=7)) == {"sent": 1}  # relationship: exempt
    result = CliRunner().invoke(cli, ["explain", cid, "--campaign", "promo_hi"])
    assert "frequency_cap" in result.output and "cap 1/day" in result.output


def test_higher_priority_preempts_a_held_reservation(promo: Settings) -> None:
    st, day = state(promo), DAY.date()
    args = {"customer_id": "C1", "day": day, "per_day": 1, "per_week": 2}
    assert caps.reserve(st, key="lo", campaign="promo_lo", priority=20, **args) is None
    assert caps.reserve(st, key="hi", campaign="promo_hi", priority=80, **args) is None
    assert caps.confirm(st, ["lo"]) == set()
    assert "preempted by promo_hi" in caps.preempted_by(st, "lo")
    denied = caps.reserve(st, key="lo2", campaign="promo_lo", priority=20, **args)
    assert denied and "promo_hi" in denied
    assert caps.confirm(st, ["hi"]) == {"hi"}
    assert caps.reserve(st, key="top", campaign="vip", priority=99, **args)  # sending: no preemption


def test_sms_quiet_hours_defer_and_never_drop(settings: Settings, shop: Shop) -> None:
    cid = shop.customer(phone=PHONE, channels=("sms",), timezone="America/Los_Angeles")
    go(settings, "thank_you", DAY - dt.timedelta(days=1))  # the campaign runs since the day before
    shop.order(cid, DAY)
    night = dt.datetime(2026, 11, 21, 5, 0)  # 21:00 in Los Angeles: the next UTC day catches up
    assert go(settings, "thank_you", night) == {"sent": 1}
    (msg,) = outbox(settings.outbox_dir)
    assert msg["send_at"] == "2026-11-21T17:00:00Z"  # 09:00 PST the next morning
    assert sms_send_time(dt.datetime(2026, 11, 21, 18), "America/Los_Angeles", "UTC") == dt.datetime(
        2026, 11, 21, 18
    )
    assert sms_send_time(dt.datetime(2026, 11, 21, 8, 59), None, "UTC") == dt.datetime(2026, 11, 21, 9)
    result = CliRunner().invoke(cli, ["explain", cid])
    assert "deferred by sms send window" in result.output and "opted in" in result.output


def test_email_send_window_setting(settings: Settings, shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOYALFLOW_EMAIL_WINDOW", "08:00-21:00")
    cid = shop.customer(timezone="Europe/Paris")
    shop.order(cid, DAY)
    go(Settings(), "thank_you", dt.datetime(2026, 11, 20, 22, 0))  # 23:00 in Paris
    (msg,) = outbox(settings.outbox_dir)
    assert msg["send_at"] == "2026-11-21T07:00:00Z"


def test_explain_shows_consent_evidence(settings: Settings, shop: Shop) -> None:
    cid = shop.customer(channels=())
    shop.consent(cid, "email", True, at=dt.datetime(2025, 3, 1))
    shop.consent(cid, "email", False, at=dt.datetime(2026, 1, 1))
    shop.order(cid, DAY)
    go(settings, "thank_you")
    result = CliRunner().invoke(cli, ["explain", cid, "--campaign", "thank_you"])
    assert result.exit_code == 0, result.output
    assert "no_consent" in result.output and "opted out" in result.output
    assert "consent (channel_preferences)" in result.output and "2025-03-01" in result.output
    assert "@example.com" not in result.output


# --- logs -----------------------------------------------------------------------------------------

EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
PHONE_RE = re.compile(r"\+\d{8,15}")


def test_logs_hold_no_email_address_or_phone_number(
    settings: Settings, shop: Shop, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a = shop.customer(phone=PHONE, channels=("email", "sms"))
    b = shop.customer(phone="+442071838750", channels=("sms",), timezone="Europe/London")
    c = shop.customer(email="not-an-address", channels=("email",))
    for cid in (a, b, c):
        shop.order(cid, DAY)
    go(settings, "thank_you")
    events.ingest(settings, "sendgrid", sendgrid_body(a))
    events.ingest(settings, "ses", json.dumps([ses("Complaint", "c00001@example.com")]).encode())
    events.ingest(
        settings, "sms", json.dumps([{"from": "+442071838750", "body": "STOP", "id": "s"}]).encode()
    )
    client.post(f"/unsubscribe/{token(settings, a)}")
    go(settings, "thank_you", DAY + dt.timedelta(hours=1))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "expected some log records"
    assert not EMAIL_RE.search(text), EMAIL_RE.findall(text)
    assert not PHONE_RE.search(text), PHONE_RE.findall(text)
    assert "not-an-address" not in text


def test_ingest_dag_is_thin_and_applies_dropped_files(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loyalflow.airflow.ingest import build_ingest_dag, ingest_folder

    dag = build_ingest_dag()
    assert set(dag.task_ids) == {"ingest_sendgrid", "ingest_ses", "ingest_sms"}
    assert "loyalflow" in dag.tags
    assert all(t.owner == "marketing-ops" and t.retries == 2 for t in dag.tasks)
    monkeypatch.setenv("LOYALFLOW_EVENTS_DIR", str(tmp_path / "events"))
    get_settings.cache_clear()
    folder = tmp_path / "events" / "sms"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text(json.dumps([{"from": PHONE, "body": "stop", "id": "f1"}]))
    assert ingest_folder("sms") == {"stop": 1, "suppressed_unsubscribed": 1}
    assert (folder / "done" / "a.json").exists() and ingest_folder("sms") == {}


def test_consent_recorded_after_the_send_moment_does_not_count(settings: Settings, shop: Shop) -> None:
    cid = shop.customer(channels=())
    shop.consent(cid, "email", True, at=DAY + dt.timedelta(hours=2))
    shop.order(cid, DAY)
    assert go(settings, "thank_you") == {"no_consent": 1}
    assert go(settings, "thank_you", DAY + dt.timedelta(hours=3)) == {"sent": 1}
    assert "serve" in CliRunner().invoke(cli, ["--help"]).output
