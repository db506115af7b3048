"""Delivery of a chunk's rendered messages, step by step along the ledger's state machine.

limit → confirm caps → claim → schedule (provider cannot hold it yet) or send → record → settle caps.
Every message is rendered before the first one is sent (see :mod:`loyalflow.compose.message`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from loyalflow.compose import referral
from loyalflow.decide import caps
from loyalflow.decide.candidates import Candidate
from loyalflow.decide.eligibility import Decision
from loyalflow.deliver import dispatch, ledger
from loyalflow.deliver.channels import Channel, SendResult
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.spec import Campaign


def _drop(cands: list[Candidate], reason: str, detail: str = "") -> None:
    for c in cands:
        c.decision, c.message = Decision(reason, c.decision.channel, detail=detail), None


def _sent_in_run(rt: Runtime, campaign: Campaign, run_id: str) -> int:
    with rt.state.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(ledger.ledger)
                .where(ledger.ledger.c.campaign == campaign.id, ledger.ledger.c.run_id == run_id)
            ).scalar_one()
        )


def within_limit(
    rt: Runtime, campaign: Campaign, ready: list[Candidate], opts: RunOptions
) -> list[Candidate]:
    """The messages the run's ``send_limit`` still has room for; the rest are skipped as ``send_limit``."""
    if opts.send_limit is None:
        return ready
    room = max(0, opts.send_limit - _sent_in_run(rt, campaign, opts.run_id))
    _drop(ready[room:], "send_limit")
    return ready[:room]


def confirm_caps(rt: Runtime, campaign: Campaign, ready: list[Candidate]) -> list[Candidate]:
    """Marketing messages whose cap slot is still held (a higher-priority campaign may have taken it)."""
    if campaign.category != "marketing":
        return ready
    held = caps.confirm(rt.state, [c.key for c in ready])
    for c in ready:
        if c.key not in held:
            _drop([c], "frequency_cap", caps.preempted_by(rt.state, c.key) or "")
    return [c for c in ready if c.key in held]


def _row(campaign: Campaign, c: Candidate, kind: str, channel: Channel, opts: RunOptions) -> dict[str, Any]:
    if c.customer is None:
        raise ValueError(f"candidate {c.key} has no customer row: nothing to claim")
    return {
        "idempotency_key": c.key,
        "campaign": campaign.id,
        "step": c.step.id,
        "customer_id": c.customer["customer_id"],
        "anchor_id": str(c.row["anchor_id"]),
        "channel": kind,
        "category": campaign.category,
        "provider": channel.provider,
        "run_id": opts.run_id,
        "as_of": opts.as_of,
        "send_at": c.message.send_at if c.message else None,
    }


def claim(
    rt: Runtime, campaign: Campaign, batch: list[Candidate], kind: str, channel: Channel, opts: RunOptions
) -> list[Candidate]:
    """Claim the batch's keys in the ledger (and record bundled anchors); return the candidates won."""
    claimable = [(c, _row(campaign, c, kind, channel, opts)) for c in batch if c.customer is not None]
    won = ledger.claim(rt.state, [row for _, row in claimable])
    ledger.mark_bundled(
        rt.state,
        [
            {**base, "idempotency_key": key, "anchor_id": anchor}
            for c, base in claimable
            if c.bundled and c.key in won
            for key, anchor in c.bundled
        ],
    )
    mine = []
    for c in batch:
        if c.key in won:
            mine.append(c)
        else:
            c.decision, c.outcome = Decision("already_sent", kind, detail="claimed by another run"), "skipped"
    return mine


def schedule_later(rt: Runtime, mine: list[Candidate], kind: str, channel: Channel) -> list[Candidate]:
    """Keep messages the provider cannot take yet as ``scheduled``; return those to send now."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    later = [c for c in mine if c.message and not dispatch.is_due(c.message, channel.horizon, now)]
    dispatch.keep(rt.state, [c.message for c in later if c.message])
    for c in later:
        c.outcome = "scheduled"
        c.decision = Decision("scheduled", kind, detail=f"until {c.decision.send_at:%Y-%m-%dT%H:%M}Z")
    return [c for c in mine if c.outcome != "scheduled"]


def send_and_record(rt: Runtime, now: list[Candidate], kind: str, channel: Channel) -> None:
    """Send through the provider and record each outcome; a result the channel did not give may have gone."""
    results = {r.idempotency_key: r for r in channel.send([c.message for c in now if c.message])}
    for c in now:
        results.setdefault(c.key, SendResult(c.key, "unknown", error="no result from the channel"))
    ledger.record(
        rt.state, [(r.idempotency_key, r.status, r.provider_message_id, r.error) for r in results.values()]
    )
    for c in now:
        result = results[c.key]
        c.outcome = result.status
        if result.error:
            c.decision = Decision(c.outcome, kind, detail=result.error)


def settle_caps(rt: Runtime, campaign: Campaign, cands: list[Candidate]) -> None:
    """Mark cap slots of sent messages as used and release those of messages that did not go."""
    if campaign.category != "marketing":
        return
    released = [c.key for c in cands if c.decision.reason in ("render_error", "send_limit", "failed")]
    taken = [c.key for c in cands if c.outcome in ("sent", "unknown", "scheduled")]
    caps.finish(rt.state, taken, released)


def deliver(rt: Runtime, campaign: Campaign, cands: list[Candidate], opts: RunOptions) -> None:
    """Claim, send and record every rendered message of a chunk (a dry run only marks them)."""
    ready = [c for c in cands if c.message is not None]
    if opts.dry_run:
        for c in ready:
            c.outcome = "dry_run"
        return
    ready = confirm_caps(rt, campaign, within_limit(rt, campaign, ready, opts))
    by_kind: dict[str | None, list[Candidate]] = {}
    for c in ready:
        if c.customer is not None:
            by_kind.setdefault(c.decision.channel, []).append(c)
    for kind in campaign.channels:
        batch = by_kind.get(kind)
        if batch:
            channel = rt.channel(kind)
            mine = claim(rt, campaign, batch, kind, channel, opts)
            send_and_record(rt, schedule_later(rt, mine, kind, channel), kind, channel)
    # A message that shows the customer's referral code stores it, so referred orders can be attributed.
    went = [c for c in cands if c.outcome in ("sent", "scheduled") and c.referral_code]
    referral.remember(
        rt.state,
        rt.settings.secret_key,
        [str(c.row["customer_id"]) for c in went],
        {str(c.row["customer_id"]): c.referral_code for c in went if c.referral_code},
    )
    settle_caps(rt, campaign, cands)
