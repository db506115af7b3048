"""The candidates of one audience chunk: every due (customer, step, anchor), decided with its reason."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd
import sqlalchemy as sa

from loyalflow.audience.due import due_steps, prepare
from loyalflow.decide import caps, consent, rules, suppressions
from loyalflow.decide.eligibility import REENTRY_WAIT, Decision, Facts, Policy, decide, reach_all
from loyalflow.deliver import ledger
from loyalflow.deliver.channels import Message
from loyalflow.errors import SegmentError
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.spec import Campaign, Step
from loyalflow.warehouse import CUSTOMER_COLUMNS, dicts_by_ids, records


@dataclass(slots=True)
class Candidate:
    """One (customer, step, anchor) the segment makes due, with the decision about it."""

    step: Step
    row: dict[str, Any]
    customer: dict[str, Any] | None
    key: str
    decision: Decision
    message: Message | None = None
    outcome: str = "skipped"
    bundled: list[tuple[str, str]] = field(default_factory=list)  # (key, anchor_id) sent within this one
    referral_code: str | None = None  # the code its message carries (compose.referral.codes_for)


def load_customers(engine: sa.Engine, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Customer rows by id, checked for the contract columns."""
    columns, rows = dicts_by_ids(engine, "customers", ids)
    missing = [c for c in CUSTOMER_COLUMNS if c not in columns]
    if missing:
        raise SegmentError(f"warehouse table customers is missing column(s): {', '.join(missing)}")
    for row in rows:
        row["customer_id"] = str(row["customer_id"])
    return {r["customer_id"]: r for r in rows}


def _reentry(
    campaign: Campaign, anchors: dict[str, dt.date], row: dict[str, Any], key: str, sent: set[str]
) -> str | None:
    """Why a new anchor may not start yet: the customer had this campaign for another anchor too recently."""
    others = [day for anchor, day in anchors.items() if anchor != str(row["anchor_id"])]
    if campaign.reentry_days is None or key in sent or not others:
        return None
    return (
        f"{REENTRY_WAIT}: last message of this campaign on {max(others)} "
        f"(re-entry after {campaign.reentry_days} days)"
    )


def bundles(
    campaign: Campaign, rows: list[dict[str, Any]], as_of: dt.date, not_before: dt.date | None
) -> list[tuple[Step, dt.date, list[dict[str, Any]]]]:
    """Due (step, day, anchor rows): anchors of one customer due for the same step on the same day are one
    message. Rows arrive ordered by customer and anchor, so the first anchor leads; the template sees
    every anchor's row as ``items``. Steps on days before ``not_before`` (recorded as before the campaign
    started) and rows with an exit reason (recorded as exited) stand alone, never inside a bundle."""
    groups: dict[tuple[str, str, dt.date], tuple[Step, list[dict[str, Any]]]] = {}
    known: dict[tuple[Any, ...], list[tuple[Step, dt.date]]] = {}  # steps depend on the anchor's day only
    for row in rows:
        when = (row["anchor_at"].date(), row.get("step"), row.get("_pause"))
        if when not in known:
            known[when] = due_steps(campaign, row["anchor_at"], as_of, when[1], when[2])
        for step, day in known[when]:
            alone = (not_before is not None and day < not_before) or bool(row.get("exit_reason"))
            slot = (str(row["customer_id"]), step.id if not alone else f"{step.id}|{row['anchor_id']}", day)
            groups.setdefault(slot, (step, []))[1].append(row)
    # the rows share the segment's columns: strip private ("_") keys only where there are any
    private = bool(rows) and any(k.startswith("_") for k in rows[0])

    def public(row: dict[str, Any]) -> dict[str, Any]:
        if private or "_pause" in row:
            return {k: v for k, v in row.items() if not k.startswith("_")}
        return row

    out = []
    for (_, _, day), (step, members) in groups.items():
        items = [public(m) for m in members]
        out.append((step, day, [{**members[0], "items": items}, *members[1:]]))
    return out


