"""Who may get which message, decided in the order of docs/architecture.md §4, each decision with its reason.

consent → suppression → valid address → exit/re-entry → holdout → frequency cap → quiet hours → ledger.
:func:`reach_all` walks a chunk's customers through consent, suppression and address once, channel by
channel; :func:`decide` is pure: the frequency cap is taken through ``Facts.reserve``
(see :mod:`loyalflow.decide.caps`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loyalflow.decide.addresses import normalise
from loyalflow.decide.consent import Consent, ConsentBook
from loyalflow.settings import Settings
from loyalflow.spec import Campaign

Window = tuple[dt.time, dt.time]
RANK = {"no_consent": 0, "invalid_address": 1, "suppressed": 2}  # which channel failure to report
# An "exited" decision whose detail starts so is a new anchor waiting out ``reentry_days`` (the customer
# stays in the sequence), not an exit: the run summary counts it apart.
REENTRY_WAIT = "re-entry wait"
# (customer_id, idempotency_key, local day) -> None when a cap slot is granted, else why not
Reserve = Callable[[str, str, dt.date], str | None]


def parse_window(value: str | None) -> Window | None:
    """``"09:00-20:00"`` as (start, end) local times; ``None`` or empty means any time."""
    if not value:
        return None
    start, _, end = str(value).partition("-")
    return dt.time.fromisoformat(start.strip()), dt.time.fromisoformat(end.strip())


@dataclass(frozen=True)
class Policy:
    """The compliance numbers of one campaign run (settings, overridable per campaign in ``params``)."""

    per_day: int = 1
    per_week: int = 2
    sms_window: Window | None = (dt.time(9), dt.time(20))
    email_window: Window | None = None
    default_tz: str = "UTC"

    @classmethod
    def for_campaign(cls, settings: Settings, campaign: Campaign) -> Policy:
        """Settings, with ``params.email_window`` of the campaign taking precedence."""
        return cls(
            per_day=settings.cap_marketing_per_day,
            per_week=settings.cap_marketing_per_week,
            sms_window=parse_window(settings.sms_window),
            email_window=parse_window(campaign.params.get("email_window", settings.email_window)),
            default_tz=settings.default_timezone,
        )

    def window(self, channel: str) -> Window | None:
        """The local send window of ``channel`` (None: any time)."""
        return self.sms_window if channel == "sms" else self.email_window


@dataclass
class Facts:
    """What the rules need to know about a chunk's customers, loaded once per chunk."""

    reach: dict[str, Reach]  # by customer id: consent, suppression and address (see reach_all)
    ledger_keys: set[str]
    reserve: Reserve = field(default=lambda customer_id, key, day: None)


@dataclass(slots=True)
class Decision:
    """The outcome for one customer and step: a channel and address, or the reason for skipping.

    Never changed once made: a later stage that changes the outcome gives the candidate a new one (not
    ``frozen``, whose ``__init__`` costs 4x as much, once per customer)."""

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


def zone(name: object, default: str) -> ZoneInfo:
    """The customer's time zone, ``default`` when unknown or invalid."""
    try:
        return ZoneInfo(str(name)) if name else ZoneInfo(default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def next_open(now: dt.datetime, tz: ZoneInfo, window: Window | None) -> dt.datetime:
    """``now`` (naive UTC) when inside the local ``window``, else the window's next opening (naive UTC)."""
    if window is None:
        return now
    start, end = window
    local = now.replace(tzinfo=dt.UTC).astimezone(tz)
    if start <= local.time() < end:
        return now
    day = local.date() if local.time() < start else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, start, tzinfo=tz).astimezone(dt.UTC).replace(tzinfo=None)


def sms_send_time(now: dt.datetime, timezone: object, default_tz: str) -> dt.datetime:
    """``now`` within 09:00–20:00 in the customer's zone, else the next 09:00 there (naive UTC)."""
    return next_open(now, zone(timezone, default_tz), Policy().sms_window)


