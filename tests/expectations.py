"""An independent model of who should receive which campaign step, day by day, in plain pandas.

It reads the warehouse tables (``customers``, ``orders``, ``channel_preferences``, ``events``,
``loyalflow_responses``), the campaign YAML files and ``content_map.yaml`` itself, and re-derives the
rules of docs/architecture.md §3–§4 (segments, due steps with catch-up windows, channel choice, exits,
re-entry waits, holdout, nurture's next unseen item, 80:20 value tiers) and the entry semantics:

- *activation*: a campaign's first simulated day; an event-entry step whose day falls before it (less
  ``backfill_days``) is never sent (recorded ``before_start`` while it is inside the catch-up window);
- *state entry* (``entry: state``, dormant reactivation): every customer in the state enters on the
  first run that finds them (at most ``max_entries_per_day`` a day, in customer order), as anchor
  ``entry:<day>``, steps counted from that day; leaving the state ends the episode, a new one may start
  ``reentry_days`` after the previous entry (the ledger-based re-entry wait is for event entry only);
- *bundling*: a customer's due rows of one step and one step day are one message, led by the first row
  in segment order (customer, anchor time, anchor id); the other anchors are ``bundled``; a row with an
  exit reason never joins a bundle (it is decided, and recorded as exited, on its own);
- *response rules* (``responses:`` in the YAML): ``qualify_on_positive``, ``exit_on_negative``
  (``ever`` / ``since_anchor``) and ``snooze`` (the next step waits for the snooze end, the later ones
  keep their spacing).

Frequency caps, suppressions and quiet hours are out of scope: the simulation disables caps and has no
suppressions, and quiet hours defer a message without changing who gets it. A channel's consent is its
latest ``channel_preferences`` row recorded by the run's send moment; when two anchors of one customer
fall due in the same run on different days, the earlier anchor goes first (the later one waits for
re-entry). Nothing here imports loyalflow code; the few formulas that are part of the contract (holdout
hash, idempotency key) are written out again from docs/architecture.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
class ResponseRules:
    """The ``responses:`` block of a campaign file: how customers' answers count."""

    qualify_on_positive: bool = False  # a row marked ``qualifies: false`` stays for positive answerers
    exit_on_negative: str = "never"  # never | ever | since_anchor
    snooze: bool = False  # "later" pauses the sequence; it resumes at the next step


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
    entry: str = "event"  # event | state
    backfill_days: int = 0
    max_entries_per_day: int | None = None
    responses: ResponseRules = field(default_factory=lambda: ResponseRules())

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
            entry=str(raw.get("entry", "event")),
            backfill_days=int(raw.get("backfill_days", 0)),
            max_entries_per_day=raw.get("max_entries_per_day"),
            responses=ResponseRules(**(raw.get("responses") or {})),
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
    """docs/architecture.md §5: a campaign's new keys, in customer order within a step."""

    def sha(text: str, length: int) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:length]

    plain = customer_id.isascii() and customer_id.replace("_", "").replace("-", "").isalnum()
    if plain and customer_id.isdigit() and len(customer_id) <= 19 and str(int(customer_id)) == customer_id:
        who = "n" + customer_id.zfill(19)
    elif plain and len(customer_id) <= 36:
        who = "s" + customer_id
    else:
        who = "h" + sha(customer_id, 24)
    return sha(f"{campaign}|{step}", 8) + who + sha(f"{campaign}|{step}|{customer_id}|{anchor_id}", 16)


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
                "SELECT id, customer_id, answer, snooze_until, received_at FROM loyalflow_responses",
                ["received_at"],
            ),
        )


@dataclass(frozen=True)
class Answer:
    """One stored answer: positive, negative or later (with the day the snooze ends)."""

    answer: str
    on: dt.date
    snooze_until: dt.date | None


Pause = tuple[dt.date, dt.date]  # (the day the snooze was received, the day it ends)