def candidates(
    rt: Runtime, campaign: Campaign, frame: pd.DataFrame, opts: RunOptions, not_before: dt.date | None = None
) -> list[Candidate]:
    """Every due (customer, step, day) of an audience chunk, decided in the eligibility order.

    ``not_before`` is the first step day the campaign may send (activation less back-fill, for event
    entry); earlier steps in the catch-up window are recorded as ``before_start``.
    """
    rows = records(prepare(rt, campaign, frame, opts.as_of))
    ids = sorted({str(r["customer_id"]) for r in rows})
    rows = rules.apply(campaign, rows, rules.load_answers(rt.state, ids, opts.as_of))
    due = bundles(campaign, rows, opts.as_of, not_before)
    ids = sorted({str(members[0]["customer_id"]) for _, _, members in due})
    customers = load_customers(rt.warehouse, ids)
    policy = Policy.for_campaign(rt.settings, campaign)

    keys: dict[tuple[str, int], str] = {}  # (step, id of the row) -> key: each is derived once
    derive = ledger.keys_for(rt.state, campaign.id)

    def key(step: Step, row: dict[str, Any]) -> str:
        slot = (step.id, id(row))
        if slot not in keys:
            keys[slot] = derive(step.id, str(row["customer_id"]), str(row["anchor_id"]))
        return keys[slot]

    with rt.state.connect() as conn:
        known = ledger.statuses(conn, [key(step, m) for step, _, members in due for m in members])
    book = consent.effective(rt.warehouse, rt.state, ids)
    facts = Facts(
        reach=reach_all(campaign, customers, book, partial(suppressions.lookup, rt.state), opts.send_time),
        ledger_keys={k for k, status in known.items() if status != ledger.RELEASED},
    )
    bundled_before = {k for k, status in known.items() if status == ledger.BUNDLED}
    entries = ledger.recent_anchors(rt.state, campaign.id, ids, opts.as_of, campaign.reentry_days)

    def decide_chunk() -> list[Candidate]:
        """Decide every due message of the chunk in segment order (each decision may take a cap slot).

        Depends on nothing but the cap book in ``facts.reserve``: it may run twice (see
        :func:`~loyalflow.decide.caps.decided`), so the anchors it enters go into its own copy."""
        out: list[Candidate] = []
        recent = defaultdict(dict, {cid: dict(anchors) for cid, anchors in entries.items()})
        for step, day, (row, *others) in due:
            main, extra = key(step, row), [(key(step, m), str(m["anchor_id"])) for m in others]
            customer = customers.get(str(row["customer_id"]))
            if customer is None:
                out.append(Candidate(step, row, None, main, Decision("unknown_customer")))
                continue
            if not_before is not None and day < not_before:
                detail = f"step day {day} is before the campaign started on {not_before}"
                out.append(Candidate(step, row, customer, main, Decision("before_start", detail=detail)))
                continue
            if main not in facts.ledger_keys and any(
                k in facts.ledger_keys and k not in bundled_before for k, _ in extra
            ):
                detail = "another anchor of this step and day was already messaged"
                out.append(
                    Candidate(
                        step, row, customer, main, Decision("already_sent", detail=detail), bundled=extra
                    )
                )
                continue
            exit_reason = row.get("exit_reason")
            if not exit_reason and campaign.entry == "event":  # state entry waits for re-entry when it enters
                exit_reason = _reentry(
                    campaign, recent.get(customer["customer_id"], {}), row, main, facts.ledger_keys
                )
            reach = facts.reach[customer["customer_id"]]
            decision = decide(campaign, customer, reach, main, exit_reason, facts, opts.send_time, policy)
            if decision.eligible:
                recent[customer["customer_id"]][str(row["anchor_id"])] = opts.as_of
            out.append(Candidate(step, row, customer, main, decision, bundled=extra))
        return out

    if campaign.category != "marketing":
        return decide_chunk()
    # Marketing: one cap book for the chunk, atomic against other reservers (a dry run checks without
    # reserving). The earliest slot day is the day before the send time (time zones).
    since = (opts.send_time - dt.timedelta(days=1)).date()
    leads = [key(step, members[0]) for step, _, members in due]

    def decide_with(cap_book: caps.CapBook) -> list[Candidate]:
        def reserve(customer_id: str, cap_key: str, day: dt.date) -> str | None:
            return cap_book.reserve(
                customer_id, cap_key, day, campaign.id, campaign.priority, policy.per_day, policy.per_week
            )

        facts.reserve = reserve
        return decide_chunk()

    return caps.decided(rt.state, ids, leads, since, decide_with, commit=not opts.dry_run)
