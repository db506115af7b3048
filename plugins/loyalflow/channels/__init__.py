"""Delivery channels: the outbox (embedded default) and real providers, chosen by settings."""

from __future__ import annotations

from loyalflow.channels.base import Channel, Message, SendResult
from loyalflow.settings import Settings


def channel_for(kind: str, settings: Settings) -> Channel:
    """The configured provider for ``kind`` (``email`` or ``sms``)."""
    provider = settings.email_provider if kind == "email" else settings.sms_provider
    if provider == "outbox":
        from loyalflow.channels.outbox import OutboxChannel

        return OutboxChannel(settings.outbox_dir)
    raise NotImplementedError(f"LOYALFLOW_{kind.upper()}_PROVIDER={provider} is not available yet")


__all__ = ["Channel", "Message", "SendResult", "channel_for"]
