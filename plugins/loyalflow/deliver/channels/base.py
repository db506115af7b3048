"""What every channel receives and returns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True)
class Message:
    """A rendered message ready to hand to a provider."""

    idempotency_key: str
    campaign: str
    step: str
    customer_id: str
    channel: str
    to: str
    text: str
    send_at: dt.datetime
    category: str
    subject: str | None = None
    html: str | None = None
    sender: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    test: bool = False  # a test send to staff (deliver/testsend.py), never a customer's message


@dataclass(frozen=True)
class SendResult:
    """A provider's answer: ``sent`` (accepted), ``failed`` (certainly not delivered) or ``unknown``."""

    idempotency_key: str
    status: Literal["sent", "failed", "unknown"]
    provider_message_id: str | None = None
    error: str | None = None


class Channel(Protocol):
    """A provider that delivers a batch of messages of one kind."""

    provider: str
    horizon: dt.timedelta  # how far ahead the provider itself can schedule a message (send_at)

    def send(self, messages: list[Message]) -> list[SendResult]:
        """Deliver ``messages``; one result per message, in any order."""
        ...
