"""The candidates of one audience chunk: every due (customer, step, anchor), decided with its reason."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from loyalflow.audience.due import due_steps, prepare
from loyalflow.decide import caps, consent, suppressions
from loyalflow.decide.addresses import normalise_email, normalise_phone
from loyalflow.decide.eligibility import Decision, Facts, Policy, decide
from loyalflow.deliver import ledger
from loyalflow.deliver.channels import Message
from loyalflow.errors import SegmentError
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.spec import Campaign, Step
from loyalflow.warehouse import CUSTOMER_COLUMNS, read_by_ids, records


@dataclass
class Candidate:
    """One (customer, step, anchor) the segment makes due, with the decision about it."""

    step: Step
    row: dict[str, Any]
    customer: dict[str, Any] | None
    key: str
    decision: Decision
    message: Message | None = None
    outcome: str = "skipped"


def load_customers(engine: sa.Engine, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Customer rows by id, checked for the contract columns."""
    frame = read_by_ids(engine, "customers", ids)
    missing = [c for c in CUSTOMER_COLUMNS if c not in frame.columns]
    if missing:
        raise SegmentError(f"warehouse table customers is missing column(s): {', '.join(missing)}")
    frame["customer_id"] = frame["customer_id"].astype(str)
    return {r["customer_id"]: r for r in records(frame)}


def _suppressed(engine: sa.Engine, customers: dict[str, dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    emails = (normalise_email(c.get("email")) for c in customers.values())
    phones = (normalise_phone(c.get("phone")) for c in customers.values())
    return suppressions.lookup(engine, [a for a in (*emails, *phones) if a])


def _reserver(rt: Runtime, campaign: Campaign, policy: Policy, opts: RunOptions) -> Any:
    """The cap reservation callback ``decide`` uses (a dry run checks without reserving)."""

    def reserve(customer_id: str, key: str, day: dt.date) -> str | None:
        return caps.reserve(
            rt.state,
            customer_id=customer_id,
            key=key,
            day=day,
            campaign=campaign.id,
            priority=campaign.priority,
            per_day=policy.per_day,
            per_week=policy.per_week,
            commit=not opts.dry_run,
        )

    return reserve


def _reentry(
    campaign: Campaign, anchors: dict[str, dt.date], row: dict[str, Any], key: str, sent: set[str]
) -> str | None:
    """Why a new anchor may not start yet: the customer had this campaign for another anchor too recently."""
    others = [day for anchor, day in anchors.items() if anchor != str(row["anchor_id"])]
    if campaign.reentry_days is None or key in sent or not others:
        return None
    return (
        f"re-entry wait: last message of this campaign on {max(others)} "
        f"(re-entry after {campaign.reentry_days} days)"
    )


def candidates(rt: Runtime, campaign: Campaign, frame: pd.DataFrame, opts: RunOptions) -> list[Candidate]:
    """Every due (customer, step, anchor) of an audience chunk, decided in the eligibility order."""
    rows = records(prepare(rt, campaign, frame, opts.as_of))
    due = [
        (step, row)
        for row in rows
        for step in due_steps(campaign, row["anchor_at"], opts.as_of, row.get("step"))
    ]
    ids = sorted({str(row["customer_id"]) for _, row in due})
    customers = load_customers(rt.warehouse, ids)
    policy = Policy.for_campaign(rt.settings, campaign)
    keys = [
        ledger.idempotency_key(campaign.id, s.id, str(r["customer_id"]), str(r["anchor_id"])) for s, r in due
    ]
    facts = Facts(
        consent=consent.effective(rt.warehouse, rt.state, ids),
        suppressed=_suppressed(rt.state, customers),
        ledger_keys=ledger.existing_keys(rt.state, keys),
        reserve=_reserver(rt, campaign, policy, opts),
    )
    entries = ledger.recent_anchors(rt.state, campaign.id, ids, opts.as_of, campaign.reentry_days)
    out: list[Candidate] = []
    for (step, row), key in zip(due, keys, strict=True):
        customer = customers.get(str(row["customer_id"]))
        if customer is None:
            out.append(Candidate(step, row, None, key, Decision("unknown_customer")))
            continue
        exit_reason = row.get("exit_reason") or _reentry(
            campaign, entries.get(customer["customer_id"], {}), row, key, facts.ledger_keys
        )
        decision = decide(campaign, customer, key, exit_reason, facts, opts.send_time, policy)
        if decision.eligible:
            entries[customer["customer_id"]][str(row["anchor_id"])] = opts.as_of
        out.append(Candidate(step, row, customer, key, decision))
    return out
