"""``make demo``: seed the embedded warehouse and run every campaign, the final day through Airflow."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import pandas as pd
import sqlalchemy as sa

from loyalflow.decide import responses
from loyalflow.demo import effects
from loyalflow.demo.data import ORDERS, PRODUCTS, has_warehouse, seed
from loyalflow.ops.summary import summary
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.spec import campaign_files
from loyalflow.state import decisions, entries, ledger

SIMULATED_DAYS = 31  # covers every step: dormant reactivation's last call is 30 days after entry
SEND_HOUR = dt.time(15)  # simulated days send at 15:00 UTC: daytime in Europe and the Americas


# Share of recipients of a step who answer, by answer: a believable response pattern for the demo.
ANSWER_RATES = {
    ("dormant_reactivation", "why_stop"): {"positive": 0.25, "negative": 0.15, "later": 0.10},
    ("thank_you", "thanks"): {"positive": 0.06},
    ("remorse_reduction", "reassurance"): {"positive": 0.04, "negative": 0.01},
}


def simulate_responses(rt: Runtime, day: dt.date) -> int:
    """Let a deterministic share of the day's recipients click a response link; returns answers stored."""
    with rt.state.connect() as conn:
        rows = conn.execute(
            sa.select(ledger.c.campaign, ledger.c.step, ledger.c.customer_id, ledger.c.channel).where(
                ledger.c.as_of == day, ledger.c.status == "sent"
            )
        ).all()
    stored = 0
    for campaign, step, customer_id, channel in rows:
        draw = (
            int(hashlib.sha256(f"answer|{campaign}|{customer_id}|{day}".encode()).hexdigest()[:8], 16) / 16**8
        )
        for answer, rate in ANSWER_RATES.get((campaign, step), {}).items():
            if draw < rate:
                at = dt.datetime.combine(day, dt.time(18))
                stored += responses.record(
                    rt.state,
                    customer_id,
                    answer,
                    at=at,
                    source="demo",
                    campaign=campaign,
                    channel=channel,
                    snooze_days=rt.settings.snooze_days,
                )
                break
            draw -= rate
    return stored


def _latest_orders(warehouse: sa.Engine, customer_ids: list[str]) -> dict[str, tuple[str, float]]:
    """Per customer, the product and total of their latest completed booking."""
    stmt = (
        sa.select(ORDERS.c.customer_id, ORDERS.c.product, ORDERS.c.total)
        .where(ORDERS.c.customer_id.in_(customer_ids), ORDERS.c.status == "completed")
        .order_by(ORDERS.c.ordered_at)
    )
    with warehouse.connect() as conn:
        return {str(r.customer_id): (str(r.product), float(r.total)) for r in conn.execute(stmt)}


def _first_booking(customer_id: str, day: dt.date) -> tuple[str, float]:
    """A first booking for a guest who never booked: a product of the catalogue at its middle price."""
    name, low, high, _ = PRODUCTS[int(effects.draw("product", customer_id, day) * len(PRODUCTS))]
    return name, round((low + high) / 2, 2)


def _friends(warehouse: sa.Engine) -> list[str]:
    """Customers who never booked: the friends a referral ask can bring in."""
    booked = sa.select(ORDERS.c.customer_id)
    stmt = sa.text("SELECT customer_id FROM customers").columns(customer_id=sa.Text)
    with warehouse.connect() as conn:
        everyone = [str(c) for c in conn.execute(stmt).scalars()]
        have = {str(c) for c in conn.execute(booked).scalars()}
    return sorted(c for c in everyone if c not in have)


def simulate_bookings(rt: Runtime, day: dt.date, until: dt.date) -> int:
    """Bookings the day's messages cause (``demo/effects.py``), up to ``until``; returns orders added.

    Each recipient sent a step on ``day`` books with the step's true effect, 1 to 3 days later, as a
    repeat of their latest booking (or a first one); a referral ask brings a friend who never booked.
    Idempotent: the order ids are stable.
    """
    with rt.state.connect() as conn:
        sent = conn.execute(
            sa.select(decisions.c.campaign, decisions.c.step, decisions.c.customer_id)
            .where(decisions.c.as_of == day, decisions.c.reason == "sent")
            .distinct()
        ).all()
    moved = [(c, s, str(cid)) for c, s, cid in sent if effects.moved(c, s, str(cid), day)]
    if not moved:
        return 0
    latest = _latest_orders(rt.warehouse, sorted({cid for _, _, cid in moved}))
    friends = _friends(rt.warehouse) if any(c == "referral_ask" for c, _, _ in moved) else []
    rows = []
    for campaign, step, cid in moved:
        when = day + dt.timedelta(days=effects.lag_days(campaign, step, cid, day))
        if when > until:
            continue
        buyer, referrer = cid, None
        if campaign == "referral_ask":
            if not friends:
                continue
            buyer, referrer = friends[int(effects.draw("friend", cid, day) * len(friends))], cid
        product, total = latest.get(cid) or _first_booking(cid, day)
        rows.append(
            {
                "order_id": effects.order_id(campaign, step, cid, day),
                "customer_id": buyer,
                "ordered_at": dt.datetime.combine(when, dt.time(10))
                + dt.timedelta(minutes=int(effects.draw("at", cid, day) * 600)),
                "total": total,
                "status": "completed",
                "product": product,
                "referred_by": referrer,
            }
        )
    with rt.warehouse.begin() as conn:
        known = set(
            conn.execute(
                sa.select(ORDERS.c.order_id).where(ORDERS.c.order_id.in_([r["order_id"] for r in rows]))
            ).scalars()
        )
        fresh = [r for r in rows if r["order_id"] not in known]
        if fresh:
            conn.execute(ORDERS.insert(), fresh)
    return len(fresh)


