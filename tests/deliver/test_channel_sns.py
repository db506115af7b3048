"""Amazon SNS SMS through AwsBaseHook against a moto server on loopback, and the opted-out sync."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from loyalflow.deliver.channels.aws import SnsChannel, sync_sms_opt_outs
from loyalflow.settings import Settings
from loyalflow.state import ensure_schema, suppressions
from tests.delivery_helpers import buyers, capture_calls, message, moto_server, run_thank_you, use_provider
from tests.factories import Shop


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with moto_server(monkeypatch) as url:
        yield url


def published() -> dict[str, tuple[str, str]]:
    from moto.sns.models import sns_backends

    return dict(sns_backends["123456789012"]["us-east-1"].sms_messages)


def sms(i: int, **overrides: object) -> object:
    return message(i, channel="sms", to=f"+1415555{i:04d}", subject=None, html=None, headers={}, **overrides)


def test_publishes_one_number_per_call_with_sms_type_and_sender(moto: str) -> None:
    channel = SnsChannel(sender_id="HarborPine", rate_per_sec=0, concurrency=2)
    calls = capture_calls(channel.client, "Publish")
    results = channel.send([sms(1), sms(2, category="marketing")])
    assert {r.status for r in results} == {"sent"}
    assert sorted(p for p, _ in published().values()) == ["+14155550001", "+14155550002"]
    types = {c["PhoneNumber"]: c["MessageAttributes"]["AWS.SNS.SMS.SMSType"]["StringValue"] for c in calls}
    assert types == {"+14155550001": "Transactional", "+14155550002": "Promotional"}
    assert calls[0]["MessageAttributes"]["AWS.SNS.SMS.SenderID"]["StringValue"] == "HarborPine"


def test_deferred_sms_is_kept_for_a_later_run(moto: str) -> None:
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=8)
    (result,) = SnsChannel(rate_per_sec=0, concurrency=1).send([sms(1, send_at=later)])
    assert result.status == "failed" and (result.error or "").startswith("retryable: not due")
    assert published() == {}


def test_opted_out_numbers_become_suppressions(moto: str, sqlite_url: str) -> None:
    from moto.sns.models import sns_backends

    backend = sns_backends["123456789012"]["us-east-1"]
    backend.opt_out_numbers[:] = [f"+1415555{i:04d}" for i in range(150)]
    engine = sa.create_engine(sqlite_url)
    ensure_schema(engine)
    assert sync_sms_opt_outs(engine) == 150
    assert sync_sms_opt_outs(engine) == 0
    with engine.connect() as conn:
        rows = conn.execute(sa.select(suppressions)).mappings().all()
    assert len(rows) == 150
    assert {(r["channel"], r["scope"], r["reason"], r["source"]) for r in rows} == {
        ("sms", "all", "unsubscribed", "sns")
    }


def daytime_zone() -> str:
    """An IANA zone where it is now about noon (SMS quiet hours do not apply)."""
    offset = 12 - dt.datetime.now(dt.UTC).hour
    offset = offset - 24 if offset > 14 else offset + 24 if offset < -12 else offset
    return f"Etc/GMT{-offset:+d}"


def test_pipeline_texts_through_sns_once(
    settings: Settings, shop: Shop, moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use_provider(monkeypatch, sms_provider="sns")
    for i in range(3):
        buyers(shop, 1, phone=f"+1415555{i:04d}", channels=("sms",), timezone=daytime_zone())
    assert run_thank_you(settings).get("sent") == 3
    assert run_thank_you(settings).get("already_sent") == 3
    assert len(published()) == 3
