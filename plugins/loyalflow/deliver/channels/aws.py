"""Email through Amazon SES v2 and SMS through Amazon SNS, with boto3 clients from ``AwsBaseHook``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import sqlalchemy as sa

from loyalflow.decide.addresses import normalise_phone
from loyalflow.deliver.channels.base import Message
from loyalflow.deliver.channels.delivery import InDoubt, PooledChannel, Rejected, Retryable, raise_for_status
from loyalflow.deliver.channels.outbox import mime_message
from loyalflow.hooks import aws_client
from loyalflow.state import suppressions

THROTTLED = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException", "ThrottledException"})
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tag_value(value: str) -> str:
    """An SES tag value (only ``[A-Za-z0-9_-]``, at most 256 characters)."""
    return _TAG_UNSAFE.sub("_", value)[:256] or "_"


def call_aws(fn: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a boto3 operation, mapping its failures to the delivery outcome classes."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ParamValidationError,
    )

    try:
        return fn(**kwargs)
    except ClientError as exc:
        err, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 400)
        detail = f"{err.get('Code')}: {err.get('Message')}"
        if err.get("Code") in THROTTLED:
            raise Retryable(detail, rate_limited=True) from None
        raise_for_status(status, meta.get("HTTPHeaders") or {}, detail)
        raise InDoubt(detail) from None  # a 2xx ClientError should not happen; play safe
    except (EndpointConnectionError, ConnectTimeoutError) as exc:  # never reached the provider
        raise Retryable(str(exc)) from None
    except ParamValidationError as exc:
        raise Rejected(str(exc)) from None
    # ReadTimeoutError, ConnectionClosedError and anything else propagate: PooledChannel → unknown


class SesChannel(PooledChannel):
    """SES v2 ``SendEmail`` with raw MIME (List-Unsubscribe headers) and the key in EmailTags."""

    provider = "ses"

    def __init__(self, conn_id: str = "aws_default", configuration_set: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.client = aws_client("sesv2", conn_id, self.concurrency)  # boto3 clients are thread-safe
        self.configuration_set = configuration_set

    def deliver_one(self, msg: Message) -> str:
        """Send one raw email; returns SES's MessageId."""
        kwargs: dict[str, Any] = {
            "FromEmailAddress": msg.sender,
            "Destination": {"ToAddresses": [msg.to]},
            "Content": {"Raw": {"Data": bytes(mime_message(msg))}},
            "EmailTags": [
                {"Name": "idempotency_key", "Value": tag_value(msg.idempotency_key)},
                {"Name": "campaign", "Value": tag_value(msg.campaign)},
                {"Name": "step", "Value": tag_value(msg.step)},
            ],
        }
        if msg.reply_to:
            kwargs["ReplyToAddresses"] = [msg.reply_to]
        if self.configuration_set:
            kwargs["ConfigurationSetName"] = self.configuration_set
        return str(call_aws(self.client.send_email, **kwargs)["MessageId"])


class SnsChannel(PooledChannel):
    """SNS ``Publish`` to one E.164 number per call (Transactional for relationship messages)."""

    provider = "sns"

    def __init__(self, conn_id: str = "aws_default", sender_id: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.client = aws_client("sns", conn_id, self.concurrency)
        self.sender_id = sender_id

    def deliver_one(self, msg: Message) -> str:
        """Publish one SMS; returns SNS's MessageId."""
        sms_type = "Transactional" if msg.category == "relationship" else "Promotional"
        attrs = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": sms_type}}
        if self.sender_id:
            attrs["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": self.sender_id}
        answer = call_aws(self.client.publish, PhoneNumber=msg.to, Message=msg.text, MessageAttributes=attrs)
        return str(answer["MessageId"])


def sync_sms_opt_outs(engine: sa.Engine, conn_id: str = "aws_default", client: Any = None) -> int:
    """Copy SNS's opted-out phone numbers into ``loyalflow_suppressions``; returns rows added."""
    client = client or aws_client("sns", conn_id)
    numbers = {
        n
        for page in client.get_paginator("list_phone_numbers_opted_out").paginate()
        for raw in page.get("phoneNumbers", [])
        if (n := normalise_phone(raw) or str(raw).strip())
    }
    with engine.connect() as conn:
        known = {
            r[0]
            for r in conn.execute(
                sa.select(suppressions.c.address).where(
                    suppressions.c.channel == "sms",
                    suppressions.c.scope == "all",
                    suppressions.c.reason == "unsubscribed",
                )
            )
        }
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [
        {
            "address": n,
            "channel": "sms",
            "scope": "all",
            "reason": "unsubscribed",
            "source": "sns",
            "created_at": now,
        }
        for n in sorted(numbers - known)
    ]
    added = 0
    with engine.begin() as conn:
        for row in rows:  # one by one: a concurrent sync may add the same number
            try:
                with conn.begin_nested():
                    conn.execute(suppressions.insert(), row)
                added += 1
            except sa.exc.IntegrityError:
                pass
    return added