@dataclass(slots=True)
class Reach:
    """How a campaign can reach one customer: the first channel, in the campaign's order, that passes
    consent, suppression and address, or the furthest any channel got (``reason``), with a note per
    channel tried. It depends on the customer alone, not on the step or anchor."""

    reason: str  # "eligible", "no_consent", "invalid_address" or "suppressed"
    channel: str | None = None
    address: str | None = None
    notes: list[str] = field(default_factory=list)


Lookup = Callable[[Iterable[str]], Mapping[tuple[str, str, str], str]]
"""Normalised addresses -> their suppressions as ``(channel, address, scope) -> reason``."""


def reach_all(
    campaign: Campaign,
    customers: Mapping[str, Mapping[str, Any]],
    book: ConsentBook,
    suppressed: Lookup,
    now: dt.datetime,
) -> dict[str, Reach]:
    """The :class:`Reach` of every customer (by id), channel by channel for the whole chunk.

    A channel's addresses are normalised (the costly part) and looked up in the suppressions once, and
    only for consenting customers whom no earlier channel reaches."""
    scopes = ("all", campaign.category, campaign.id)
    out: dict[str, Reach] = {}
    tried: dict[str, Reach] = {cid: Reach("no_consent") for cid in customers}  # not reached yet

    def fail(cid: str, channel: str, outcome: str, why: str) -> None:
        state = tried[cid]
        state.notes.append(why)
        if state.channel is None or RANK[outcome] > RANK[state.reason]:  # the furthest failure so far
            state.reason, state.channel = outcome, channel

    for channel in campaign.channels:
        column = "email" if channel == "email" else "phone"
        consenting: dict[str, tuple[str, Consent]] = {}
        for cid in tried:
            row = book.latest(cid, channel, scopes, at=now)
            if row is None:
                fail(cid, channel, "no_consent", f"{channel}: no consent row (explicit opt-in required)")
            elif not row.opted_in:
                fail(cid, channel, "no_consent", row.describe(channel))
            elif (address := normalise(channel, customers[cid].get(column))) is None:
                fail(cid, channel, "invalid_address", f"{channel}: missing or invalid address")
            else:
                consenting[cid] = (address, row)
        hits = suppressed({address for address, _ in consenting.values()})
        for cid, (address, row) in consenting.items():
            for scope in scopes:
                if reason := hits.get((channel, address, scope)):
                    why = f"{channel}: address suppressed ({reason}, scope {scope})"
                    fail(cid, channel, "suppressed", why)
                    break
            else:
                state = tried.pop(cid)
                out[cid] = Reach("eligible", channel, address, [*state.notes, row.describe(channel)])
    out.update(tried)
    return out


def decide(
    campaign: Campaign,
    customer: Mapping[str, Any],
    reach: Reach,
    key: str,
    exit_reason: str | None,
    facts: Facts,
    now: dt.datetime,
    policy: Policy,
) -> Decision:
    """Apply the customer's ``reach`` (consent, suppression, address), then exit, holdout, caps, quiet
    hours and ledger, in that order."""
    channel = reach.channel
    if reach.reason != "eligible" or channel is None:  # no channel passed: the furthest failure explains why
        return Decision(reach.reason, channel, detail="; ".join(reach.notes))
    if exit_reason:
        return Decision("exited", channel, detail=str(exit_reason))
    cid = str(customer["customer_id"])
    if in_holdout(campaign.id, cid, campaign.holdout_percent):
        return Decision("holdout", channel, detail=f"control group ({campaign.holdout_percent:g}%)")
    tz = zone(customer.get("timezone"), policy.default_tz)
    send_at = next_open(now, tz, policy.window(channel))
    if campaign.category == "marketing" and key not in facts.ledger_keys:
        local_day = send_at.replace(tzinfo=dt.UTC).astimezone(tz).date()
        denied = facts.reserve(cid, key, local_day)
        if denied:
            return Decision("frequency_cap", channel, detail=denied)
    notes = reach.notes
    if send_at != now:
        notes = [*notes, f"deferred by {channel} send window to {send_at:%Y-%m-%d %H:%M} UTC ({tz.key})"]
    if key in facts.ledger_keys:
        return Decision("already_sent", channel, reach.address, detail="key already in the send ledger")
    return Decision("eligible", channel, reach.address, send_at, "; ".join(notes))
