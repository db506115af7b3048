"""What every channel receives and returns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(slots=True)
class Message:
    """A rendered message ready to hand to a provider (never changed once made: ``dataclasses.replace``
    makes a variant; not ``frozen``, whose ``__init__`` costs 5x as much, once per message)."""

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


@dataclass(slots=True)
class SendResult:
    """A provider's answer: ``sent`` (accepted), ``failed`` (certainly not delivered) or ``unknown``
    (never changed once made, as :class:`Message`)."""

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
