"""One message per customer, step and day: bundled anchors, and exited anchors that stay out of bundles."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from loyalflow.decide.eligibility import in_holdout
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.state import decisions, ledger
from tests.factories import Shop

BOOKED = dt.date(2026, 11, 1)
REASSURE = BOOKED + dt.timedelta(days=3)


def customer_outside_holdout(shop: Shop) -> str:
    for n in range(1, 200):
        if not in_holdout("remorse_reduction", f"B{n:03d}", 10):
            return shop.customer(customer_id=f"B{n:03d}")
    raise AssertionError("no customer outside the holdout")


def remorse(settings: Settings, day: dt.date) -> None:
    run(
        Runtime(settings),
        "remorse_reduction",
        RunOptions(day, f"b-{day}", now=dt.datetime.combine(day, dt.time(15))),
    )


def ledger_rows(settings: Settings) -> set[tuple[str, str]]:
    with Runtime(settings).state.connect() as conn:
        return {(r.anchor_id, r.status) for r in conn.execute(sa.select(ledger.c.anchor_id, ledger.c.status))}


def test_two_bookings_of_a_day_are_one_message_and_the_other_is_bundled(
    settings: Settings, shop: Shop
) -> None:
    cid = customer_outside_holdout(shop)
    shop.order(cid, dt.datetime.combine(BOOKED, dt.time(9)), order_id="O-a")
    shop.order(cid, dt.datetime.combine(BOOKED, dt.time(18)), order_id="O-b")
    remorse(settings, BOOKED)  # activation before the bookings' step day
    remorse(settings, REASSURE)
    assert ledger_rows(settings) == {("O-a", "sent"), ("O-b", "bundled")}
    remorse(settings, REASSURE + dt.timedelta(days=1))  # catch-up day: neither anchor goes again
    assert ledger_rows(settings) == {("O-a", "sent"), ("O-b", "bundled")}


def test_a_returned_booking_never_leads_or_joins_a_bundle(settings: Settings, shop: Shop) -> None:
    cid = customer_outside_holdout(shop)
    shop.order(cid, dt.datetime.combine(BOOKED, dt.time(9)), order_id="O-returned", status="returned")
    shop.order(cid, dt.datetime.combine(BOOKED, dt.time(18)), order_id="O-kept")
    remorse(settings, BOOKED)
    remorse(settings, REASSURE)
    assert ledger_rows(settings) == {("O-kept", "sent")}
    with Runtime(settings).state.connect() as conn:
        reasons = {
            (r.anchor_id, r.reason)
            for r in conn.execute(
                sa.select(decisions.c.anchor_id, decisions.c.reason).where(decisions.c.as_of == REASSURE)
            )
        }
    assert reasons == {("O-returned", "exited"), ("O-kept", "sent")}
