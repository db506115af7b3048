"""Email through SendGrid v3: payloads built by the official library, posted over pooled connections.

The ``sendgrid`` client opens a new connection per request, so each worker thread keeps one keep-alive
``http.client`` connection and posts the JSON that ``sendgrid.helpers.mail.Mail`` builds. Knowing where
a failure happened keeps retries safe: before the request went out whole → retry; after → in doubt.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import select
import ssl
from typing import Any
from urllib.parse import urlsplit

from loyalflow.deliver.channels.base import Message
from loyalflow.deliver.channels.delivery import InDoubt, PooledChannel, Rejected, Retryable, raise_for_status
from loyalflow.hooks import SendGridHook

MAX_CUSTOM_ARGS_BYTES = 10_000
TIMEOUT = 30.0  # seconds, to connect and for each read


def mail_payload(
    msg: Message, asm_group_id: int | None = None, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The v3 ``/mail/send`` JSON for one message (one personalization), via the official helpers."""
    from sendgrid.helpers.mail import (
        Asm,
        Category,
        CustomArg,
        From,
        GroupId,
        Header,
        Mail,
        ReplyTo,
        SendAt,
        To,
    )

    mail = Mail(
        from_email=From(msg.sender) if msg.sender else None,
        to_emails=To(msg.to),
        subject=msg.subject,
        plain_text_content=msg.text,
        html_content=msg.html,
    )
    args = {
        "idempotency_key": msg.idempotency_key,
        "campaign": msg.campaign,
        "step": msg.step,
        "customer_id": msg.customer_id,
    }
    if len(json.dumps(args, separators=(",", ":")).encode()) >= MAX_CUSTOM_ARGS_BYTES:
        raise Rejected("custom_args exceed 10,000 bytes")
    mail.custom_arg = [CustomArg(k, v) for k, v in args.items()]
    mail.category = [Category(msg.campaign), Category(msg.step)]
    if msg.reply_to:
        mail.reply_to = ReplyTo(msg.reply_to)
    if msg.headers:
        mail.header = [Header(k, v) for k, v in msg.headers.items()]
    if asm_group_id is not None:
        mail.asm = Asm(GroupId(asm_group_id))
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if msg.send_at > now + dt.timedelta(minutes=1):
        mail.send_at = SendAt(int(msg.send_at.replace(tzinfo=dt.UTC).timestamp()))
    return mail.get()


class SendGridChannel(PooledChannel):
    """SendGrid over one keep-alive HTTP connection per worker thread."""

    provider = "sendgrid"
    horizon = dt.timedelta(hours=72) - dt.timedelta(minutes=10)  # send_at limit, with clock slack

    def __init__(self, conn_id: str = "sendgrid_default", asm_group_id: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        api_key, base_url = SendGridHook(conn_id).get_conn()
        url = urlsplit(base_url)
        self.https, self.host, self.port = url.scheme == "https", url.hostname or "", url.port
        self.path = f"{url.path.rstrip('/')}/v3/mail/send"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.asm_group_id = asm_group_id

    def _connection(self) -> http.client.HTTPConnection:
        """This thread's open connection; a new one when the server closed the old one."""
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is not None and conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
            conn.close()  # readable while idle: the server hung up (keep-alive timeout)
        if conn is None:
            conn = self.local.conn = (
                http.client.HTTPSConnection(
                    self.host, self.port, timeout=TIMEOUT, context=ssl.create_default_context()
                )
                if self.https
                else http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
            )
        if conn.sock is None:
            try:
                conn.connect()
            except OSError as exc:  # refused, unreachable, connect timeout: nothing was sent
                conn.close()
                raise Retryable(f"connection refused: {type(exc).__name__}: {exc}") from None
        return conn

    def deliver_one(self, msg: Message) -> str:
        """POST one message; 202 → the ``X-Message-Id``."""
        body = json.dumps(mail_payload(msg, self.asm_group_id)).encode()
        conn = self._connection()
        try:
            conn.request("POST", self.path, body=body, headers=self.headers)
        except OSError as exc:  # the request did not get out whole: it cannot have been accepted
            conn.close()
            raise Retryable(f"request not sent: {type(exc).__name__}") from None
        try:
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as exc:  # read timeout, dropped after sending
            conn.close()
            raise InDoubt(f"no answer after the request was sent: {type(exc).__name__}") from None
        raise_for_status(resp.status, dict(resp.getheaders()), _error_text(resp.status, payload))
        return resp.getheader("X-Message-Id") or ""


def _error_text(status: int, payload: bytes) -> str:
    if status < 300:
        return ""
    try:
        return "; ".join(str(e.get("message")) for e in json.loads(payload).get("errors", []))[:300]
    except (ValueError, AttributeError):
        return payload[:200].decode(errors="replace")
