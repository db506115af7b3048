"""Who may get which message, decided in the order of DESIGN.md §4, each decision with its reason."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loyalflow.addresses import normalise
from loyalflow.spec import Campaign

QUIET_START, QUIET_END = dt.time(9), dt.time(20)  # SMS allowed from 09:00 to 20:00 local time
CAP_PER_WEEK, CAP_PER_DAY = 2, 1


@dataclass
class Facts:
    """What the rules need to know about a chunk's customers, loaded once per chunk."""

    consent: dict[str, dict[str, bool]]  # customer -> channel -> opted in
    suppressed: set[tuple[str, str, str]]  # (channel, address, scope)
    ledger_keys: set[str]
    marketing_sends: dict[str, list[dt.date]] = field(default_factory=lambda: defaultdict(list))


@dataclass(frozen=True)
class Decision:
    """The outcome for one customer and step: a channel and address, or the reason for skipping."""

    reason: str  # "eligible" or the skip reason
    channel: str | None = None
    address: str | None = None
    send_at: dt.datetime | None = None
    detail: str = ""

    @property
    def eligible(self) -> bool:
        """True when a message should be sent."""
        return self.reason == "eligible"


def in_holdout(campaign_id: str, customer_id: str, percent: float) -> bool:
    """Deterministic control-group membership: the same customer is always in or out."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"holdout|{campaign_id}|{customer_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10000 < percent * 100


def _zone(name: object, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(name)) if name else ZoneInfo(default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def sms_send_time(now: dt.datetime, timezone: object, default_tz: str) -> dt.datetime:
    """``now`` when it falls within 09:00–20:00 in the customer's zone, else the next 09:00 there (UTC)."""
    zone = _zone(timezone, default_tz)
    local = now.replace(tzinfo=dt.UTC).astimezone(zone)
    if QUIET_START <= local.time() < QUIET_END:
        return now
    day = local.date() if local.time() < QUIET_START else local.date() + dt.timedelta(days=1)
    opens = dt.datetime.combine(day, QUIET_START, tzinfo=zone)
    return opens.astimezone(dt.UTC).replace(tzinfo=None)


def _channel_check(campaign: Campaign, customer: dict, channel: str, facts: Facts) -> tuple[str, str | None]:
    if not facts.consent.get(customer["customer_id"], {}).get(channel, False):
        return "no_consent", None
    raw = customer.get("email" if channel == "email" else "phone")
    address = normalise(channel, raw)
    scopes = ("all", campaign.category, campaign.id)
    if address and any((channel, address, s) in facts.suppressed for s in scopes):
        return "suppressed", None
    if address is None:
        return "invalid_address", None
    return "eligible", address


def decide(
    campaign: Campaign,
    customer: dict,
    key: str,
    exit_reason: str | None,
    facts: Facts,
    as_of: dt.date,
    now: dt.datetime,
    default_tz: str,
) -> Decision:
    """Apply consent, suppression, address, exit, holdout, caps, quiet hours and ledger, in that order."""
    first_failure = None
    channel = address = None
    for candidate in campaign.channels:
        outcome, addr = _channel_check(campaign, customer, candidate, facts)
        if outcome == "eligible":
            channel, address = candidate, addr
            break
        first_failure = first_failure or Decision(outcome, candidate, detail=f"{candidate}: {outcome}")
    if channel is None:
        assert first_failure is not None
        return first_failure
    if exit_reason:
        return Decision("exited", channel, detail=str(exit_reason))
    if in_holdout(campaign.id, customer["customer_id"], campaign.holdout_percent):
        return Decision("holdout", channel)
    if campaign.category == "marketing" and key not in facts.ledger_keys:
        sends = facts.marketing_sends.get(customer["customer_id"], [])
        week = [d for d in sends if as_of - dt.timedelta(days=6) <= d <= as_of]
        if len(week) >= CAP_PER_WEEK or sum(d == as_of for d in week) >= CAP_PER_DAY:
            return Decision("frequency_cap", channel, detail=f"{len(week)} marketing messages in 7 days")
    send_at = now
    if channel == "sms":
        send_at = sms_send_time(now, customer.get("timezone"), default_tz)
    if key in facts.ledger_keys:
        return Decision("already_sent", channel, address)
    return Decision(
        "eligible", channel, address, send_at, "deferred by quiet hours" if send_at != now else ""
    )
