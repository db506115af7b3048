"""Provider events: SendGrid webhooks (signed), SES bounce/complaint notifications, inbound SMS keywords.

Every event lands once in ``loyalflow_delivery_events`` (provider + event id: a replay is a no-op);
bounces, complaints and unsubscribes become suppressions, SMS START lifts an SMS unsubscribe, and
SMS answers (YES/NO/LATER) become responses. STOP/START and complaints are consent changes too: they
append a ``loyalflow_consent`` row (``sms_keyword``, ``complaint``) in the same transaction as the
event and its suppression. Logs carry ids and counts, never addresses or bodies.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy.dialects import postgresql, sqlite

from loyalflow.decide import consent, responses, suppressions
from loyalflow.decide.addresses import normalise_phone
from loyalflow.errors import LoyalflowError
from loyalflow.settings import Settings
from loyalflow.state import delivery_events

log = logging.getLogger(__name__)
PROVIDERS = ("sendgrid", "ses", "sms")
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
STOP_WORDS = frozenset({"STOP", "STOPALL", "QUIT", "END", "REVOKE", "OPTOUT", "CANCEL", "UNSUBSCRIBE"})
START_WORDS = frozenset({"START", "UNSTOP"})
ANSWERS = {"YES": "positive", "Y": "positive", "NO": "negative", "N": "negative", "LATER": "later"}


@dataclass
class Event:
    """One normalised provider event and what it implies."""

    provider: str
    event_id: str
    event_type: str
    occurred_at: dt.datetime
    channel: str = "email"
    address: str | None = None
    idempotency_key: str | None = None
    provider_message_id: str | None = None
    customer_id: str | None = None
    suppress: tuple[str, str] | None = None  # (reason, scope)
    unsuppress: bool = False
    answer: str | None = None


def verify_sendgrid(public_key: str, signature: str, timestamp: str, body: bytes) -> bool:
    """SendGrid signed event webhook: ECDSA P-256/SHA-256 over ``timestamp + raw body``."""
    try:
        key = load_der_public_key(base64.b64decode(public_key))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, TypeError):
        return False
    return True


def _when(value: Any) -> dt.datetime:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).replace(tzinfo=None)
    if isinstance(value, str) and value:
        try:
            return (
                dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                .astimezone(dt.UTC)
                .replace(tzinfo=None)
            )
        except ValueError:
            pass
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _loads(body: bytes) -> list[dict[str, Any]]:
    """A JSON array, a JSON object, or JSON lines."""
    text = body.decode("utf-8").strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise LoyalflowError(f"not JSON or JSON lines: {exc.msg} (line {exc.lineno})") from None
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(i, dict) for i in items):
        raise LoyalflowError("expected JSON objects")
    return items


def _hashed(*parts: Any) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40]


def _sendgrid_effect(item: dict[str, Any]) -> tuple[str, str] | None:
    kind = item.get("event")
    if kind == "bounce" and item.get("type") != "blocked":
        return ("bounced", "all")
    if kind == "spamreport":
        return ("complained", "all")
    if kind == "unsubscribe":
        return ("unsubscribed", "all")
    if kind == "group_unsubscribe":
        return ("unsubscribed", "marketing")
    if kind == "dropped":
        why = str(item.get("reason", "")).lower()
        for word, reason in (("bounce", "bounced"), ("spam", "complained"), ("unsubscribe", "unsubscribed")):
            if word in why:
                return (reason, "all")
    return None


def parse_sendgrid(body: bytes) -> list[Event]:
    """SendGrid event webhook payload (custom_args arrive as top-level event fields)."""
    out = []
    for item in _loads(body):
        args = {**(item.get("custom_args") or {}), **item}
        kind = str(item.get("event", "unknown"))
        event_id = item.get("sg_event_id") or _hashed(kind, item.get("sg_message_id"), item.get("timestamp"))
        out.append(
            Event(
                "sendgrid",
                str(event_id),
                kind,
                _when(item.get("timestamp")),
                "email",
                item.get("email"),
                args.get("idempotency_key"),
                item.get("sg_message_id"),
                args.get("customer_id"),
                _sendgrid_effect(item),
            )
        )
    return out


def parse_ses(body: bytes) -> list[Event]:
    """SES notifications, SNS-wrapped or raw; permanent bounces and complaints suppress."""
    out = []
    for item in _loads(body):
        if item.get("Type") and item.get("Type") != "Notification":
            continue  # SubscriptionConfirmation and the like carry no event
        msg = json.loads(item["Message"]) if isinstance(item.get("Message"), str) else item
        kind = str(msg.get("notificationType") or msg.get("eventType") or "unknown")
        mail = msg.get("mail") or {}
        tags = {k: v[0] if isinstance(v, list) and v else v for k, v in (mail.get("tags") or {}).items()}
        detail = msg.get(kind[:1].lower() + kind[1:]) or {}
        recipients = [
            r.get("emailAddress")
            for r in detail.get("bouncedRecipients", []) + detail.get("complainedRecipients", [])
        ] or list(mail.get("destination") or [None])
        effect = None
        if kind == "Bounce" and detail.get("bounceType") == "Permanent":
            effect = ("bounced", "all")
        elif kind == "Complaint":
            effect = ("complained", "all")
        ref = detail.get("feedbackId") or item.get("MessageId") or mail.get("messageId")
        for rcpt in recipients:
            out.append(
                Event(
                    "ses",
                    _hashed(ref, kind, rcpt),
                    kind.lower(),
                    _when(detail.get("timestamp") or mail.get("timestamp")),
                    "email",
                    rcpt,
                    tags.get("idempotency_key"),
                    mail.get("messageId"),
                    tags.get("customer_id"),
                    effect,
                )
            )
    return out


def keyword(body: str | None) -> str:
    """An SMS reply reduced to its keyword: ``" opt   out "`` → ``OPTOUT``, ``"Stop."`` → ``STOP``."""
    return re.sub(r"[^A-Z]", "", str(body or "").upper())


def parse_sms(body: bytes) -> list[Event]:
    """Inbound SMS (``from``/``body`` or SNS/Pinpoint ``originationNumber``/``messageBody``)."""
    out = []
    for item in _loads(body):
        sender = item.get("from") or item.get("originationNumber")
        text = item.get("body") if "body" in item else item.get("messageBody")
        word = keyword(text)
        when = _when(item.get("received_at") or item.get("timestamp"))
        event_id = item.get("id") or item.get("inboundMessageId") or _hashed(sender, text, when)
        stop, start = word in STOP_WORDS, word in START_WORDS
        kind = "stop" if stop else "start" if start else "reply"
        out.append(
            Event(
                "sms",
                str(event_id),
                kind,
                when,
                "sms",
                sender,
                customer_id=item.get("customer_id"),
                suppress=("unsubscribed", "all") if stop else None,
                unsuppress=start,
                answer=ANSWERS.get(word),
            )
        )
    return out


PARSERS = {"sendgrid": parse_sendgrid, "ses": parse_ses, "sms": parse_sms}


def _customer_by_phone(warehouse: sa.Engine | None, phone: str | None) -> str | None:
    if warehouse is None or not phone:
        return None
    try:
        with warehouse.connect() as conn:
            found = conn.execute(
                sa.text("SELECT customer_id FROM customers WHERE phone = :p"), {"p": phone}
            ).scalar()
    except sa.exc.SQLAlchemyError:
        return None
    return str(found) if found is not None else None


def _consent_change(ev: Event) -> tuple[bool, str] | None:
    """The consent an event expresses: SMS STOP/START (``sms_keyword``), a complaint (``complaint``)."""
    if ev.channel == "sms" and ev.event_type in ("stop", "start"):
        return ev.event_type == "start", "sms_keyword"
    if ev.suppress and ev.suppress[0] == "complained":
        return False, "complaint"
    return None


def _record_consent(conn: sa.Connection, ev: Event) -> dict[str, int]:
    """Append the event's consent row to ``loyalflow_consent`` (in the caller's transaction)."""
    change = _consent_change(ev)
    if change is None or not ev.customer_id:
        return {}  # no consent meaning, or nobody to attach it to (the suppression still holds)
    opted_in, source = change
    consent.record(
        conn,
        ev.customer_id,
        ev.channel,
        opted_in,
        source,
        request_fingerprint=consent.fingerprint(ev.provider, ev.event_id),
    )  # stamped now, when loyalflow learns of it: a late webhook still reaches the next export
    return {f"consent_{source}": 1}


def apply(
    state: sa.Engine, events: list[Event], warehouse: sa.Engine | None = None, snooze_days: int = 30
) -> dict[str, int]:
    """Store new events (duplicates are skipped) and apply their suppressions and responses."""
    counts: Counter[str] = Counter()
    insert = (postgresql if state.dialect.name == "postgresql" else sqlite).insert(delivery_events)
    for ev in events:
        if ev.channel == "sms":
            ev.address = normalise_phone(ev.address)
            ev.customer_id = ev.customer_id or _customer_by_phone(warehouse, ev.address)
        row = {
            "provider": ev.provider,
            "event_id": ev.event_id,
            "event_type": ev.event_type,
            "idempotency_key": ev.idempotency_key,
            "provider_message_id": ev.provider_message_id,
            "customer_id": ev.customer_id,
            "occurred_at": ev.occurred_at,
        }
        with state.begin() as conn:  # the event, its suppression and its consent row: all or nothing
            new = conn.execute(insert.values(row).on_conflict_do_nothing()).rowcount
            if not new:
                counts["duplicate"] += 1
                continue
            counts[ev.event_type] += 1
            try:
                if ev.suppress and ev.address:
                    reason, scope = ev.suppress
                    suppressions.add(
                        conn,
                        ev.channel,
                        ev.address,
                        reason,
                        scope=scope,
                        source=f"{ev.provider}:{ev.event_type}",
                        customer_id=ev.customer_id,
                    )
                    counts[f"suppressed_{reason}"] += 1
                if ev.unsuppress and ev.address:
                    counts["resubscribed"] += suppressions.remove(conn, ev.channel, ev.address)
            except LoyalflowError:
                counts["invalid_address"] += 1
            else:
                counts.update(_record_consent(conn, ev))
        if ev.answer and ev.customer_id:
            responses.record(
                state,
                ev.customer_id,
                ev.answer,
                at=ev.occurred_at,
                source="sms",
                channel=ev.channel,
                snooze_days=snooze_days,
            )
            counts[f"response_{ev.answer}"] += 1
        log.debug(
            "event %s/%s %s for customer %s (key %s)",
            ev.provider,
            ev.event_id,
            ev.event_type,
            ev.customer_id,
            ev.idempotency_key,
        )
    return dict(counts)


def ingest(
    settings: Settings,
    provider: str,
    body: bytes,
    *,
    signature: str | None = None,
    timestamp: str | None = None,
) -> dict[str, int]:
    """Parse, verify (SendGrid, when a public key is configured) and apply one payload."""
    if provider not in PARSERS:
        raise LoyalflowError(f"unknown provider '{provider}' (use {', '.join(PROVIDERS)})")
    key = settings.sendgrid_webhook_public_key
    if provider == "sendgrid" and (key or signature):
        if not (key and signature and timestamp and verify_sendgrid(key, signature, timestamp, body)):
            raise LoyalflowError("SendGrid webhook signature is missing or invalid; nothing ingested")
    from loyalflow.runtime import Runtime

    rt = Runtime(settings)
    counts = apply(
        rt.state, PARSERS[provider](body), rt.warehouse if provider == "sms" else None, settings.snooze_days
    )
    log.info("ingested %s events: %s", provider, counts)
    return counts
