"""Amazon SES v2 through AwsBaseHook against a moto server on loopback."""

from __future__ import annotations

import email
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from loyalflow.deliver.channels.aws import SesChannel, tag_value
from loyalflow.settings import Settings
from tests.delivery_helpers import (
    buyers,
    capture_calls,
    ledger_states,
    message,
    moto_server,
    run_thank_you,
    use_provider,
)
from tests.factories import Shop

FROM = "hello@harborandpine.example.com"


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with moto_server(monkeypatch) as url:
        yield url


def sent_messages() -> list:
    from moto.ses.models import ses_backends

    return list(ses_backends["123456789012"]["us-east-1"].sent_messages)


def verify_sender() -> None:
    from loyalflow.hooks import aws_client

    aws_client("sesv2").create_email_identity(EmailIdentity=FROM)


def test_sends_raw_mime_with_key_in_tags(moto: str) -> None:
    verify_sender()
    channel = SesChannel(configuration_set="marketing", rate_per_sec=0, concurrency=2)
    calls = capture_calls(channel.client, "SendEmail")
    results = channel.send([message(i) for i in range(3)])
    assert {r.status for r in results} == {"sent"} and all(r.provider_message_id for r in results)
    assert len(sent_messages()) == 3
    mime = email.message_from_string(sent_messages()[0].raw_data)
    assert mime.get_content_type() == "multipart/alternative"
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    tags = {t["Name"]: t["Value"] for t in calls[0]["EmailTags"]}
    assert tags["idempotency_key"].startswith("key-0000") and tags["campaign"] == "thank_you"
    assert calls[0]["ConfigurationSetName"] == "marketing"


def test_unverified_sender_is_rejected_not_retried(moto: str) -> None:
    channel = SesChannel(rate_per_sec=0, concurrency=1)
    calls = capture_calls(channel.client, "SendEmail")
    (result,) = channel.send([message(1)])
    assert result.status == "failed" and "MessageRejected" in (result.error or "")
    assert "@" not in (result.error or "")  # no addresses in errors or logs
    assert len(calls) == 1


def test_tag_values_are_sanitised() -> None:
    assert tag_value("thank you/ü:1") == "thank_you___1"


def test_pipeline_sends_through_ses_once(
    settings: Settings, shop: Shop, moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify_sender()
    settings = use_provider(monkeypatch, email_provider="ses")
    buyers(shop, 4)
    assert run_thank_you(settings).get("sent") == 4
    assert run_thank_you(settings).get("already_sent") == 4
    assert len(sent_messages()) == 4
    assert set(ledger_states(sa.create_engine(settings.warehouse_url)).values()) == {"sent"}
