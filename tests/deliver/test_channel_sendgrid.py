"""SendGrid through the hook and channel, against the stand-in over a real loopback socket."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from loyalflow.deliver.channels import channel_for
from loyalflow.deliver.channels.delivery import TokenBucket, wait_hint
from loyalflow.deliver.channels.sendgrid import SendGridChannel, mail_payload
from loyalflow.deliver.reconcile import reconcile, record_delivery_events
from loyalflow.hooks import SendGridHook
from loyalflow.settings import Settings
from tests.delivery_helpers import (
    buyers,
    closed_port,
    ledger_states,
    message,
    recording_sleep,
    run_thank_you,
    sendgrid_standin,
    set_connection,
    use_provider,
)
from tests.factories import Shop
from tools.sendgrid_standin import SendGridStandin


@pytest.fixture
def sg(monkeypatch: pytest.MonkeyPatch) -> Iterator[SendGridStandin]:
    with sendgrid_standin(monkeypatch) as standin:
        yield standin


def channel(**kwargs: object) -> SendGridChannel:
    options: dict = {"rate_per_sec": 0, "concurrency": 4, "max_attempts": 4, **kwargs}
    return SendGridChannel(**options)


def test_hook_reads_api_key_and_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "sendgrid_default", conn_type="http", password="SG.k")
    assert SendGridHook().get_conn() == ("SG.k", "https://api.sendgrid.com")
    set_connection(monkeypatch, "sendgrid_eu", conn_type="http", password="SG.k", host="api.eu.sendgrid.com")
    assert SendGridHook("sendgrid_eu").get_conn() == ("SG.k", "https://api.eu.sendgrid.com")


def test_payload_carries_key_categories_headers_and_unsubscribe_group() -> None:
    now = dt.datetime(2026, 11, 24, 10, 0)
    body = mail_payload(message(1, send_at=now + dt.timedelta(hours=5)), asm_group_id=42, now=now)
    assert body["custom_args"] == {
        "idempotency_key": "key-00001",
        "campaign": "thank_you",
        "step": "thanks",
        "customer_id": "C00001",
    }
    assert sorted(body["categories"]) == ["thank_you", "thanks"]
    assert body["asm"] == {"group_id": 42}
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["send_at"] == int((now + dt.timedelta(hours=5)).replace(tzinfo=dt.UTC).timestamp())
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert "send_at" not in mail_payload(message(1, send_at=now), now=now)


def test_sends_each_message_once_over_pooled_connections(sg: SendGridStandin) -> None:
    results = channel().send([message(i) for i in range(40)])
    assert {r.status for r in results} == {"sent"} and all(r.provider_message_id for r in results)
    assert sg.count_by_key() == {f"key-{i:05d}": 1 for i in range(40)}
    assert sg.stats()["connections"] <= 4  # one keep-alive connection per worker thread
    record = sg.accepted[0]
    assert record["headers"]["List-Unsubscribe"].startswith("<https://")
    assert record["custom_args"]["campaign"] == "thank_you"


def test_send_at_within_72h_is_scheduled_and_beyond_is_kept(sg: SendGridStandin) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    soon, later = (
        message(1, send_at=now + dt.timedelta(hours=24)),
        message(2, send_at=now + dt.timedelta(days=5)),
    )
    results = {r.idempotency_key: r for r in channel().send([soon, later])}
    assert results["key-00001"].status == "sent"
    assert sg.accepted[0]["send_at"] > now.replace(tzinfo=dt.UTC).timestamp()
    assert results["key-00002"].status == "failed"
    assert (results["key-00002"].error or "").startswith("retryable:")
    assert "key-00002" not in sg.count_by_key()


def test_429_is_retried_after_retry_after(sg: SendGridStandin) -> None:
    sg.set_faults(rate_limit_every=2, retry_after=1)
    waits: list[float] = []
    results = channel(concurrency=1, sleep=recording_sleep(waits)).send([message(1), message(2)])
    assert [r.status for r in results] == ["sent", "sent"]
    assert sg.stats()["responses"]["429"] == 1
    assert max(waits) >= 0.99  # Retry-After: 1 honoured
    assert sg.duplicates() == 0


def test_503_is_retried_but_500_is_not(sg: SendGridStandin) -> None:
    sg.set_faults(unavailable_every=2, retry_after=1)
    results = channel(concurrency=1).send([message(1), message(2)])
    assert [r.status for r in results] == ["sent", "sent"]
    assert sg.stats()["responses"]["503"] == 1
    sg.set_faults(clear=True, server_error_every=1)
    (result,) = channel().send([message(3)])
    assert result.status == "failed" and "http 500" in (result.error or "")
    assert not (result.error or "").startswith("retryable:")
    assert sg.stats()["responses"]["500"] == 1  # not retried


def test_exhausted_retries_fail_as_retryable(sg: SendGridStandin) -> None:
    sg.set_faults(unavailable_every=1, retry_after=1)
    (result,) = channel(max_attempts=2, sleep=lambda s: None).send([message(1)])
    assert result.status == "failed" and (result.error or "").startswith("retryable:")
    assert sg.stats()["responses"]["503"] == 2


def test_refused_connection_is_retryable_and_a_drop_after_accept_is_unknown(
    sg: SendGridStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    sg.set_faults(drop_after_accept_every=1)
    (dropped,) = channel().send([message(1)])
    assert dropped.status == "unknown"
    assert sg.count_by_key() == {"key-00001": 1}
    set_connection(
        monkeypatch, "sendgrid_default", password="SG.test", host=f"http://127.0.0.1:{closed_port()}"
    )
    (refused,) = channel(max_attempts=2, sleep=lambda s: None).send([message(2)])
    assert refused.status == "failed" and (refused.error or "").startswith("retryable: connection refused")


def test_wait_hint_reads_retry_after_and_rate_limit_reset() -> None:
    assert wait_hint({"Retry-After": "3"}, now=100.0) == 3.0
    assert wait_hint({"X-RateLimit-Reset": "107"}, now=100.0) == 7.0
    assert wait_hint({"retry-after": "2", "x-ratelimit-reset": "101"}, now=100.0) == 2.0
    assert wait_hint({}, now=100.0) is None


def test_token_bucket_spaces_requests() -> None:
    clock = [0.0]
    waits: list[float] = []
    bucket = TokenBucket(10, burst=1, clock=lambda: clock[0])

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    for _ in range(5):
        bucket.acquire(sleep)
    assert clock[0] == pytest.approx(0.4)
    bucket.pause(2.0)
    bucket.acquire(sleep)
    assert clock[0] == pytest.approx(2.4)


def test_pipeline_sends_through_sendgrid_once(
    settings: Settings, shop: Shop, sg: SendGridStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use_provider(monkeypatch, email_provider="sendgrid", sendgrid_asm_group_id="7")
    assert channel_for("email", settings).provider == "sendgrid"
    buyers(shop, 6)
    assert run_thank_you(settings).get("sent") == 6
    assert run_thank_you(settings).get("already_sent") == 6
    assert len(sg.count_by_key()) == 6 and sg.duplicates() == 0
    assert {r["to"][0] for r in sg.accepted} == {f"c{i:05d}@example.com" for i in range(1, 7)}


def test_dropped_after_accept_is_unknown_until_an_event_settles_it(
    settings: Settings, shop: Shop, sg: SendGridStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use_provider(monkeypatch, email_provider="sendgrid")
    buyers(shop, 3)
    sg.set_faults(drop_after_accept_every=2)
    totals = run_thank_you(settings)
    assert totals.get("unknown") == 1 and totals.get("sent") == 2
    engine = sa.create_engine(settings.warehouse_url)
    (key,) = [k for k, s in ledger_states(engine).items() if s == "unknown"]
    assert run_thank_you(settings).get("already_sent") == 3  # in doubt: never resent blindly
    rec = next(r for r in sg.accepted if r["custom_args"]["idempotency_key"] == key)
    record_delivery_events(
        engine,
        [
            {
                "provider": "sendgrid",
                "event_id": f"{rec['message_id']}-processed",
                "event_type": "processed",
                "idempotency_key": key,
                "provider_message_id": rec["message_id"],
                "customer_id": rec["custom_args"]["customer_id"],
                "occurred_at": dt.datetime(2026, 11, 24),
            }
        ],
    )
    assert reconcile(engine, event_window_seconds=3600)["sent"] == 1
    assert set(ledger_states(engine).values()) == {"sent"}
    run_thank_you(settings)
    assert sg.duplicates() == 0 and len(sg.count_by_key()) == 3
