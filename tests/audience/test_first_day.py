"""The first day: two years of history, no earlier run, every campaign run once, checked against the model.

The demo seeder gives the warehouse two years of bookings (``loyalflow.demo.data.seed``, 2,000 guests);
a few guests are added with ``tests/factories.Shop``. Every campaign then runs once for 2026-11-20 with
caps disabled, and ``tests/expectations.py`` (the independent pandas model) says what that first run
must do: the state-entry dormant campaign takes in its whole dormant base; event-entry campaigns start
on that day and never back-fill history (steps of the catch-up days before it are recorded
``before_start``); a guest's bookings of one day get one thank-you. A rerun adds nothing. With
``max_entries_per_day`` the dormant base enters over several days, each guest exactly once; with
``backfill_days`` remorse sends the steps of the back-filled days that are inside its catch-up window.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from loyalflow.demo.data import seed
from loyalflow.errors import CampaignError
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from tests.conftest import TEST_KEY
from tests.expectations import (
    CampaignConf,
    ContentMap,
    Key,
    Model,
    Outcome,
    Warehouse,
    in_holdout,
    load_campaigns,
    records,
)
from tests.factories import Shop

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 11, 20)
NOW = dt.datetime(2026, 11, 20, 15)
SEND_HOUR = NOW.time()
DAY = dt.timedelta(days=1)
CUSTOMERS = 2000
DORMANT = "dormant_reactivation"
EVENT_ENTRY = ("thank_you", "remorse_reduction", "referral_ask")
COVERAGE = 0.85  # the first dormant run reaches at least this share of its reachable, non-held-out base
TWICE = "T-twice"  # two bookings on the as-of day: one thank-you listing both
YESTERDAY = "T-yesterday"  # booked the day before the first run: not thanked (no back-fill)
REPORT = ROOT / "out" / "first_day.md"


# --------------------------------------------------------------------------- the warehouse


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded warehouse before any run (a SQLite file each scenario copies)."""
    db = tmp_path_factory.mktemp("first_day_seed") / "warehouse.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    seed(engine, AS_OF, customers=CUSTOMERS)
    shop = Shop(engine)
    shop.customer(customer_id=TWICE, first_name="Twice")
    shop.order(TWICE, dt.datetime.combine(AS_OF, dt.time(9)), product="Spa Day for Two", order_id="T-O-1")
    shop.order(TWICE, dt.datetime.combine(AS_OF, dt.time(14)), product="City Break", order_id="T-O-2")
    shop.customer(customer_id=YESTERDAY, first_name="Yesterday")
    shop.order(YESTERDAY, dt.datetime.combine(AS_OF - DAY, dt.time(12)), order_id="T-O-3")
    engine.dispose()
    return db


def settings_for(folder: Path, home: Path = ROOT) -> Settings:
    """Settings on ``folder``'s warehouse, outbox and work folder; frequency caps disabled."""
    return Settings(
        home=home,
        warehouse_url=f"sqlite:///{folder / 'warehouse.db'}",
        outbox_dir=folder / "outbox",
        work_url=str(folder / "work"),
        secret_key=TEST_KEY,
        cap_marketing_per_day=99,
        cap_marketing_per_week=99,
    )


def go(rt: Runtime, campaign: str, day: dt.date, run_id: str) -> dict[str, int]:
    """One real run of ``campaign`` for ``day``, sending at 15:00 UTC that day."""
    return run(rt, campaign, RunOptions(day, run_id, now=dt.datetime.combine(day, SEND_HOUR)))


def query(engine: sa.Engine, sql: str) -> list[dict[str, Any]]:
    """Rows of a query as dicts."""
    with engine.connect() as conn:
        return records(pd.read_sql_query(sa.text(sql), conn))


def as_date(value: Any) -> dt.date:
    """A date column read from SQLite (text) or PostgreSQL."""
    return dt.date.fromisoformat(str(value)[:10])


def outbox_lines(folder: Path) -> list[dict[str, Any]]:
    """Every JSON line of the outbox."""
    return [json.loads(line) for f in sorted(folder.rglob("*.jsonl")) for line in f.read_text().splitlines()]


