"""The run summary in a marketer's words: dry runs say "would send", every reason code has its words."""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa

from loyalflow.decide.eligibility import in_holdout
from loyalflow.ops.summary import REASONS, note, reason_words, summary
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.state import decisions
from tests.conftest import ROOT
from tests.factories import Shop

AS_OF = dt.date(2026, 11, 20)
DAY = dt.datetime(2026, 11, 20, 9, 30)
PACKAGE = ROOT / "plugins" / "loyalflow"
# how the stages record a reason: Decision("code", …), _drop(…, "code"), a channel's SendResult status,
# a customer's Reach("code") and its channel failures, fail(…, "code", …)
RECORDED = (
    re.compile(r'Decision\(\s*"(\w+)"'),
    re.compile(r'Reach\(\s*"(\w+)"'),
    re.compile(r'\bfail\([^)]*?"(\w+)"'),
    re.compile(r'_drop\([^)]*?"(\w+)"'),
    re.compile(r'c\.outcome = "(\w+)"'),
)


def recorded_codes() -> set[str]:
    """Every reason code the decide, compose and deliver stages (and the pipeline) can record."""
    files = [*PACKAGE.glob("decide/*.py"), *PACKAGE.glob("deliver/*.py"), *PACKAGE.glob("compose/*.py")]
    codes = {
        code
        for f in [*files, PACKAGE / "pipeline.py"]
        for rx in RECORDED
        for code in rx.findall(f.read_text())
    }
    return codes | {"sent", "failed", "unknown"}  # SendResult.status, the outcome of a send


def test_every_recorded_reason_has_marketer_words() -> None:
    codes = recorded_codes()
    assert {"no_consent", "holdout", "already_sent", "frequency_cap", "send_limit", "scheduled"} <= codes
    unmapped = codes - {"eligible", "sent", "dry_run"} - set(REASONS)
    assert not unmapped, f"reason codes without words in ops/summary.py REASONS: {sorted(unmapped)}"
    assert reason_words("no_consent") == "no consent for any channel"
    assert reason_words("holdout") == "in the control group"
    assert reason_words("already_sent") == "sent already"
    assert not any("_" in words for words in REASONS.values())


def test_dry_run_says_would_send_then_real_run_sent_then_sent_already(settings: Settings, shop: Shop) -> None:
    buyers = [shop.customer() for _ in range(3)]
    silent = shop.customer(channels=())
    for cid in [*buyers, silent]:
        shop.order(cid, DAY)
    rt = Runtime(settings)

    run(rt, "thank_you", RunOptions(AS_OF, "dry", dry_run=True))
    (row,) = summary(rt.state, ["dry"]).to_dict("records")
    assert (row["step"], row["audience"], row["sent"], row["would send"]) == ("thanks", 4, 0, 3)
    assert row["skipped"] == "no consent for any channel 1"
    text = note(rt.state, "dry", AS_OF, dry_run=True)
    assert text == (
        "Dry run for 2026-11-20: would send 3 (thanks 3) of 4 due; skipped: no consent for any channel 1."
    )
    assert " sent" not in text.replace("would send", "")

    run(rt, "thank_you", RunOptions(AS_OF, "real"))
    (row,) = summary(rt.state, ["real"]).to_dict("records")
    assert (row["sent"], row["would send"]) == (3, 0)
    assert note(rt.state, "real", AS_OF, dry_run=False).startswith(
        "Sent for 2026-11-20: 3 (thanks 3) of 4 due"
    )

    run(rt, "thank_you", RunOptions(AS_OF, "again"))
    (row,) = summary(rt.state, ["again"]).to_dict("records")
    assert row["sent"] == 0 and "sent already 3" in row["skipped"]
    # over both real runs a message sent once counts once, as sent
    (both,) = summary(rt.state, ["real", "again"]).to_dict("records")
    assert (both["audience"], both["sent"]) == (4, 3)


def test_note_for_nobody_due_and_for_a_test_send(settings: Settings, shop: Shop) -> None:
    rt = Runtime(settings)
    assert summary(rt.state, ["none"]).empty
    assert note(rt.state, "none", AS_OF, dry_run=False) == "Nobody was due on 2026-11-20; nothing sent."
    assert (
        note(rt.state, "none", AS_OF, dry_run=True) == "Nobody was due on 2026-11-20; nothing would be sent."
    )
    text = note(rt.state, "t", AS_OF, dry_run=False, test_to=["a@example.com", "+14155550100"])
    assert text == (
        "Test send: 2 test message(s) to a@example.com, +14155550100 for 2026-11-20; no customer messaged."
    )
    assert len(note(rt.state, "t", AS_OF, False, test_to=[f"x{i}@example.com" for i in range(200)])) <= 1000


def test_a_new_booking_waiting_out_reentry_is_not_counted_as_leaving(settings: Settings, shop: Shop) -> None:
    """remorse_reduction starts one sequence per guest per 30 days: a second booking a day later waits
    (recorded as ``exited`` with a re-entry-wait detail), which the summary and the note say in those
    words, apart from a returned booking, which leaves the sequence."""
    booked = dt.date(2026, 11, 1)
    guests = [f"R{n:03d}" for n in range(1, 200) if not in_holdout("remorse_reduction", f"R{n:03d}", 10)]
    frequent, returner = (shop.customer(customer_id=cid) for cid in guests[:2])
    shop.order(frequent, dt.datetime.combine(booked, dt.time(9)), order_id="O-first")
    shop.order(frequent, dt.datetime.combine(booked + dt.timedelta(days=1), dt.time(9)), order_id="O-second")
    shop.order(returner, dt.datetime.combine(booked, dt.time(9)), order_id="O-returned", status="returned")
    rt = Runtime(settings)
    for day in (booked, booked + dt.timedelta(days=3), booked + dt.timedelta(days=4)):
        run(rt, "remorse_reduction", RunOptions(day, f"r-{day}", now=dt.datetime.combine(day, dt.time(15))))

    last = f"r-{booked + dt.timedelta(days=4)}"
    with rt.state.connect() as conn:
        (recorded,) = conn.execute(
            sa.select(decisions.c.reason, decisions.c.detail).where(
                decisions.c.run_id == last, decisions.c.anchor_id == "O-second"
            )
        )
    assert recorded.reason == "exited" and recorded.detail.startswith("re-entry wait: ")  # recorded as before
    (row,) = summary(rt.state, [last]).to_dict("records")
    assert row["step"] == "reassurance" and row["sent"] == 0
    skipped = dict(part.rsplit(" ", 1) for part in row["skipped"].split(", "))
    assert skipped == {"waiting out the re-entry period": "1", "left the sequence": "1", "sent already": "1"}
    assert "waiting out the re-entry period 1" in note(rt.state, last, booked, dry_run=False)
