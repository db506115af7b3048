"""Email over SMTP: proper MIME (multipart/alternative, List-Unsubscribe) and one connection per worker."""

from __future__ import annotations

import smtplib
from typing import Any

from loyalflow.deliver.channels.base import Message
from loyalflow.deliver.channels.delivery import InDoubt, PooledChannel, Rejected, Retryable
from loyalflow.deliver.channels.outbox import mime_message
from loyalflow.hooks import SmtpConfig


def _by_code(code: int, reason: str) -> Exception:
    """4xx SMTP replies are temporary (nothing was accepted), 5xx permanent."""
    return Retryable(reason) if 400 <= code < 500 else Rejected(reason)


class SmtpChannel(PooledChannel):
    """SMTP from the ``smtp_default`` Connection, each worker thread keeping its session open.

    The Connection is read as Airflow's ``SmtpHook`` reads it (SSL unless ``disable_ssl``, else STARTTLS
    unless ``disable_tls``); an unsafe or incomplete one fails here, before anything is claimed.
    """

    provider = "smtp"

    def __init__(self, conn_id: str = "smtp_default", **kwargs: Any):
        super().__init__(**kwargs)
        self.config = SmtpConfig.from_connection(conn_id)

    def _client(self) -> smtplib.SMTP:
        client: smtplib.SMTP | None = getattr(self.local, "client", None)
        if client is not None:
            try:
                if client.noop()[0] == 250:
                    return client
            except (smtplib.SMTPException, OSError):
                pass
            self._close()
        try:
            client = self.local.client = self.config.connect()
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, f"connect: {exc.smtp_code}") from None
        except (OSError, smtplib.SMTPException) as exc:  # refused, unreachable: nothing was sent
            raise Retryable(f"connect: {type(exc).__name__}: {exc}") from None
        return client

    def _close(self) -> None:
        client, self.local.client = getattr(self.local, "client", None), None
        if client is not None:
            try:
                client.close()
            except OSError:
                pass

    def deliver_one(self, msg: Message) -> str:
        """Send one message; the Message-ID header (from the key) is the provider id."""
        mail = mime_message(msg)
        client = self._client()
        try:
            refused = client.send_message(mail, from_addr=_addr(msg.sender), to_addrs=[msg.to])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _by_code(min(codes, default=550), f"recipient refused: {codes}") from None
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            raise _by_code(exc.smtp_code, f"{type(exc).__name__}: {exc.smtp_code}") from None
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._close()
            raise InDoubt(f"connection lost while sending: {type(exc).__name__}") from None
        if refused:
            raise Rejected(f"recipient refused: {list(refused.values())}")
        return str(mail["Message-ID"]).strip("<>")


def _addr(sender: str | None) -> str | None:
    from email.utils import parseaddr

    return parseaddr(sender)[1] if sender else None