@dataclass
class Row:
    """A segment row: a customer and anchor, optionally an exit reason or a single step it counts for."""

    customer_id: str
    anchor_id: str
    anchor_at: dt.datetime
    exit_reason: str | None = None
    step: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    pause: Pause | None = None

    @property
    def anchor_day(self) -> dt.date:
        """The day of the anchor (an order's day, or a state entry's day)."""
        return self.anchor_at.date()

    @property
    def order(self) -> tuple[str, dt.datetime, str]:
        """Segment order: customer, anchor time, anchor id."""
        return (self.customer_id, self.anchor_at, self.anchor_id)


@dataclass
class Episode:
    """One stay of a customer in a state-entry campaign."""

    entered_on: dt.date
    exited_on: dt.date | None = None
    exit_reason: str | None = None


@dataclass
class Outcome:
    """What the model expects: sends (day, channel, row extras), holdout decisions and a trace per key.

    ``bundled`` maps each anchor that went out inside another anchor's message to the message's key;
    ``before_start`` holds the keys recorded as falling before the campaign started; ``entries`` the
    episodes of state-entry campaigns (campaign -> customer -> episodes, oldest first).
    """

    sent: dict[Key, tuple[dt.date, str]] = field(default_factory=dict)
    extras: dict[Key, dict[str, Any]] = field(default_factory=dict)
    holdout: set[Key] = field(default_factory=set)
    bundled: dict[Key, Key] = field(default_factory=dict)
    before_start: set[Key] = field(default_factory=set)
    entries: dict[str, dict[str, list[Episode]]] = field(default_factory=lambda: defaultdict(dict))
    activation: dict[str, dt.date] = field(default_factory=dict)
    trace: dict[Key, list[tuple[dt.date, str]]] = field(default_factory=lambda: defaultdict(list))

    def handled(self, key: Key) -> bool:
        """Sent, or sent inside another anchor's message: it counts as sent."""
        return key in self.sent or key in self.bundled


# --------------------------------------------------------------------------- the model


