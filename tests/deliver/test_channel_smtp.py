"""SMTP from the smtp_default Connection against an aiosmtpd server on loopback."""

from __future__ import annotations

import email
from collections.abc import Iterator
from typing import Any

import pytest

from loyalflow.deliver.channels.smtp import SmtpChannel
from loyalflow.settings import Settings
from tests.delivery_helpers import buyers, closed_port, message, run_thank_you, set_connection, use_provider
from tests.factories import Shop


class Inbox:
    """An aiosmtpd handler that keeps messages and can answer DATA with scripted codes."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, bytes]] = []
        self.replies: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.replies:
            return self.replies.pop(0)
        self.messages.append((session.peer, envelope.content))
        return "250 OK"


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    from aiosmtpd.controller import Controller

    handler = Inbox()
    port = closed_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    set_connection(
        monkeypatch,
        "smtp_default",
        conn_type="smtp",
        host="127.0.0.1",
        port=port,
        login="",
        extra={"disable_ssl": True, "disable_tls": True},  # plain SMTP: loopback only, no login
    )
    yield handler
    controller.stop()


def test_sends_mime_over_one_connection_per_worker(inbox: Inbox) -> None:
    channel = SmtpChannel(rate_per_sec=0, concurrency=2)
    results = channel.send([message(i) for i in range(10)]) + channel.send(
        [message(i) for i in range(10, 14)]
    )
    assert {r.status for r in results} == {"sent"}
    assert len(inbox.messages) == 14
    assert len({peer for peer, _ in inbox.messages}) <= 2  # connections kept open between messages
    mime = email.message_from_bytes(inbox.messages[0][1])
    assert mime.get_content_type() == "multipart/alternative"
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert results[0].provider_message_id == "key-00000@loyalflow"


def test_temporary_rejection_is_retried_and_permanent_is_not(inbox: Inbox) -> None:
    channel = SmtpChannel(rate_per_sec=0, concurrency=1, sleep=lambda s: None)
    inbox.replies = ["451 4.3.0 try again later"]
    (ok,) = channel.send([message(1)])
    assert ok.status == "sent" and len(inbox.messages) == 1
    inbox.replies = ["550 5.7.1 rejected"]
    (bad,) = channel.send([message(2)])
    assert bad.status == "failed" and not (bad.error or "").startswith("retryable:")
    assert inbox.replies == [] and len(inbox.messages) == 1


def test_refused_connection_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "smtp_default", conn_type="smtp", host="127.0.0.1", port=closed_port())
    (result,) = SmtpChannel(rate_per_sec=0, concurrency=1, max_attempts=2, sleep=lambda s: None).send(
        [message(1)]
    )
    assert result.status == "failed" and (result.error or "").startswith("retryable:")


def test_pipeline_sends_through_smtp_once(
    settings: Settings, shop: Shop, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use_provider(monkeypatch, email_provider="smtp")
    buyers(shop, 3)
    assert run_thank_you(settings).get("sent") == 3
    assert run_thank_you(settings).get("already_sent") == 3
    assert len(inbox.messages) == 3
