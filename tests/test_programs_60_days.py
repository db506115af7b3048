"""Sixty simulated days of every campaign, compared exactly with an independent pandas model.

The demo warehouse (``demo_data.seed``) plus a few scripted customers is run day by day through
``pipeline.run`` for every campaign, highest priority first; every campaign is activated on the first
simulated day (START), so two years of history are not back-filled. ``tests/expectations.py``
re-derives, from the same tables, who is due for which step of which anchor on which channel, who is
held out, who exits, which anchors are bundled into one message, which steps fall before the start and
who enters the dormant (state-entry) sequence when; the sent messages (ledger and outbox), the bundled
anchors, the recorded holdout and before-start decisions and the entries must equal the model exactly.
Frequency caps are disabled on purpose (99 a day / a week): their cross-campaign interplay is tested
elsewhere, and here they would make the expected set depend on run order.
SQLite runs with ``synchronous=OFF`` (a test database: durability is not under test, speed is).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from loyalflow.demo.data import seed
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.warehouse import engine_for
from tests.expectations import (
    CampaignConf,
    ContentMap,
    Key,
    Model,
    Outcome,
    StatusChange,
    Warehouse,
    idempotency_key,
    in_holdout,
    load_campaigns,
    orders_as_of,
    records,
)
from tests.factories import Shop

ROOT = Path(__file__).resolve().parents[1]
END = dt.date(2026, 11, 20)
N_DAYS = 60
START = END - dt.timedelta(days=N_DAYS - 1)
DAY = dt.timedelta(days=1)
DAYS = [START + dt.timedelta(days=i) for i in range(N_DAYS)]
CUSTOMERS = 400
SEND_HOUR = dt.time(15)
Sent = tuple[str, str, str, str, str]  # (campaign, step, customer_id, anchor_id, channel)


def on(day: int, hour: int = 10) -> dt.datetime:
    """``day`` days after START, at ``hour`` UTC."""
    return dt.datetime.combine(START + dt.timedelta(days=day), dt.time(hour))


# --------------------------------------------------------------------------- scripted customers


@dataclass(frozen=True)
class Response:
    """An answer recorded on ``day`` (before that day's runs)."""

    day: dt.date
    customer_id: str
    answer: str
    snooze_until: dt.date | None = None


@dataclass
class Script:
    """Customers added to the seed so every exit rule is exercised, plus what happens to them when."""

    ids: dict[str, str] = field(default_factory=dict)
    responses: list[Response] = field(default_factory=list)
    changes: list[StatusChange] = field(default_factory=list)


def pick_id(prefix: str, campaigns: dict[str, CampaignConf], held_out_of: Iterable[str] = ()) -> str:
    """The first ``<prefix>NN`` id that is in the holdout of exactly the campaigns ``held_out_of``."""
    wanted = set(held_out_of)
    for n in range(1, 10_000):
        cid = f"{prefix}{n:02d}"
        if all(in_holdout(c.id, cid, c.holdout_percent) == (c.id in wanted) for c in campaigns.values()):
            return cid
    raise AssertionError(f"no id found for {prefix}")


def add_script(shop: Shop, campaigns: dict[str, CampaignConf]) -> Script:
    """Scripted customers (ids start with ``S``, orders with ``SO``); timings are days after START."""
    s = Script()
    dormant = dt.timedelta(days=int(campaigns["dormant_reactivation"].params["dormant_days"]))

    def customer(role: str, held_out_of: Iterable[str] = ()) -> str:
        cid = pick_id(f"S-{role}-", campaigns, held_out_of)
        s.ids[role] = shop.customer(customer_id=cid, first_name=role.title())
        return cid

    def order(role: str, at: dt.datetime, total: float, referred_by: str | None = None) -> str:
        oid = f"SO-{role}-{at:%Y%m%d%H}"
        return shop.order(s.ids[role], at, total=total, order_id=oid, referred_by=referred_by)

    def respond(role: str, day: int, answer: str, snooze: int | None = None) -> None:
        until = START + dt.timedelta(days=snooze) if snooze is not None else None
        s.responses.append(Response(START + dt.timedelta(days=day), s.ids[role], answer, until))

    # A return stops remorse (day-10 step) and referral (the customer's other booking).
    customer("returner")
    respond("returner", 1, "positive")
    returned = order("returner", on(2), 480.0)
    s.ids["returned_order"] = returned
    s.ids["returner_second_order"] = order("returner", on(6), 350.0)
    s.changes.append(StatusChange(START + dt.timedelta(days=8), returned, "completed", "returned"))
    # A cancellation stops remorse too.
    customer("canceller")
    cancelled = order("canceller", on(30), 390.0)
    s.ids["cancelled_order"] = cancelled
    s.changes.append(StatusChange(START + dt.timedelta(days=35), cancelled, "completed", "cancelled"))
    # A positive answer makes a low spender eligible for the referral ask.
    customer("positive")
    s.ids["positive_order"] = order("positive", on(5), 150.0)
    respond("positive", 10, "positive")
    # A negative answer stops the referral ask ...
    customer("negref")
    respond("negref", 1, "positive")
    s.ids["negref_order"] = order("negref", on(4), 220.0)
    respond("negref", 15, "negative")
    # ... and dormant reactivation.
    customer("negdormant")
    order("negdormant", on(3) - dormant, 300.0)
    respond("negdormant", 6, "negative")
    # A new booking stops dormant reactivation.
    customer("buyer")
    order("buyer", on(2) - dormant, 400.0)
    s.ids["buyer_new_order"] = order("buyer", on(12), 260.0)
    # "Ask me later" pauses dormant reactivation; it resumes at the next step once the snooze ends:
    # enters on day 20 (reminder), snoozes on day 22 until day 30: the offer (day 27) waits for day 30,
    # why_stop (34) and last_call (50) keep their spacing (37, 53).
    customer("snoozer")
    order("snoozer", on(20) - dormant, 310.0)
    respond("snoozer", 22, "later", snooze=30)
    # A dormant customer in the holdout: every step recorded as holdout, none sent.
    customer("holdout", held_out_of=["dormant_reactivation"])
    order("holdout", on(5) - dormant, 280.0)
    # Two bookings on one day are one message per step (thanks, reassurance, get_the_most, ask); the
    # positive answer makes the guest eligible for the referral ask whatever their tier.
    customer("twice")
    respond("twice", 1, "positive")
    s.ids["twice_first"] = order("twice", on(8, 9), 210.0)
    s.ids["twice_second"] = order("twice", on(8, 18), 190.0)
    # Two friends a guest referred book on the same day: one referrer thank-you for both.
    customer("referrer")
    order("referrer", on(-100), 260.0)
    customer("friend_a")
    customer("friend_b")
    s.ids["friend_a_order"] = order("friend_a", on(9, 10), 240.0, referred_by=s.ids["referrer"])
    s.ids["friend_b_order"] = order("friend_b", on(9, 16), 250.0, referred_by=s.ids["referrer"])
    return s


# --------------------------------------------------------------------------- the simulation


@dataclass(frozen=True)
class Logged:
    """One row of the send ledger."""

    key: str
    campaign: str
    step: str
    customer_id: str
    anchor_id: str
    channel: str
    status: str
    day: dt.date
    send_at: dt.datetime | None

    @property
    def anchor_key(self) -> Key:
        """(campaign, step, customer, anchor)."""
        return (self.campaign, self.step, self.customer_id, self.anchor_id)

    @property
    def sent(self) -> Sent:
        """(campaign, step, customer, anchor, channel)."""
        return (*self.anchor_key, self.channel)


@dataclass(frozen=True)
class Decided:
    """One recorded decision."""

    day: dt.date
    key: Key
    reason: str
    detail: str


@dataclass(frozen=True)
class Entered:
    """One row of loyalflow_entries: an episode of a state-entry campaign."""

    campaign: str
    customer_id: str
    entered_on: dt.date
    exited_on: dt.date | None
    exit_reason: str | None


@dataclass
class Sim:
    """What the product did (ledger, decisions, entries, outbox) and what the model expects."""

    campaigns: dict[str, CampaignConf]
    script: Script
    warehouse: Warehouse
    expected: Outcome
    ledger: list[Logged]
    decisions: list[Decided]
    entries: list[Entered]
    outbox: list[dict[str, Any]]
    seconds: float
    by_key: dict[Key, list[Decided]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_key = defaultdict(list)
        for d in self.decisions:
            self.by_key[d.key].append(d)

    @property
    def sent_rows(self) -> list[Logged]:
        """Ledger rows with status ``sent``."""
        return [r for r in self.ledger if r.status == "sent"]

    def bundled(self) -> set[Key]:
        """Anchors recorded as sent inside another anchor's message (ledger status ``bundled``)."""
        return {r.anchor_key for r in self.ledger if r.status == "bundled"}

    def before_start(self) -> set[Key]:
        """Keys with a recorded ``before_start`` decision."""
        return {d.key for d in self.decisions if d.reason == "before_start"}

    def sent(self) -> set[Sent]:
        """(campaign, step, customer, anchor, channel) of every message sent."""
        return {r.sent for r in self.sent_rows}

    def expected_sent(self) -> set[Sent]:
        """The model's (campaign, step, customer, anchor, channel)."""
        return {(*key, channel) for key, (_, channel) in self.expected.sent.items()}

    def holdout(self) -> set[Key]:
        """Keys with a recorded ``holdout`` decision."""
        return {d.key for d in self.decisions if d.reason == "holdout"}

    def why(self, key: Key) -> str:
        """The product's recorded decisions for a key, one per day."""
        found = self.by_key.get(key) or []
        return "product: " + ("; ".join(f"{d.day} {d.reason} {d.detail}".strip() for d in found) or "none")

    def model_why(self, key: Key) -> str:
        """The model's trace for a key."""
        trace = self.expected.trace.get(key) or []
        return "model: " + ("; ".join(f"{d} {reason}" for d, reason in trace) or "never due")

    def texts(self) -> dict[str, str]:
        """Outbox text part by idempotency key."""
        return {m["idempotency_key"]: m["text"] for m in self.outbox}


def sqlite_fast(url: str) -> None:
    """``PRAGMA synchronous=OFF`` on every connection of loyalflow's cached engine for ``url``."""

    def pragma(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA synchronous=OFF")

    sa.event.listen(engine_for(url), "connect", pragma)


def happen(engine: sa.Engine, script: Script, day: dt.date) -> None:
    """Record the day's scripted answers and status changes before the day's runs."""
    with engine.begin() as conn:
        for r in (r for r in script.responses if r.day == day):
            conn.execute(
                sa.text(
                    "INSERT INTO loyalflow_responses (customer_id, campaign, answer, channel, source, "
                    "snooze_until, received_at) VALUES (:c, NULL, :a, 'email', 'link', :s, :t)"
                ),
                {
                    "c": r.customer_id,
                    "a": r.answer,
                    "s": r.snooze_until,
                    "t": dt.datetime.combine(day, dt.time(11)),
                },
            )
        for ch in (c for c in script.changes if c.day == day):
            conn.execute(
                sa.text("UPDATE orders SET status = :s WHERE order_id = :o AND status = :b"),
                {"s": ch.after, "o": ch.order_id, "b": ch.before},
            )


def read_entries(engine: sa.Engine) -> list[Entered]:
    """Every episode of every state-entry campaign."""

    def day(value: Any) -> dt.date | None:
        return None if value is None or pd.isna(value) else dt.date.fromisoformat(str(value)[:10])

    with engine.connect() as conn:
        rows = pd.read_sql_query(sa.text("SELECT * FROM loyalflow_entries"), conn)
    return [
        Entered(
            r["campaign"],
            r["customer_id"],
            dt.date.fromisoformat(str(r["entered_on"])[:10]),
            day(r["exited_on"]),
            r["exit_reason"] if isinstance(r["exit_reason"], str) else None,
        )
        for r in records(rows)
    ]


def read_state(engine: sa.Engine) -> tuple[list[Logged], list[Decided]]:
    """The send ledger and the recorded decisions."""
    with engine.connect() as conn:
        ledger = pd.read_sql_query(sa.text("SELECT * FROM loyalflow_ledger"), conn)
        decisions = pd.read_sql_query(sa.text("SELECT * FROM loyalflow_decisions ORDER BY id"), conn)
    logged = [
        Logged(
            r["idempotency_key"],
            r["campaign"],
            r["step"],
            r["customer_id"],
            r["anchor_id"],
            r["channel"],
            r["status"],
            dt.date.fromisoformat(str(r["as_of"])[:10]),
            None
            if r["send_at"] is None or pd.isna(r["send_at"])
            else pd.Timestamp(r["send_at"]).to_pydatetime(),
        )
        for r in records(ledger)
    ]
    decided = [
        Decided(
            dt.date.fromisoformat(str(r["as_of"])[:10]),
            (r["campaign"], r["step"], r["customer_id"], r["anchor_id"]),
            r["reason"],
            r["detail"] or "",
        )
        for r in records(decisions)
    ]
    return logged, decided


def read_outbox(folder: Path) -> list[dict[str, Any]]:
    """Every JSON line of every outbox file."""
    return [json.loads(line) for f in sorted(folder.rglob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    """Seed, script, run 60 days of every campaign, then compute the model from the same tables."""
    tmp = tmp_path_factory.mktemp("sixty_days")
    settings = Settings(
        home=ROOT,
        warehouse_url=f"sqlite:///{tmp / 'warehouse.db'}",
        outbox_dir=tmp / "outbox",
        work_url=str(tmp / "work"),
        secret_key="sixty-days",
        cap_marketing_per_day=99,
        cap_marketing_per_week=99,
    )
    sqlite_fast(settings.warehouse_url)
    rt = Runtime(settings)
    campaigns = load_campaigns(settings.campaigns_dir)
    seed(rt.warehouse, END, customers=CUSTOMERS)
    script = add_script(Shop(rt.warehouse), campaigns)
    rt.state  # noqa: B018 - loyalflow's tables (responses) must exist before the first answer
    started = time.perf_counter()
    by_priority = sorted(campaigns.values(), key=lambda c: -c.priority)
    for day in DAYS:
        happen(rt.warehouse, script, day)
        for camp in by_priority:
            run(rt, camp.id, RunOptions(day, f"sim__{day}", now=dt.datetime.combine(day, SEND_HOUR)))
    seconds = time.perf_counter() - started
    warehouse = Warehouse.read(rt.warehouse)
    content = ContentMap.load(settings.campaigns_dir / "content_map.yaml")
    expected = Model(warehouse, campaigns, content, script.changes, SEND_HOUR).simulate(DAYS)
    ledger, decisions = read_state(rt.state)
    return Sim(
        campaigns,
        script,
        warehouse,
        expected,
        ledger,
        decisions,
        read_entries(rt.state),
        read_outbox(tmp / "outbox"),
        seconds,
    )


def diff(
    expected: set[Any], actual: set[Any], missing_why: Callable[[Any], str], extra_why: Callable[[Any], str]
) -> str:
    """The first ten of each side of a set difference, each with the reasons behind it."""
    missing, extra = sorted(expected - actual), sorted(actual - expected)
    lines = [f"{len(missing)} expected but not in the product, {len(extra)} in the product but not expected"]
    lines += [f"  MISSING {m}\n      {missing_why(m)}" for m in missing[:10]]
    lines += [f"  EXTRA   {e}\n      {extra_why(e)}" for e in extra[:10]]
    return "\n".join(lines)


def key_of(item: Sent) -> Key:
    """The (campaign, step, customer, anchor) part of a sent tuple."""
    return (item[0], item[1], item[2], item[3])


# --------------------------------------------------------------------------- tests


def test_every_step_has_recipients_to_compare(sim: Sim) -> None:
    """The data must give every step something to check, or the comparisons prove nothing."""
    sent = Counter(key[:2] for key in sim.expected.sent)
    held = Counter(key[:2] for key in sim.expected.holdout)
    counts = {
        (c.id, s.id): (sent[(c.id, s.id)], held[(c.id, s.id)])
        for c in sim.campaigns.values()
        for s in c.steps
    }
    print(f"\nsimulated {N_DAYS} days in {sim.seconds:.0f} s; expected (sent, holdout) per step: {counts}")
    assert not [k for k, (n, _) in counts.items() if n == 0], f"steps with nothing expected: {counts}"
    no_holdout = [k for k, (_, h) in counts.items() if h == 0 and sim.campaigns[k[0]].holdout_percent > 0]
    assert not no_holdout, f"steps with a holdout but no held-out customer: {counts}"


def test_sent_messages_equal_the_model(sim: Sim) -> None:
    """Exactly the expected (campaign, step, customer, anchor, channel) were sent, on the expected days."""
    expected, actual = sim.expected_sent(), sim.sent()
    assert actual == expected, diff(
        expected, actual, lambda m: sim.why(key_of(m)), lambda e: sim.model_why(key_of(e))
    )
    wrong_day = [
        (r.sent, r.day, sim.expected.sent[r.anchor_key][0])
        for r in sim.sent_rows
        if sim.expected.sent[r.anchor_key][0] != r.day
    ]
    assert not wrong_day, f"sent on another day than expected (sent, actual, expected): {wrong_day[:10]}"


def test_ledger_has_only_sent_and_bundled_rows(sim: Sim) -> None:
    """Every claim of the simulation ended ``sent`` (nothing failed, unknown or left claimed); the other
    anchors of a bundled message are ``bundled``, exactly those the model bundles, each on the day and in
    the message (same campaign, step, customer) of a sent lead."""
    assert {r.status for r in sim.ledger} <= {"sent", "bundled"}, Counter(r.status for r in sim.ledger)
    expected, actual = set(sim.expected.bundled), sim.bundled()
    assert actual == expected, diff(expected, actual, sim.why, sim.model_why)
    assert expected, "the data must bundle something"
    sent_on = {r.anchor_key: r.day for r in sim.sent_rows}
    for r in (r for r in sim.ledger if r.status == "bundled"):
        lead = sim.expected.bundled[r.anchor_key]
        assert lead[:3] == r.anchor_key[:3] and sent_on[lead] == r.day, (r, lead)
    per_campaign = Counter(k[0] for k in expected)
    print(f"\nbundled anchors per campaign: {dict(per_campaign)}")
    assert {"thank_you", "remorse_reduction", "referral_ask"} <= set(per_campaign), per_campaign


def test_steps_before_the_start_are_recorded_and_never_sent(sim: Sim) -> None:
    """Activation on START: an event-entry step whose day is before START is never sent; while it is in
    the catch-up window it is recorded ``before_start``, exactly as the model says."""
    expected, actual = sim.expected.before_start, sim.before_start()
    assert actual == expected, diff(expected, actual, sim.why, sim.model_why)
    assert {k[0] for k in expected} == {"thank_you", "remorse_reduction", "referral_ask"}, expected
    assert {d.day for d in sim.decisions if d.reason == "before_start"} == {START, START + DAY}
    assert not {r.anchor_key for r in sim.ledger} & actual
    assert set(sim.expected.activation.values()) == {START}


def test_dormant_entries_equal_the_model(sim: Sim) -> None:
    """State entry: the dormant base enters on START, newly dormant guests on the day they turn dormant;
    a guest who books again leaves (episode closed); loyalflow_entries equals the model's episodes."""
    expected = {
        Entered("dormant_reactivation", cid, e.entered_on, e.exited_on, e.exit_reason)
        for cid, eps in sim.expected.entries["dormant_reactivation"].items()
        for e in eps
    }
    actual = set(sim.entries)
    assert actual == expected, (
        sorted(expected - actual, key=repr)[:10],
        sorted(actual - expected, key=repr)[:10],
    )
    by_day = Counter(e.entered_on for e in actual)
    assert by_day[START] > 50 and len(by_day) > 5, by_day
    ids = sim.script.ids
    assert {e.entered_on for e in actual if e.customer_id == ids["snoozer"]} == {START + 20 * DAY}
    (buyer,) = [e for e in actual if e.customer_id == ids["buyer"]]
    assert (buyer.entered_on, buyer.exited_on, buyer.exit_reason) == (
        START + 2 * DAY,
        START + 12 * DAY,
        "left the segment",
    )


def test_holdout_is_recorded_and_never_sent(sim: Sim) -> None:
    """Holdout decisions equal the model's, and no held-out customer gets any message of that campaign."""
    expected, actual = sim.expected.holdout, sim.holdout()
    assert actual == expected, diff(expected, actual, sim.why, sim.model_why)
    leaked = [
        r.sent
        for r in sim.sent_rows
        if in_holdout(r.campaign, r.customer_id, sim.campaigns[r.campaign].holdout_percent)
    ]
    assert not leaked, f"held-out customers messaged: {leaked[:10]}"
    assert not {idempotency_key(*k) for k in actual} & set(sim.texts())


def test_outbox_matches_ledger_once_per_key(sim: Sim) -> None:
    """One outbox line per key, as in the ledger; each key derives from campaign, step, customer, anchor."""
    keys = Counter(m["idempotency_key"] for m in sim.outbox)
    assert not [k for k, n in keys.items() if n > 1], "an idempotency key was delivered twice"
    per_anchor = Counter(r.anchor_key for r in sim.sent_rows)
    assert not [k for k, n in per_anchor.items() if n > 1], "a step was sent twice for one anchor"
    by_key = {r.key: r for r in sim.sent_rows}
    assert set(keys) == set(by_key)
    for m in sim.outbox:
        row = by_key[m["idempotency_key"]]
        assert (m["campaign"], m["step"], m["customer_id"], m["channel"]) == row.sent[:3] + (row.channel,)
        assert row.key == idempotency_key(*row.anchor_key)


def test_no_message_before_its_consent(sim: Sim) -> None:
    """Explicit opt-in: at a message's ``send_at`` the channel's latest consent row is an opt-in.

    The simulation sends at 15:00 of each simulated day; a consent recorded later did not exist then.
    """
    prefs = sim.warehouse.prefs.assign(consented_at=pd.to_datetime(sim.warehouse.prefs["consented_at"]))
    rows: dict[tuple[str, str], list[tuple[dt.datetime, bool]]] = defaultdict(list)
    for p in records(prefs.sort_values("consented_at", na_position="first", kind="stable")):
        at = p["consented_at"]
        rows[(p["customer_id"], p["channel"])].append(
            (dt.datetime.min if pd.isna(at) else at, bool(p["opted_in"]))
        )
    early = []
    for r in sim.sent_rows:
        assert r.send_at is not None, r
        known = [opted for at, opted in rows[(r.customer_id, r.channel)] if at <= r.send_at]
        if not (known and known[-1]):
            given = [str(at) for at, _ in rows[(r.customer_id, r.channel)]]
            early.append(f"{r.sent} send_at {r.send_at}, consent rows at {given}")
    assert not early, (
        f"{len(early)} of {len(sim.sent_rows)} messages sent before their consent:\n" + "\n".join(early[:10])
    )


def test_exits_are_honoured_in_what_was_sent(sim: Sim) -> None:
    """No remorse/referral message for a booking not completed that day (referral: none within
    return_exit_days of a returned booking, nor after any "no"); no reactivation message to a guest who
    booked in the last dormant_days days, or who said "no" since entering the sequence."""
    responses = sim.warehouse.responses
    params = {c: sim.campaigns[c].params for c in ("referral_ask", "dormant_reactivation")}
    bad: list[str] = []
    for r in sim.sent_rows:
        if r.campaign not in ("remorse_reduction", "referral_ask", "dormant_reactivation"):
            continue
        orders = orders_as_of(sim.warehouse.orders, sim.script.changes, r.day)
        mine = orders[orders["customer_id"] == r.customer_id]
        end = pd.Timestamp(r.day + dt.timedelta(days=1))
        mine_said = responses[(responses["customer_id"] == r.customer_id) & (responses["received_at"] < end)]
        said_no = mine_said[mine_said["answer"] == "negative"]
        if r.campaign == "dormant_reactivation":
            entered = pd.Timestamp(dt.date.fromisoformat(r.anchor_id.removeprefix("entry:")))
            dormant_since = end - pd.Timedelta(days=int(params["dormant_reactivation"]["dormant_days"]))
            completed = mine[mine["status"] == "completed"]
            if completed.empty or (completed["ordered_at"] >= dormant_since).any():
                bad.append(f"{r.sent} on {r.day} to a guest who is not dormant")
            if entered > pd.Timestamp(r.day) or not said_no[said_no["received_at"] >= entered].empty:
                bad.append(f"{r.sent} on {r.day} before the entry or after a negative answer")
            continue
        anchor = records(mine[mine["order_id"] == r.anchor_id])[0]
        if anchor["status"] != "completed":
            bad.append(f"{r.sent} for a {anchor['status']} booking on {r.day}")
        if r.campaign == "referral_ask":
            since = end - pd.Timedelta(days=int(params["referral_ask"]["return_exit_days"]))
            returned = mine[(mine["status"] == "returned") & (mine["ordered_at"] >= since)]
            if not returned.empty or not said_no.empty:
                bad.append(f"{r.sent} on {r.day} after a recent return or a negative answer")
    assert not bad, "\n".join(bad[:10])


def test_scripted_exits(sim: Sim) -> None:
    """The scripted customers: each exit is recorded with its reason and nothing after it is sent."""
    ids = sim.script.ids
    sent = {key_of(s) for s in sim.sent()}

    def got(campaign: str, step: str, who: str, anchor: str | None = None) -> bool:
        return any(k[:3] == (campaign, step, ids[who]) and anchor in (None, k[3]) for k in sent)

    def reasons(campaign: str, step: str, who: str) -> list[Decided]:
        return [d for key, ds in sim.by_key.items() if key[:3] == (campaign, step, ids[who]) for d in ds]

    def exited(campaign: str, step: str, who: str, why: str, anchor: str | None = None) -> bool:
        return any(
            d.reason == "exited" and why in d.detail and anchor in (None, d.key[3])
            for d in reasons(campaign, step, who)
        )

    # a return: the day-3 step went, the day-10 step and the referral ask of the other booking did not
    returned, second = ids["returned_order"], ids["returner_second_order"]
    assert got("remorse_reduction", "reassurance", "returner", returned)
    assert not got("remorse_reduction", "get_the_most", "returner", returned)
    assert exited("remorse_reduction", "get_the_most", "returner", "returned", returned)
    assert not got("referral_ask", "ask", "returner")
    assert exited("referral_ask", "ask", "returner", "returned a booking", second)
    # a cancellation
    cancelled = ids["cancelled_order"]
    assert got("remorse_reduction", "reassurance", "canceller", cancelled)
    assert exited("remorse_reduction", "get_the_most", "canceller", "cancelled", cancelled)
    assert not got("remorse_reduction", "get_the_most", "canceller")
    # a positive answer from a customer outside the top 20% earns a referral ask
    assert got("referral_ask", "ask", "positive", ids["positive_order"])
    key = ("referral_ask", "ask", ids["positive"], ids["positive_order"])
    assert sim.expected.extras[key]["value_tier"] != "vip"
    # a negative answer stops the referral ask and dormant reactivation
    assert not got("referral_ask", "ask", "negref") and exited("referral_ask", "ask", "negref", "negative")
    assert got("dormant_reactivation", "reminder", "negdormant")
    for step in ("offer", "why_stop", "last_call"):
        assert not got("dormant_reactivation", step, "negdormant")
        assert exited("dormant_reactivation", step, "negdormant", "negative")
    # a new booking stops dormant reactivation
    assert got("dormant_reactivation", "reminder", "buyer") and got("dormant_reactivation", "offer", "buyer")
    assert not got("dormant_reactivation", "why_stop", "buyer")
    assert not got("dormant_reactivation", "last_call", "buyer")
    # "later" pauses and the sequence resumes: the snoozer entered on day 20 (reminder that day), said
    # "later" on day 22 until day 30; the offer (day 27) is not sent during the snooze but on day 30, the
    # day the snooze ends, and the next steps keep their spacing: why_stop 34 -> 37, last_call 50 -> 53
    snoozer = ids["snoozer"]
    days_sent = {
        r.step: r.day
        for r in sim.sent_rows
        if r.campaign == "dormant_reactivation" and r.customer_id == snoozer
    }
    resumed = {"reminder": 20, "offer": 30, "why_stop": 37, "last_call": 53}
    assert days_sent == {step: START + n * DAY for step, n in resumed.items()}, days_sent
    assert not [
        d
        for d in reasons("dormant_reactivation", "offer", "snoozer")
        if START + 22 * DAY <= d.day < START + 30 * DAY
    ], "the offer was considered during the snooze"
    offer = sorted((d.day, d.reason) for d in reasons("dormant_reactivation", "offer", "snoozer"))
    assert offer == [
        (START + 30 * DAY, "sent"),
        (START + 31 * DAY, "already_sent"),  # the catch-up days after it
        (START + 32 * DAY, "already_sent"),
    ], offer
    anchor = f"entry:{START + 20 * DAY}"
    assert all(
        sim.expected.sent[("dormant_reactivation", step, snoozer, anchor)][0] == START + n * DAY
        for step, n in resumed.items()
    )
    # the held-out dormant customer: every step recorded as holdout, nothing sent
    for step in ("reminder", "offer", "why_stop", "last_call"):
        assert {d.reason for d in reasons("dormant_reactivation", step, "holdout")} == {"holdout"}
        assert not got("dormant_reactivation", step, "holdout")


def test_scripted_bundles(sim: Sim) -> None:
    """Two bookings of one day: one message per step, led by the earlier booking, the later one bundled
    (thanks on the day, reassurance day 3, get_the_most day 10, referral ask day 21); two referred
    friends booking on one day: one thank-you to the referrer."""
    ids = sim.script.ids
    texts = sim.texts()
    first, second = ids["twice_first"], ids["twice_second"]
    steps = {
        ("thank_you", "thanks"): 8,
        ("remorse_reduction", "reassurance"): 11,
        ("remorse_reduction", "get_the_most"): 18,
        ("referral_ask", "ask"): 29,
    }
    for (campaign, step), day in steps.items():
        lead, other = (campaign, step, ids["twice"], first), (campaign, step, ids["twice"], second)
        rows = [r for r in sim.ledger if r.anchor_key[:3] == lead[:3]]
        assert sorted((r.anchor_id, r.status, r.day) for r in rows) == [
            (first, "sent", START + day * DAY),
            (second, "bundled", START + day * DAY),
        ], rows
        assert sim.expected.bundled[other] == lead
    (thanks,) = [r for r in sim.sent_rows if r.anchor_key[:3] == ("thank_you", "thanks", ids["twice"])]
    assert "and 1 more" in texts[thanks.key], texts[thanks.key]
    referrer = [
        r for r in sim.ledger if r.anchor_key[:3] == ("thank_you", "referrer_thanks", ids["referrer"])
    ]
    assert sorted((r.anchor_id, r.status, r.day) for r in referrer) == [
        (ids["friend_a_order"], "sent", START + 9 * DAY),
        (ids["friend_b_order"], "bundled", START + 9 * DAY),
    ], referrer


def test_nurture_never_repeats_an_item_and_sends_the_expected_one(sim: Sim) -> None:
    """Each contact gets each content item at most once, at most one a week, linking the modelled item."""
    sent = [r for r in sim.sent_rows if r.campaign == "buying_cycle_nurture"]
    repeats = Counter((r.customer_id, r.anchor_id) for r in sent)
    assert not [k for k, n in repeats.items() if n > 1], "a content item was sent twice"
    texts = sim.texts()
    wrong = [r.sent for r in sent if sim.expected.extras[r.anchor_key]["item"]["url"] not in texts[r.key]]
    assert not wrong, f"message does not link the expected item: {wrong[:10]}"
    days: dict[str, list[dt.date]] = defaultdict(list)
    for r in sorted(sent, key=lambda r: r.day):
        days[r.customer_id].append(r.day)
    too_often = {c: d for c, d in days.items() if any((b - a).days < 7 for a, b in pairwise(d))}
    assert not too_often, list(too_often.items())[:5]


def test_dormant_offer_matches_value_tier(sim: Sim) -> None:
    """The day-7 offer is the one of the guest's 80:20 value tier as of that day."""
    offers = sim.campaigns["dormant_reactivation"].params["offers"]
    sent = [r for r in sim.sent_rows if r.campaign == "dormant_reactivation" and r.step == "offer"]
    texts = sim.texts()
    tiers = {r.customer_id: sim.expected.extras[r.anchor_key]["value_tier"] for r in sent}
    wrong = [
        (r.customer_id, tiers[r.customer_id])
        for r in sent
        if offers[tiers[r.customer_id]] not in texts[r.key]
    ]
    assert sent and not wrong, wrong[:10]


def test_same_day_bookings_are_one_message_led_by_the_earlier_one(settings: Settings, shop: Shop) -> None:
    """Two bookings whose reassurance falls on the same day: one message, led by the earlier booking, the
    later one bundled into it, whatever order the warehouse stores the rows in (the model assumes this)."""
    campaigns = load_campaigns(settings.campaigns_dir)
    cid = shop.customer(customer_id=pick_id("X-", campaigns))
    shop.order(cid, dt.datetime(2026, 11, 1, 18), order_id="O-evening")  # stored first, booked later
    shop.order(cid, dt.datetime(2026, 11, 1, 9), order_id="O-morning")
    day = dt.date(2026, 11, 4)
    run(
        Runtime(settings),
        "remorse_reduction",
        RunOptions(day, "same-day", now=dt.datetime.combine(day, SEND_HOUR)),
    )
    ledger, decisions = read_state(engine_for(settings.warehouse_url))
    got = sorted((r.anchor_id, r.status) for r in ledger)
    assert got == [("O-evening", "bundled"), ("O-morning", "sent")], [
        (d.key[3], d.reason, d.detail) for d in decisions
    ]
    assert [d.key[3] for d in decisions] == ["O-morning"]