def _falsy(value: object) -> bool:
    return value is None or value is False or value == 0 or str(value).lower() in ("false", "0", "no")


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
        # campaign -> customer -> anchor -> last day a message led by that anchor was sent
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

    def answers_as_of(self, day: dt.date) -> dict[str, list[Answer]]:
        """Each customer's answers received before the end of ``day``, oldest first."""
        out: dict[str, list[Answer]] = defaultdict(list)
        for r in records(self.responses_as_of(day).sort_values(["received_at", "id"], kind="stable")):
            until = r["snooze_until"]
            out[str(r["customer_id"])].append(
                Answer(
                    str(r["answer"]),
                    r["received_at"].date(),
                    None if until is None or pd.isna(until) else dt.date.fromisoformat(str(until)[:10]),
                )
            )
        return out

    # ---- segments (one per campaign)

    @staticmethod
    def _window(camp: CampaignConf, day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
        """[window_start, anchor_end): anchors that may have a step due on ``day``."""
        start = pd.Timestamp(day - dt.timedelta(days=camp.lookback_days))
        end = pd.Timestamp(day + DAY - dt.timedelta(days=camp.anchor_offset_days))
        return start, end

    @staticmethod
    def _since(day: dt.date, days: int) -> pd.Timestamp:
        """The start of the last ``days`` days, ``day`` included (the end of ``day`` less ``days``)."""
        return pd.Timestamp(day + DAY - dt.timedelta(days=days))

    def seg_thank_you(self, camp: CampaignConf, day: dt.date, orders: pd.DataFrame, **_: Any) -> list[Row]:
        """One row per completed booking (step thanks) and per referred completed booking (the referrer's
        step referrer_thanks); bundling makes a guest's (a referrer's) bookings of one day one message."""
        start, end = self._window(camp, day)
        done = orders[(orders["status"] == "completed") & orders["ordered_at"].between(start, end, "left")]
        rows = [
            Row(str(r["customer_id"]), str(r["order_id"]), r["ordered_at"].to_pydatetime(), step="thanks")
            for r in records(done)
        ]
        rows += [
            Row(
                str(r["referred_by"]),
                str(r["order_id"]),
                r["ordered_at"].to_pydatetime(),
                step="referrer_thanks",
                extra={"friend": str(r["customer_id"])},
            )
            for r in records(done[done["referred_by"].notna()])
        ]
        return rows

    def seg_remorse_reduction(
        self, camp: CampaignConf, day: dt.date, orders: pd.DataFrame, **_: Any
    ) -> list[Row]:
        """Every booking in the window; returned or cancelled ones exit."""
        start, end = self._window(camp, day)
        w = orders[orders["ordered_at"].between(start, end, "left")]
        exits = {"returned": "order returned", "cancelled": "order cancelled"}
        return [
            Row(
                str(r["customer_id"]),
                str(r["order_id"]),
                r["ordered_at"].to_pydatetime(),
                exits.get(str(r["status"])),
            )
            for r in records(w)
        ]

    def seg_referral_ask(self, camp: CampaignConf, day: dt.date, orders: pd.DataFrame, **_: Any) -> list[Row]:
        """Completed bookings in the window, ``qualifies`` for VIPs; a booking returned within
        ``return_exit_days`` exits (answers count through the response rules)."""
        start, end = self._window(camp, day)
        completed = orders[orders["status"] == "completed"]
        tiers = value_tiers(completed)
        since = self._since(day, int(camp.params["return_exit_days"]))
        returned = orders[(orders["status"] == "returned") & (orders["ordered_at"] >= since)]
        returners = set(returned["customer_id"].astype(str))
        w = completed[completed["ordered_at"].between(start, end, "left")]
        rows = []
        for r in records(w):
            cid, tier = str(r["customer_id"]), str(tiers[r["customer_id"]])
            rows.append(
                Row(
                    cid,
                    str(r["order_id"]),
                    r["ordered_at"].to_pydatetime(),
                    "returned a booking" if cid in returners else None,
                    extra={"value_tier": tier, "qualifies": tier == "vip"},
                )
            )
        return rows

    def seg_dormant_reactivation(
        self, camp: CampaignConf, day: dt.date, orders: pd.DataFrame, **_: Any
    ) -> list[Row]:
        """Customers in the dormant state: a completed booking, none in the last ``dormant_days`` days.

        Anchored on the last completed booking; :meth:`admit` re-anchors each on their entry day."""
        completed = orders[orders["status"] == "completed"]
        tiers = value_tiers(completed)
        last = (
            completed.sort_values(["ordered_at", "order_id"], ascending=False)
            .groupby("customer_id", sort=False)
            .head(1)
        )
        last = last[last["ordered_at"] < self._since(day, int(camp.params["dormant_days"]))]
        return [
            Row(
                str(r["customer_id"]),
                str(r["order_id"]),
                r["ordered_at"].to_pydatetime(),
                extra={"value_tier": str(tiers[r["customer_id"]]), "last_order_id": str(r["order_id"])},
            )
            for r in records(last)
        ]

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
        today = dt.datetime.combine(day, dt.time())
        rows = []
        for r in records(latest):
            cid = str(r["customer_id"])
            stage = self.content.stage_of[str(r["event_type"])]
            nxt = next(
                (i for i in self.content.items(stage, self.personas.get(cid)) if i["id"] not in seen[cid]),
                None,
            )
            if nxt is None:
                rows.append(Row(cid, f"{stage}-complete", today, f"no unseen {stage} content left"))
            else:
                rows.append(Row(cid, str(nxt["id"]), today, extra={"stage": stage, "item": nxt}))
        return rows

    # ---- entries, response rules, due steps, bundles

    def admit(self, camp: CampaignConf, day: dt.date, rows: list[Row]) -> list[Row]:
        """State entry: each matching customer continues their open episode or enters one today (within the
        daily limit, in segment order, and ``reentry_days`` after their previous entry); an open episode
        older than that is closed and a new one starts; open episodes of customers who no longer match
        are closed. Rows come back anchored on the entry day (``entry:<day>``)."""
        episodes = self.out.entries[camp.id]
        entered_today = sum(1 for eps in episodes.values() for e in eps if e.entered_on == day)
        wait = None if camp.reentry_days is None else dt.timedelta(days=camp.reentry_days)
        seen: set[str] = set()
        out: list[Row] = []
        for row in rows:
            cid = row.customer_id
            if cid in seen:
                continue
            seen.add(cid)
            mine = episodes.setdefault(cid, [])
            latest = mine[-1] if mine else None
            recent = latest is not None and (wait is None or latest.entered_on + wait > day)
            if latest is not None and latest.exited_on is None and recent:
                out.append(self._anchored(row, latest.entered_on))
                continue
            if latest is not None and latest.exited_on is not None and recent and wait is not None:
                continue  # the re-entry wait after the previous episode
            if camp.max_entries_per_day is not None and entered_today >= camp.max_entries_per_day:
                continue  # today's entries are used up: a later day
            if latest is not None and latest.exited_on is None:
                latest.exited_on, latest.exit_reason = day, "re-entry period over"
            mine.append(Episode(day))
            entered_today += 1
            out.append(self._anchored(row, day))
        for cid, eps in episodes.items():
            if cid not in seen and eps and eps[-1].exited_on is None and eps[-1].entered_on < day:
                eps[-1].exited_on, eps[-1].exit_reason = day, "left the segment"
        return out

    @staticmethod
    def _anchored(row: Row, entered_on: dt.date) -> Row:
        at = dt.datetime.combine(entered_on, dt.time())
        extra = {**row.extra, "segment_anchor_id": row.anchor_id}
        return Row(row.customer_id, f"entry:{entered_on.isoformat()}", at, row.exit_reason, row.step, extra)

    @staticmethod
    def apply_rules(camp: CampaignConf, rows: list[Row], answers: dict[str, list[Answer]]) -> list[Row]:
        """The campaign's response rules: drop, exit or pause rows by what their customer answered."""
        rules = camp.responses
        out = []
        for row in rows:
            mine = answers.get(row.customer_id, [])
            if rules.qualify_on_positive and "qualifies" in row.extra and _falsy(row.extra["qualifies"]):
                if not any(a.answer == "positive" for a in mine):
                    continue
            if rules.exit_on_negative != "never" and not row.exit_reason:
                since = row.anchor_day if rules.exit_on_negative == "since_anchor" else dt.date.min
                said_no = [a.on for a in mine if a.answer == "negative" and a.on >= since]
                if said_no:
                    row = replace(row, exit_reason=f"negative response on {said_no[-1]}")
            if rules.snooze:
                later = [a for a in mine if a.answer == "later" and a.snooze_until and a.on >= row.anchor_day]
                if later and later[-1].snooze_until is not None:
                    row = replace(row, pause=(later[-1].on, later[-1].snooze_until))
            out.append(row)
        return out

    @staticmethod
    def step_days(camp: CampaignConf, row: Row) -> list[tuple[StepConf, dt.date]]:
        """Each step's day: anchor + offset + delay; after a snooze received on day r and ending on day u,
        every step day after r moves by max(0, u - the first such day) (the step of day r itself, whose
        message the customer answered, stays)."""
        start = row.anchor_day + dt.timedelta(days=camp.anchor_offset_days)
        days = [start + dt.timedelta(days=s.delay_days) for s in camp.steps]
        if row.pause is not None:
            received, until = row.pause
            upcoming = [d for d in days if d > received]
            shift = dt.timedelta(days=max(0, (until - min(upcoming)).days) if upcoming else 0)
            days = [d + shift if d > received else d for d in days]
        return list(zip(camp.steps, days, strict=True))

    def due(self, camp: CampaignConf, row: Row, day: dt.date) -> list[tuple[StepConf, dt.date]]:
        """Steps (with their day) that fall on ``day`` or within the catch-up window before it."""
        earliest = day - dt.timedelta(days=camp.catch_up_days)
        return [
            (s, d) for s, d in self.step_days(camp, row) if earliest <= d <= day and row.step in (None, s.id)
        ]

    def bundles(
        self, camp: CampaignConf, rows: list[Row], day: dt.date, not_before: dt.date | None
    ) -> list[tuple[StepConf, dt.date, bool, list[Row]]]:
        """(step, step day, before start?, rows): a customer's due rows of one step and step day, in
        segment order, the first leading. Steps before the start and exited anchors stand alone (each is
        recorded on its own)."""
        groups: dict[tuple[str, str, dt.date, str], tuple[StepConf, dt.date, bool, list[Row]]] = {}
        for row in sorted(rows, key=lambda r: r.order):
            for step, step_day in self.due(camp, row, day):
                early = not_before is not None and step_day < not_before
                alone = early or bool(row.exit_reason)  # an exited anchor is decided on its own
                slot = (row.customer_id, step.id, step_day, row.anchor_id if alone else "")
                groups.setdefault(slot, (step, step_day, early, []))[3].append(row)
        return list(groups.values())

    def reentry(self, camp: CampaignConf, key: Key, day: dt.date) -> str | None:
        """Why a new anchor must wait: another anchor of the campaign was messaged too recently."""
        if camp.entry != "event" or camp.reentry_days is None or self.out.handled(key):
            return None
        _, _, cid, anchor = key
        recent = [
            d
            for a, d in self.history[camp.id][cid].items()
            if a != anchor and d > day - dt.timedelta(days=camp.reentry_days)
        ]
        return f"re-entry wait (last {max(recent)})" if recent else None

    # ---- decisions

    def decide(self, camp: CampaignConf, day: dt.date, rows: list[Row]) -> None:
        """Entries, response rules, bundles; then before start, exit/re-entry, channel, holdout, already
        sent (the order of the product's rules); record sends and bundled anchors. A bundle is decided as
        one message, on its lead row (exited anchors never join a bundle: they are decided alone)."""
        activated = self.out.activation.setdefault(camp.id, day)  # the first run is the activation
        not_before = activated - dt.timedelta(days=camp.backfill_days) if camp.entry == "event" else None
        rows = sorted(rows, key=lambda r: r.order)
        if camp.entry == "state":
            rows = self.admit(camp, day, rows)
        rows = self.apply_rules(camp, rows, self.answers_as_of(day))
        for step, step_day, early, members in self.bundles(camp, rows, day, not_before):
            lead = members[0]
            key: Key = (camp.id, step.id, lead.customer_id, lead.anchor_id)
            others: list[Key] = [(camp.id, step.id, m.customer_id, m.anchor_id) for m in members[1:]]
            trace = self.out.trace[key]
            if lead.customer_id not in self.personas:
                trace.append((day, "unknown customer"))
                continue
            if early:
                trace.append((day, f"before start (step day {step_day})"))
                self.out.before_start.add(key)
                continue
            if not self.out.handled(key) and any(k in self.out.sent for k in others):
                trace.append((day, "already sent (another anchor of this step and day)"))
                continue
            channel = self.channel_of(camp.channels, lead.customer_id, self.moment(day))
            if channel is None:
                trace.append((day, "no usable channel"))
                continue
            reason = lead.exit_reason or self.reentry(camp, key, day)
            if reason:
                trace.append((day, f"exited: {reason}"))
            elif in_holdout(camp.id, lead.customer_id, camp.holdout_percent):
                trace.append((day, "holdout"))
                self.out.holdout.add(key)
            elif self.out.handled(key):
                trace.append((day, "already sent"))
            else:
                trace.append((day, f"sent by {channel} (step day {step_day}, {len(members)} anchor(s))"))
                self.out.sent[key] = (day, channel)
                self.out.extras[key] = {**lead.extra, "items": [m.anchor_id for m in members]}
                self.history[camp.id][lead.customer_id][lead.anchor_id] = day
                for other in others:
                    if not self.out.handled(other):
                        self.out.bundled[other] = key
                        self.out.trace[other].append((day, f"bundled into {key[3]}"))

    def simulate(self, days: list[dt.date]) -> Outcome:
        """Every campaign on every day, highest priority first."""
        order = sorted(self.campaigns.values(), key=lambda c: -c.priority)
        for day in days:
            orders = self.orders_as_of(day)
            for camp in order:
                segment = getattr(self, f"seg_{camp.id}")
                self.decide(camp, day, segment(camp, day, orders=orders))
        return self.out