@dataclass(frozen=True)
class Product:
    """What the product recorded: ledger rows, decisions, entries."""

    ledger: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    entries: list[dict[str, Any]]

    @classmethod
    def read(cls, engine: sa.Engine) -> Product:
        """Read loyalflow's tables."""
        return cls(
            query(engine, "SELECT * FROM loyalflow_ledger"),
            query(engine, "SELECT * FROM loyalflow_decisions ORDER BY id"),
            query(engine, "SELECT * FROM loyalflow_entries ORDER BY id"),
        )

    @staticmethod
    def key(row: dict[str, Any]) -> Key:
        """(campaign, step, customer, anchor)."""
        return (row["campaign"], row["step"], row["customer_id"], row["anchor_id"])

    def with_status(self, status: str, campaign: str | None = None) -> set[Key]:
        """Ledger keys with ``status`` (of one campaign)."""
        rows = [r for r in self.ledger if r["status"] == status and campaign in (None, r["campaign"])]
        return {self.key(r) for r in rows}

    def decided(self, reason: str, campaign: str | None = None) -> set[Key]:
        """Keys with a decision of ``reason`` (of one campaign)."""
        rows = [d for d in self.decisions if d["reason"] == reason and campaign in (None, d["campaign"])]
        return {self.key(d) for d in rows}


def only(keys: set[Key] | dict[Key, Any], campaign: str) -> set[Key]:
    """The keys of one campaign."""
    return {k for k in keys if k[0] == campaign}


def step_day(camp: CampaignConf, orders: pd.DataFrame, key: Key) -> dt.date:
    """The day a step of an order anchor falls on (order day + offset + delay)."""
    at = orders.loc[orders["order_id"] == key[3], "ordered_at"].iloc[0]
    delay = next(s.delay_days for s in camp.steps if s.id == key[1])
    return at.date() + dt.timedelta(days=camp.anchor_offset_days + delay)


def model_for(engine: sa.Engine, campaigns: dict[str, CampaignConf], home: Path = ROOT) -> Model:
    """The independent model on the warehouse as it is now."""
    content = ContentMap.load(home / "campaigns" / "content_map.yaml")
    return Model(Warehouse.read(engine), campaigns, content, (), SEND_HOUR)


