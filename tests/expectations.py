"""An independent model of who should receive which campaign step, day by day, in plain pandas.

It reads the warehouse tables (``customers``, ``orders``, ``channel_preferences``, ``events``,
``loyalflow_responses``), the campaign YAML files and ``content_map.yaml`` itself, and re-derives the
rules of docs/architecture.md §3–§4 (segments, due steps with catch-up windows, channel choice, exits,
re-entry waits, holdout, nurture's next unseen item, 80:20 value tiers). Frequency caps, suppressions
and quiet hours are out of scope: the simulation disables caps and has no suppressions, and quiet hours
defer a message without changing who gets it. A channel's consent is its latest ``channel_preferences`` row
recorded by the run's send moment; when two anchors of one customer fall due in the same run, the
earlier anchor goes first (the later one waits for re-entry).
Nothing here imports loyalflow's pipeline, eligibility or segment code; the few formulas that are
part of the contract (holdout hash, idempotency key) are written out again from docs/architecture.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import phonenumbers
import sqlalchemy as sa
import yaml
from email_validator import EmailNotValidError, validate_email

Key = tuple[str, str, str, str]  # (campaign, step, customer_id, anchor_id)
DAY = dt.timedelta(days=1)
SHARED_FILES = ("brand", "content_map")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class StepConf:
    """One step of a campaign: its id and its delay after the (offset) anchor."""

    id: str
    delay_days: int


@dataclass(frozen=True)
class CampaignConf:
    """The settings of one ``campaigns/<id>.yaml`` the model needs (spec defaults filled in)."""

    id: str
    category: str
    channels: tuple[str, ...]
    steps: tuple[StepConf, ...]
    catch_up_days: int
    anchor_offset_days: int
    reentry_days: int | None
    holdout_percent: float
    priority: int
    params: dict[str, Any]

    @property
    def lookback_days(self) -> int:
        """How far back an anchor can lie and still have a step due today."""
        return self.anchor_offset_days + max(s.delay_days for s in self.steps) + self.catch_up_days


def load_campaigns(campaigns_dir: Path) -> dict[str, CampaignConf]:
    """Every campaign file, parsed with PyYAML (not loyalflow's spec loader)."""
    out: dict[str, CampaignConf] = {}
    for path in sorted(campaigns_dir.glob("*.yaml")):
        if path.stem in SHARED_FILES:
            continue
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        out[raw["id"]] = CampaignConf(
            id=raw["id"],
            category=raw.get("category", "marketing"),
            channels=tuple(raw["channels"]),
            steps=tuple(StepConf(s["id"], int(s.get("delay_days", 0))) for s in raw["steps"]),
            catch_up_days=int(raw.get("catch_up_days", 2)),
            anchor_offset_days=int(raw.get("anchor_offset_days", 0)),
            reentry_days=raw.get("reentry_days"),
            holdout_percent=float(raw.get("holdout_percent", 0)),
            priority=int(raw.get("priority", 50)),
            params=dict(raw.get("params") or {}),
        )
    return out


@dataclass(frozen=True)
class ContentMap:
    """Stage of each event type, and content item dicts per stage and persona."""

    stage_of: dict[str, str]
    content: dict[str, dict[str, list[dict[str, Any]]]]

    @classmethod
    def load(cls, path: Path) -> ContentMap:
        """Parse ``campaigns/content_map.yaml``."""
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        stage_of = {e: stage for stage, spec in raw["stages"].items() for e in spec["events"]}
        return cls(stage_of, raw["content"])

    def items(self, stage: str, persona: str | None) -> list[dict[str, Any]]:
        """The persona's items of the stage first, then the default ones, each id once."""
        by_persona = self.content.get(stage, {})
        seen: dict[str, dict[str, Any]] = {}
        for item in [*by_persona.get(persona or "", []), *by_persona.get("default", [])]:
            seen.setdefault(item["id"], item)
        return list(seen.values())


# --------------------------------------------------------------------------- contract formulas


def idempotency_key(campaign: str, step: str, customer_id: str, anchor_id: str) -> str:
    """docs/architecture.md §5: deterministic from campaign, step, customer and anchor."""
    return hashlib.sha256(f"{campaign}|{step}|{customer_id}|{anchor_id}".encode()).hexdigest()[:40]


def in_holdout(campaign: str, customer_id: str, percent: float) -> bool:
    """The deterministic holdout: first 4 bytes of sha256("holdout|campaign|customer") mod 10000."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"holdout|{campaign}|{customer_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10000 < percent * 100


def valid_email(value: object) -> bool:
    """email-validator without a DNS lookup."""
    if not isinstance(value, str) or not value:
        return False
    try:
        validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def valid_phone(value: object) -> bool:
    """An E.164 number (leading ``+``) that phonenumbers considers valid."""
    if not isinstance(value, str) or not value.startswith("+"):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value.strip(), None))
    except phonenumbers.NumberParseException:
        return False


def ntile(n: int, buckets: int = 5) -> np.ndarray:
    """SQL ``NTILE(buckets)`` over ``n`` ordered rows: the first ``n % buckets`` tiles get one row more."""
    size, rem = divmod(n, buckets)
    return np.repeat(np.arange(1, buckets + 1), [size + 1 if i < rem else size for i in range(buckets)])


TIER_NAMES = {1: "vip", 5: "bottom"}


def value_tiers(completed: pd.DataFrame) -> pd.Series:
    """80:20 tiers (vip, core, bottom) by lifetime completed spend; ties broken by customer_id."""
    spend = completed.groupby("customer_id")["total"].sum().round(2).reset_index()
    spend = spend.sort_values(["total", "customer_id"], ascending=[False, True], kind="stable")
    tiles = ntile(len(spend))
    return pd.Series([TIER_NAMES.get(int(t), "core") for t in tiles], index=spend["customer_id"].to_numpy())


# --------------------------------------------------------------------------- data


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts (typed loosely, unlike ``itertuples``)."""
    return cast(list[dict[str, Any]], frame.to_dict("records"))


@dataclass(frozen=True)
class StatusChange:
    """An order whose status was changed (a return or cancellation) before the runs of ``day``."""

    day: dt.date
    order_id: str
    before: str
    after: str


def orders_as_of(orders: pd.DataFrame, changes: Sequence[StatusChange], day: dt.date) -> pd.DataFrame:
    """Orders placed before the end of ``day``, with the status they had that day."""
    orders = orders[orders["ordered_at"] < pd.Timestamp(day + DAY)].copy()
    for ch in changes:
        if day < ch.day:
            orders.loc[orders["order_id"] == ch.order_id, "status"] = ch.before
    return orders


@dataclass
class Warehouse:
    """The tables the model reads, as DataFrames (timestamps naive UTC)."""

    customers: pd.DataFrame
    orders: pd.DataFrame
    prefs: pd.DataFrame
    events: pd.DataFrame
    responses: pd.DataFrame

    @classmethod
    def read(cls, engine: sa.Engine) -> Warehouse:
        """Read the whole warehouse (small in tests) into pandas."""

        def q(sql: str, dates: list[str]) -> pd.DataFrame:
            with engine.connect() as conn:
                frame = pd.read_sql_query(sa.text(sql), conn)
            for col in dates:
                frame[col] = pd.to_datetime(frame[col])
            return frame

        return cls(
            customers=q("SELECT customer_id, email, phone, persona FROM customers", []),
            orders=q(
                "SELECT order_id, customer_id, ordered_at, total, status, referred_by FROM orders",
                ["ordered_at"],
            ),
            prefs=q("SELECT customer_id, channel, opted_in, consented_at FROM channel_preferences", []),
            events=q("SELECT customer_id, event_type, occurred_at FROM events", ["occurred_at"]),
            responses=q(
                "SELECT customer_id, answer, snooze_until, received_at FROM loyalflow_responses",
                ["received_at"],
            ),
        )


@dataclass
class Row:
    """A segment row: a customer and anchor, optionally an exit reason or a single step it counts for."""

    customer_id: str
    anchor_id: str
    anchor_day: dt.date
    exit_reason: str | None = None
    step: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What the model expects: sends (day, channel, row extras), holdout decisions and a trace per key."""

    sent: dict[Key, tuple[dt.date, str]] = field(default_factory=dict)
    extras: dict[Key, dict[str, Any]] = field(default_factory=dict)
    holdout: set[Key] = field(default_factory=set)
    trace: dict[Key, list[tuple[dt.date, str]]] = field(default_factory=lambda: defaultdict(list))


# --------------------------------------------------------------------------- the model


class Model:
    """Re-derives every day's decisions of every campaign from the warehouse."""

    def __init__(
        self,
        warehouse: Warehouse,
        campaigns: dict[str, CampaignConf],
        content: ContentMap,
        changes: Sequence[StatusChange] = (),
        send_hour: dt.time = dt.time(15),
    ) -> None:
        self.wh = warehouse
        self.send_hour = send_hour
        self.campaigns = campaigns
        self.content = content
        self.changes = list(changes)
        self.out = Outcome()
        # campaign -> customer -> anchor -> last day a message of that anchor was sent
        self.history: dict[str, dict[str, dict[str, dt.date]]] = defaultdict(lambda: defaultdict(dict))
        # (customer, channel) -> consent rows as (moment, opted_in), oldest first (undated rows first)
        self._consent: dict[tuple[str, str], list[tuple[dt.datetime, bool]]] = defaultdict(list)
        prefs = warehouse.prefs.assign(_at=pd.to_datetime(warehouse.prefs["consented_at"]))
        for p in records(prefs.sort_values("_at", na_position="first", kind="stable")):
            at = dt.datetime.min if pd.isna(p["_at"]) else p["_at"].to_pydatetime()
            self._consent[(str(p["customer_id"]), str(p["channel"]))].append((at, bool(p["opted_in"])))
        self._valid = {
            (str(c["customer_id"]), channel): ok
            for c in records(warehouse.customers)
            for channel, ok in (("email", valid_email(c["email"])), ("sms", valid_phone(c["phone"])))
        }
        self.personas = {
            str(r["customer_id"]): (r["persona"] if isinstance(r["persona"], str) else None)
            for r in records(warehouse.customers)
        }

    # ---- facts that do not change from day to day

    def channel_of(self, channels: tuple[str, ...], customer_id: str, moment: dt.datetime) -> str | None:
        """The first channel (campaign order) whose latest consent row recorded by ``moment`` is an opt-in
        and whose address is valid. Undated rows count as the oldest; ties go to the later row."""
        for channel in channels:
            known = [opted for at, opted in self._consent.get((customer_id, channel), []) if at <= moment]
            if known and known[-1] and self._valid.get((customer_id, channel)):
                return channel
        return None

    # ---- as-of views

    def moment(self, day: dt.date) -> dt.datetime:
        """When the runs of ``day`` send (naive UTC): consent recorded later does not count yet."""
        return dt.datetime.combine(day, self.send_hour)

    def orders_as_of(self, day: dt.date) -> pd.DataFrame:
        """Orders placed before the end of ``day``, with the status they had that day."""
        return orders_as_of(self.wh.orders, self.changes, day)

    def responses_as_of(self, day: dt.date) -> pd.DataFrame:
        """Responses received before the end of ``day``."""
        r = self.wh.responses
        return r[r["received_at"] < pd.Timestamp(day + DAY)]

    # ---- segments (one per campaign), each returning rows in anchor order

    @staticmethod
    def _window(camp: CampaignConf, day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
        """[window_start, anchor_end): anchors that may have a step due on ``day``."""
        start = pd.Timestamp(day - dt.timedelta(days=camp.lookback_days))
        end = pd.Timestamp(day + DAY - dt.timedelta(days=camp.anchor_offset_days))
        return start, end

    def seg_thank_you(self, camp: CampaignConf, day: dt.date, orders: pd.DataFrame, **_: Any) -> list[Row]:
        """Buyers per booking day; referrers per referred booking (both: completed orders only)."""
        start, end = self._window(camp, day)
        done = orders[(orders["status"] == "completed") & orders["ordered_at"].between(start, end, "left")]
        rows = [
            Row(str(cid), d.isoformat(), d, step="thanks")
            for (cid, d) in sorted(
                {(c, t.date()) for c, t in zip(done["customer_id"], done["ordered_at"], strict=True)}
            )
        ]
        ref = done[done["referred_by"].notna()]
        rows += [
            Row(str(r["referred_by"]), str(r["order_id"]), r["ordered_at"].date(), step="referrer_thanks")
            for r in records(ref)
        ]
        return rows

    def seg_remorse_reduction(
        self, camp: CampaignConf, day: dt.date, orders: pd.DataFrame, **_: Any
    ) -> list[Row]:
        """Every booking in the window; returned or cancelled ones exit."""
        start, end = self._window(camp, day)
        w = orders[orders["ordered_at"].between(start, end, "left")].sort_values(["ordered_at", "order_id"])
        exits = {"returned": "order returned", "cancelled": "order cancelled"}
        return [
            Row(
                str(r["customer_id"]), str(r["order_id"]), r["ordered_at"].date(), exits.get(str(r["status"]))
            )
            for r in records(w)
        ]

    def seg_referral_ask(
        self, camp: CampaignConf, day: dt.date, orders: pd.DataFrame, responses: pd.DataFrame, **_: Any
    ) -> list[Row]:
        """Completed bookings of VIPs or positive responders; a return or a negative answer exits."""
        start, end = self._window(camp, day)
        completed = orders[orders["status"] == "completed"]
        tiers = value_tiers(completed)
        positive = set(responses.loc[responses["answer"] == "positive", "customer_id"])
        negative = set(responses.loc[responses["answer"] == "negative", "customer_id"])
        returners = set(orders.loc[orders["status"] == "returned", "customer_id"])
        w = completed[completed["ordered_at"].between(start, end, "left")].sort_values(
            ["ordered_at", "order_id"]
        )
        rows = []
        for r in records(w):
            tier = tiers[r["customer_id"]]
            if tier != "vip" and r["customer_id"] not in positive:
                continue
            reason = (
                "returned a booking"
                if r["customer_id"] in returners
                else "negative response"
                if r["customer_id"] in negative
                else None
            )
            rows.append(
                Row(
                    str(r["customer_id"]),
                    str(r["order_id"]),
                    r["ordered_at"].date(),
                    reason,
                    extra={"value_tier": tier},
                )
            )
        return rows

    def seg_dormant_reactivation(
        self, camp: CampaignConf, day: dt.date, orders: pd.DataFrame, responses: pd.DataFrame, **_: Any
    ) -> list[Row]:
        """Last completed booking at least ``anchor_offset_days`` old; a negative answer or snooze exits."""
        start, end = self._window(camp, day)
        completed = orders[orders["status"] == "completed"]
        tiers = value_tiers(completed)
        last = (
            completed.sort_values(["ordered_at", "order_id"], ascending=False)
            .groupby("customer_id", sort=False)
            .head(1)
        )
        last = last[last["ordered_at"].between(start, end, "left")].sort_values(["ordered_at", "order_id"])
        negative = responses[responses["answer"] == "negative"]
        last_negative = negative.groupby("customer_id")["received_at"].max().dt.date.to_dict()
        later = responses[(responses["answer"] == "later") & responses["snooze_until"].notna()]
        snoozed = later.groupby("customer_id")["snooze_until"].max().astype(str).to_dict()
        rows = []
        for r in records(last):
            cid = str(r["customer_id"])
            reason = None
            if cid in last_negative and last_negative[cid] >= r["ordered_at"].date():
                reason = "negative response"
            elif cid in snoozed and snoozed[cid] > day.isoformat():
                reason = "snoozed"
            rows.append(
                Row(cid, str(r["order_id"]), r["ordered_at"].date(), reason, extra={"value_tier": tiers[cid]})
            )
        return rows

    def seg_buying_cycle_nurture(self, camp: CampaignConf, day: dt.date, **_: Any) -> list[Row]:
        """Latest stage-bearing event of the last ``activity_days``; the next unseen item of that stage."""
        ev = self.wh.events
        since = pd.Timestamp(day - dt.timedelta(days=int(camp.params["activity_days"])))
        ev = ev[
            ev["event_type"].isin(self.content.stage_of)
            & ev["occurred_at"].between(since, pd.Timestamp(day + DAY), "left")
        ]
        latest = (
            ev.sort_values(["occurred_at", "event_type"], ascending=[False, True])
            .groupby("customer_id")
            .head(1)
        )
        seen = self.history[camp.id]
        rows = []
        for r in records(latest.sort_values("customer_id")):
            cid = str(r["customer_id"])
            stage = self.content.stage_of[str(r["event_type"])]
            nxt = next(
                (i for i in self.content.items(stage, self.personas.get(cid)) if i["id"] not in seen[cid]),
                None,
            )
            if nxt is None:
                rows.append(Row(cid, f"{stage}-complete", day, f"no unseen {stage} content left"))
            else:
                rows.append(Row(cid, str(nxt["id"]), day, extra={"stage": stage, "item": nxt}))
        return rows

    # ---- the sequence engine

    @staticmethod
    def due(camp: CampaignConf, row: Row, day: dt.date) -> list[StepConf]:
        """Steps whose day (anchor + offset + delay) is today or within the catch-up window."""
        start = row.anchor_day + dt.timedelta(days=camp.anchor_offset_days)
        earliest = day - dt.timedelta(days=camp.catch_up_days)
        return [
            s
            for s in camp.steps
            if earliest <= start + dt.timedelta(days=s.delay_days) <= day and row.step in (None, s.id)
        ]

    def reentry(self, camp: CampaignConf, key: Key, day: dt.date) -> str | None:
        """Why a new anchor must wait: another anchor of the campaign was messaged too recently."""
        if camp.reentry_days is None or key in self.out.sent:
            return None
        _, _, cid, anchor = key
        recent = [
            d
            for a, d in self.history[camp.id][cid].items()
            if a != anchor and d > day - dt.timedelta(days=camp.reentry_days)
        ]
        return f"re-entry wait (last {max(recent)})" if recent else None

    def decide(self, camp: CampaignConf, day: dt.date, rows: list[Row]) -> None:
        """Channel, exit/re-entry, holdout, already sent, in that order; record sends."""
        for row in rows:
            for step in self.due(camp, row, day):
                key: Key = (camp.id, step.id, row.customer_id, row.anchor_id)
                trace = self.out.trace[key]
                if row.customer_id not in self.personas:
                    trace.append((day, "unknown customer"))
                    continue
                channel = self.channel_of(camp.channels, row.customer_id, self.moment(day))
                if channel is None:
                    trace.append((day, "no usable channel"))
                    continue
                reason = row.exit_reason or self.reentry(camp, key, day)
                if reason:
                    trace.append((day, f"exited: {reason}"))
                elif in_holdout(camp.id, row.customer_id, camp.holdout_percent):
                    trace.append((day, "holdout"))
                    self.out.holdout.add(key)
                elif key in self.out.sent:
                    trace.append((day, "already sent"))
                else:
                    trace.append((day, f"sent by {channel}"))
                    self.out.sent[key] = (day, channel)
                    self.out.extras[key] = row.extra
                    self.history[camp.id][row.customer_id][row.anchor_id] = day

    def simulate(self, days: list[dt.date]) -> Outcome:
        """Every campaign on every day, highest priority first."""
        order = sorted(self.campaigns.values(), key=lambda c: -c.priority)
        for day in days:
            orders = self.orders_as_of(day)
            responses = self.responses_as_of(day)
            for camp in order:
                segment = getattr(self, f"seg_{camp.id}")
                self.decide(camp, day, segment(camp, day, orders=orders, responses=responses))
        return self.out
