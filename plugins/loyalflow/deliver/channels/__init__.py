"""Delivery channels: the outbox (embedded default) and real providers, chosen by settings."""

from __future__ import annotations

from typing import get_args

from loyalflow.compose.tokens import require_production_key
from loyalflow.deliver.channels.base import Channel, Message, SendResult
from loyalflow.errors import SettingsError
from loyalflow.settings import Settings


def channel_for(kind: str, settings: Settings) -> Channel:
    """The configured provider for ``kind`` (``email`` or ``sms``); credentials from Connections."""
    s = settings
    provider = s.email_provider if kind == "email" else s.sms_provider
    require_production_key(s, provider=provider)  # a real provider needs a real LOYALFLOW_SECRET_KEY
    retries = {"max_attempts": s.send_max_attempts, "max_wait": s.send_max_wait_seconds}
    if provider == "outbox":
        from loyalflow.deliver.channels.outbox import OutboxChannel

        return OutboxChannel(s.outbox_dir, s.outbox_eml)
    if provider == "sendgrid":
        from loyalflow.deliver.channels.sendgrid import SendGridChannel

        return SendGridChannel(
            s.sendgrid_conn_id,
            s.sendgrid_asm_group_id,
            rate_per_sec=s.sendgrid_rate_per_sec,
            concurrency=s.sendgrid_concurrency,
            **retries,
        )
    if provider == "ses":
        from loyalflow.deliver.channels.aws import SesChannel

        return SesChannel(
            s.aws_conn_id,
            s.ses_configuration_set,
            rate_per_sec=s.ses_rate_per_sec,
            concurrency=s.ses_concurrency,
            **retries,
        )
    if provider == "smtp":
        from loyalflow.deliver.channels.smtp import SmtpChannel

        return SmtpChannel(
            s.smtp_conn_id, rate_per_sec=s.smtp_rate_per_sec, concurrency=s.smtp_concurrency, **retries
        )
    if provider == "sns":
        from loyalflow.deliver.channels.aws import SnsChannel

        return SnsChannel(
            s.aws_conn_id,
            s.sns_sender_id,
            rate_per_sec=s.sns_rate_per_sec,
            concurrency=s.sns_concurrency,
            **retries,
        )
    field = Settings.model_fields["email_provider" if kind == "email" else "sms_provider"]
    known = ", ".join(get_args(field.annotation))
    raise SettingsError(f"LOYALFLOW_{kind.upper()}_PROVIDER={provider} is not a known provider ({known})")


__all__ = ["Channel", "Message", "SendResult", "channel_for"]