def mismatch(expected: set[Any], actual: set[Any], out: Outcome) -> str:
    """A short diff with the model's trace of each differing key."""
    missing, extra = sorted(expected - actual), sorted(actual - expected)
    lines = [f"{len(missing)} expected but not in the product, {len(extra)} in the product only"]
    lines += [f"  MISSING {k}: {out.trace.get(k)}" for k in missing[:10]]
    lines += [f"  EXTRA   {k}: {out.trace.get(k)}" for k in extra[:10]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the first day


@dataclass
class FirstDay:
    """The first run of every campaign (and its rerun), with the model's expectations."""

    campaigns: dict[str, CampaignConf]
    model: Model
    expected: Outcome
    product: Product
    warehouse: Warehouse
    outbox: list[dict[str, Any]]
    lines_after_rerun: int
    ledger_after_rerun: int


@pytest.fixture(scope="module")
def first_day(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> FirstDay:
    """Every campaign run once for AS_OF (highest priority first), then once more (a rerun)."""
    folder = tmp_path_factory.mktemp("first_day")
    shutil.copy(pristine, folder / "warehouse.db")
    settings = settings_for(folder)
    rt = Runtime(settings)
    campaigns = load_campaigns(settings.campaigns_dir)
    by_priority = sorted(campaigns.values(), key=lambda c: -c.priority)
    for camp in by_priority:
        go(rt, camp.id, AS_OF, "first-day")
    product = Product.read(rt.state)
    outbox = outbox_lines(folder / "outbox")
    for camp in by_priority:
        go(rt, camp.id, AS_OF, "first-day-rerun")
    model = model_for(rt.warehouse, campaigns)
    expected = model.simulate([AS_OF])
    return FirstDay(
        campaigns,
        model,
        expected,
        product,
        model.wh,
        outbox,
        len(outbox_lines(folder / "outbox")),
        len(Product.read(rt.state).ledger),
    )


def dormant_base(wh: Warehouse, day: dt.date, dormant_days: int) -> tuple[set[str], set[str]]:
    """(dormant customers, recent buyers) as of the end of ``day``: a completed booking and none in the
    last ``dormant_days`` days, or one in them."""
    orders = wh.orders[
        (wh.orders["ordered_at"] < pd.Timestamp(day + DAY)) & (wh.orders["status"] == "completed")
    ]
    last = orders.groupby("customer_id")["ordered_at"].max()
    since = pd.Timestamp(day + DAY - dt.timedelta(days=dormant_days))
    return set(last[last < since].index.astype(str)), set(last[last >= since].index.astype(str))


def coverage(day: FirstDay) -> tuple[set[str], set[str], float]:
    """(target, sent, share): the reachable non-held-out dormant base, who got the reminder, the share."""
    camp = day.campaigns[DORMANT]
    dormant, _ = dormant_base(day.warehouse, AS_OF, int(camp.params["dormant_days"]))
    reachable = {c for c in dormant if day.model.channel_of(camp.channels, c, NOW)}
    target = {c for c in reachable if not in_holdout(DORMANT, c, camp.holdout_percent)}
    sent = {k[2] for k in day.product.with_status("sent", DORMANT)}
    return target, sent, len(sent & target) / len(target)


def test_first_dormant_run_messages_the_whole_dormant_base(first_day: FirstDay) -> None:
    """(a) On its first run the dormant campaign enters its whole base and sends the reminder to at least
    85% of the dormant guests with consent and a valid address, less the holdout; nobody who booked in
    the last 180 days is messaged, and the sends equal the model's."""
    day, camp = first_day, first_day.campaigns[DORMANT]
    dormant, recent = dormant_base(day.warehouse, AS_OF, int(camp.params["dormant_days"]))
    target, sent, share = coverage(day)
    assert len(target) > 200, len(target)
    assert share >= COVERAGE, f"{share:.1%} of {len(target)} reachable dormant guests messaged"
    assert sent <= dormant and not sent & recent
    assert {k[1] for k in day.product.with_status("sent", DORMANT)} == {"reminder"}
    assert {k[3] for k in day.product.with_status("sent", DORMANT)} == {f"entry:{AS_OF}"}
    held = {k[2] for k in day.product.decided("holdout", DORMANT)}
    assert held and all(in_holdout(DORMANT, c, camp.holdout_percent) for c in held) and not held & sent
    assert {(e["customer_id"], as_date(e["entered_on"])) for e in day.product.entries} == {
        (c, AS_OF) for c in dormant
    }
    expected = only(day.expected.sent, DORMANT)
    assert day.product.with_status("sent", DORMANT) == expected, mismatch(
        expected, day.product.with_status("sent", DORMANT), day.expected
    )


@pytest.mark.parametrize("campaign", EVENT_ENTRY)
def test_first_event_entry_run_sends_only_todays_steps(first_day: FirstDay, campaign: str) -> None:
    """(b) The first remorse, referral and thank-you runs send only for anchors whose step day is the as-of
    day: no back-fill. Steps of the catch-up days before it are recorded ``before_start``, never sent;
    sends, bundles and before-start decisions equal the model's."""
    day, camp = first_day, first_day.campaigns[campaign]
    orders = day.warehouse.orders
    sent = day.product.with_status("sent", campaign)
    assert sent, f"{campaign}: nothing sent on the first day"
    assert {step_day(camp, orders, k) for k in sent | day.product.with_status("bundled", campaign)} == {AS_OF}
    early = day.product.decided("before_start", campaign)
    catch_up = {AS_OF - dt.timedelta(days=n) for n in range(1, camp.catch_up_days + 1)}
    assert early and {step_day(camp, orders, k) for k in early} == catch_up
    assert not early & {Product.key(r) for r in day.product.ledger}
    for expected, actual in (
        (only(day.expected.sent, campaign), sent),
        (only(day.expected.bundled, campaign), day.product.with_status("bundled", campaign)),
        (only(day.expected.before_start, campaign), early),
        (only(day.expected.holdout, campaign), day.product.decided("holdout", campaign)),
    ):
        assert actual == expected, mismatch(expected, actual, day.expected)


def test_yesterdays_buyer_is_not_thanked(first_day: FirstDay) -> None:
    """(b) A booking of the day before the first run: recorded before_start, no thank-you."""
    mine = [d for d in first_day.product.decisions if d["customer_id"] == YESTERDAY]
    assert [(d["campaign"], d["step"], d["reason"]) for d in mine] == [
        ("thank_you", "thanks", "before_start")
    ]
    assert not [m for m in first_day.outbox if m["customer_id"] == YESTERDAY]


def test_nurture_first_run_equals_the_model(first_day: FirstDay) -> None:
    """Nurture (event entry, steps on the as-of day only) is not changed by activation."""
    campaign = "buying_cycle_nurture"
    expected, actual = (
        only(first_day.expected.sent, campaign),
        first_day.product.with_status("sent", campaign),
    )
    assert actual and actual == expected, mismatch(expected, actual, first_day.expected)


def test_two_bookings_of_one_day_get_one_thank_you(first_day: FirstDay) -> None:
    """(c) One thank-you listing both bookings; the ledger has one sent row and one bundled row."""
    (message,) = [m for m in first_day.outbox if m["customer_id"] == TWICE and m["campaign"] == "thank_you"]
    assert "Your bookings (Spa Day for Two and 1 more) are confirmed" in message["text"], message["text"]
    rows = [r for r in first_day.product.ledger if r["customer_id"] == TWICE]
    assert sorted((r["step"], r["anchor_id"], r["status"]) for r in rows) == [
        ("thanks", "T-O-1", "sent"),
        ("thanks", "T-O-2", "bundled"),
    ]
    assert message["idempotency_key"] == next(r["idempotency_key"] for r in rows if r["status"] == "sent")


def test_a_rerun_adds_nothing(first_day: FirstDay) -> None:
    """(d) Running every campaign again for the same day appends no outbox line and no ledger row."""
    assert first_day.lines_after_rerun == len(first_day.outbox)
    assert first_day.ledger_after_rerun == len(first_day.product.ledger)
    keys = Counter(m["idempotency_key"] for m in first_day.outbox)
    assert not [k for k, n in keys.items() if n > 1]


def test_first_day_summary(first_day: FirstDay) -> None:
    """Per campaign: expected (model), sent, held out; the dormant coverage. Printed and written to
    out/first_day.md."""
    day = first_day
    lines = [
        f"# First day: every campaign run once for {AS_OF} ({CUSTOMERS} demo guests, two years of history)",
        "",
        "| campaign | expected | sent | bundled | holdout | before_start |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cid in sorted(day.campaigns):
        sent = day.product.with_status("sent", cid)
        assert len(sent) == len(only(day.expected.sent, cid)), cid
        lines.append(
            f"| {cid} | {len(only(day.expected.sent, cid))} | {len(sent)} "
            f"| {len(day.product.with_status('bundled', cid))} | {len(day.product.decided('holdout', cid))} "
            f"| {len(day.product.decided('before_start', cid))} |"
        )
    target, reached, share = coverage(day)
    lines += [
        "",
        f"Dormant coverage: {len(reached & target)} of {len(target)} reachable, non-held-out dormant guests "
        f"messaged on the first run ({share:.1%}; required {COVERAGE:.0%}).",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- ramp and back-fill


def edit(path: Path, **values: object) -> None:
    """Set top-level ``key: value`` lines of a campaign file (appended when absent)."""
    text = path.read_text(encoding="utf-8")
    for key, value in values.items():
        line = f"{key}: {value}"
        text, n = re.subn(rf"^{key}:.*$", line, text, flags=re.M)
        if not n:
            text += f"{line}\n"
    path.write_text(text, encoding="utf-8")


def test_max_entries_per_day_spreads_the_dormant_base_over_days(
    project: Path, tmp_path: Path, pristine: Path
) -> None:
    """(e) ``max_entries_per_day: N``: day after day at most N guests enter, in customer order, none lost
    or repeated, until the entries equal the dormant base; each enters on the day the model says and
    gets the reminder that day (unless held out or unreachable)."""
    limit = 200
    edit(project / "campaigns" / f"{DORMANT}.yaml", max_entries_per_day=limit)
    shutil.copy(pristine, tmp_path / "warehouse.db")
    rt = Runtime(Settings(cap_marketing_per_day=99, cap_marketing_per_week=99))
    assert (
        rt.settings.home == project and rt.settings.warehouse_url == f"sqlite:///{tmp_path / 'warehouse.db'}"
    )
    campaigns = load_campaigns(project / "campaigns")
    camp = campaigns[DORMANT]
    days: list[dt.date] = []
    for n in range(10):
        days.append(AS_OF + n * DAY)
        go(rt, DORMANT, days[-1], f"ramp-{n}")
        entered = {e["customer_id"] for e in query(rt.state, "SELECT customer_id FROM loyalflow_entries")}
        model_wh = Warehouse.read(rt.warehouse)
        base, _ = dormant_base(model_wh, days[-1], int(camp.params["dormant_days"]))
        if entered >= base:
            break
    product = Product.read(rt.state)
    per_day = Counter(as_date(e["entered_on"]) for e in product.entries)
    print(f"\nentries per day (max {limit}): {dict(sorted(per_day.items()))}")
    assert len(days) >= 3 and max(per_day.values()) <= limit and per_day[AS_OF] == limit, per_day
    who = Counter(e["customer_id"] for e in product.entries)
    assert not [c for c, n in who.items() if n > 1], "a guest entered twice"
    assert set(who) == base, (sorted(base - set(who))[:10], sorted(set(who) - base)[:10])
    assert {e["customer_id"] for e in product.entries if as_date(e["entered_on"]) == AS_OF} == set(
        sorted(dormant_base(model_wh, AS_OF, int(camp.params["dormant_days"]))[0])[:limit]
    )
    assert all(e["exited_on"] is None for e in product.entries)
    model = model_for(rt.warehouse, {DORMANT: camp}, project)
    expected = model.simulate(days)
    assert {(c, e.entered_on) for c, eps in expected.entries[DORMANT].items() for e in eps} == {
        (e["customer_id"], as_date(e["entered_on"])) for e in product.entries
    }
    sent = product.with_status("sent", DORMANT)
    assert sent == set(expected.sent), mismatch(set(expected.sent), sent, expected)
    entered_on = {e["customer_id"]: as_date(e["entered_on"]) for e in product.entries}
    assert all(k[1] == "reminder" and k[3] == f"entry:{entered_on[k[2]]}" for k in sent)


def test_backfill_beyond_the_catch_up_window_is_refused(project: Path) -> None:
    """(f) A step is only ever sent within the catch-up window: back-fill may not reach further."""
    edit(project / "campaigns" / "remorse_reduction.yaml", backfill_days=3, catch_up_days=2)
    with pytest.raises(CampaignError, match="backfill_days"):
        Runtime(Settings()).campaign("remorse_reduction")


@pytest.mark.parametrize("catch_up_days", [3, 5])
def test_remorse_backfill_on_the_first_day(
    project: Path, tmp_path: Path, pristine: Path, catch_up_days: int
) -> None:
    """(f) ``backfill_days: 3``: the first remorse run sends the steps whose day is in [as_of - 3, as_of]
    (inside the catch-up window): orders 3..6 days old get the reassurance, 10..13 days old the day-10
    step; with a 5-day window the steps of days as_of - 5 and as_of - 4 are recorded before_start. The
    sends, bundles and decisions equal the model's."""
    campaign, backfill = "remorse_reduction", 3
    edit(project / "campaigns" / f"{campaign}.yaml", backfill_days=backfill, catch_up_days=catch_up_days)
    shutil.copy(pristine, tmp_path / "warehouse.db")
    rt = Runtime(Settings(cap_marketing_per_day=99, cap_marketing_per_week=99))
    go(rt, campaign, AS_OF, "backfill")
    camp = load_campaigns(project / "campaigns")[campaign]
    assert (camp.backfill_days, camp.catch_up_days) == (backfill, catch_up_days)
    product = Product.read(rt.state)
    model = model_for(rt.warehouse, {campaign: camp}, project)
    expected = model.simulate([AS_OF])
    orders = model.wh.orders
    sent, early = product.with_status("sent", campaign), product.decided("before_start", campaign)
    sendable = {AS_OF - dt.timedelta(days=n) for n in range(min(backfill, catch_up_days) + 1)}
    assert {step_day(camp, orders, k) for k in sent} == sendable
    assert {step_day(camp, orders, k) for k in early} == {
        AS_OF - dt.timedelta(days=n) for n in range(backfill + 1, catch_up_days + 1)
    }
    ages = {(AS_OF - step_day(camp, orders, k)).days + 3 for k in sent if k[1] == "reassurance"}
    assert ages == set(range(3, 3 + min(backfill, catch_up_days) + 1))
    for want, got in (
        (set(expected.sent), sent),
        (set(expected.bundled), product.with_status("bundled", campaign)),
        (expected.before_start, early),
        (expected.holdout, product.decided("holdout", campaign)),
    ):
        assert got == want, mismatch(want, got, expected)