def by_priority(rt: Runtime) -> list[str]:
    """Campaign ids, highest priority first: when a frequency cap binds, the more important message goes."""
    found = (rt.campaign(p.stem) for p in campaign_files(rt.settings.campaigns_dir))
    return [c.id for c in sorted(found, key=lambda c: -c.priority)]


def first_day_settings(settings: Settings) -> Settings:
    """The first-day scenario's own warehouse, state, outbox and work folder (under ``out/first_day``)."""
    folder = settings.home / "out" / "first_day"
    return settings.model_copy(
        update={
            "warehouse_url": f"sqlite:///{folder / 'warehouse.db'}",
            "state_url": None,
            "outbox_dir": folder / "outbox",
            "work_url": str(folder / "work"),
        }
    )


def run_first_day(
    settings: Settings, as_of: dt.date, customers: int, echo: Callable[[str], None]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The day a business switches loyalflow on: two years of history, no earlier runs, one run for as_of.

    Returns the run's summary and, per state-entry campaign, how many customers entered that day.
    """
    rt = Runtime(settings)
    if not has_warehouse(rt.warehouse):
        echo(f"seeding two years of history ({customers} customers) at {settings.warehouse_url}")
        seed(rt.warehouse, as_of, customers=customers)
    run_id = f"first_day__{as_of}"
    entered: dict[str, int] = {}
    for campaign_id in by_priority(rt):
        echo(f"first run of {campaign_id} for {as_of}")
        run(rt, campaign_id, RunOptions(as_of, run_id, now=dt.datetime.combine(as_of, SEND_HOUR)))
        if rt.campaign(campaign_id).entry == "state":
            with rt.state.connect() as conn:
                entered[campaign_id] = int(
                    conn.execute(
                        sa.select(sa.func.count()).where(
                            entries.c.campaign == campaign_id, entries.c.entered_on == as_of
                        )
                    ).scalar_one()
                )
    return summary(rt.state, [run_id]), entered


def run_demo(
    settings: Settings,
    as_of: dt.date,
    customers: int,
    via_airflow: bool,
    echo: Callable[[str], None],
    days: int = SIMULATED_DAYS,
) -> pd.DataFrame:
    """Seed (once), simulate ``days`` days through the library, run ``as_of`` through Airflow.

    Returns the summary of every run of this demo; rerunning it sends nothing new.
    """
    rt = Runtime(settings)
    if not has_warehouse(rt.warehouse):
        echo(f"seeding the demo warehouse ({customers} customers) at {settings.warehouse_url}")
        counts = seed(rt.warehouse, as_of, customers=customers)
        echo("seeded " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    campaigns = by_priority(rt)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    run_ids = []
    echo(f"simulating {days} days before {as_of} through the library pipeline")
    for back in range(days, 0, -1):
        day = as_of - dt.timedelta(days=back)
        run_id = f"demo__{stamp}__{day}"
        for campaign_id in campaigns:
            run(rt, campaign_id, RunOptions(day, run_id, now=dt.datetime.combine(day, SEND_HOUR)))
        run_ids.append(run_id)
        simulate_responses(rt, day)
        simulate_bookings(rt, day, until=as_of)
    if via_airflow:
        from loyalflow.airflow.local import run_dag_test
    for campaign_id in campaigns:
        echo(f"running {campaign_id} for {as_of}{' through Airflow' if via_airflow else ''}")
        if via_airflow:
            run_ids.append(run_dag_test(settings.home / "dags", campaign_id, as_of))
        else:
            run_id = f"demo__{stamp}__{as_of}"
            run(rt, campaign_id, RunOptions(as_of, run_id, now=dt.datetime.combine(as_of, SEND_HOUR)))
            run_ids.append(run_id)
    return summary(rt.state, sorted(set(run_ids)))
