"""The campaign pipeline shared by the CLI and the DAG tasks: plan, process chunks, summarise."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from loyalflow import caps, dispatch, ledger, referral, suppressions
from loyalflow.addresses import normalise_email, normalise_phone
from loyalflow.channels import Channel, Message, SendResult, channel_for
from loyalflow.context import build_context
from loyalflow.eligibility import Decision, Facts, Policy, consent_map, decide
from loyalflow.errors import LoyalflowError, RenderError, SegmentError
from loyalflow.programs import PROGRAMS
from loyalflow.reconcile import reconcile
from loyalflow.render import Renderer
from loyalflow.segments import discard, materialise, read_chunk
from loyalflow.settings import Settings
from loyalflow.spec import Brand, Campaign, Step, campaign_files, load_brand, load_campaign
from loyalflow.state import decisions, ensure_schema
from loyalflow.warehouse import CUSTOMER_COLUMNS, engine_for, read_by_ids, records, url_from_connection

log = logging.getLogger(__name__)
SAMPLE_ROWS = 5


@dataclass(frozen=True)
class RunOptions:
    """One evaluation of a campaign: the day it is evaluated for, and how."""

    as_of: dt.date
    run_id: str
    dry_run: bool = False
    send_limit: int | None = None
    now: dt.datetime | None = None  # the moment messages go out (UTC); defaults to the real time

    @property
    def send_time(self) -> dt.datetime:
        """The nominal send moment, naive UTC."""
        return self.now or dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class Runtime:
    """Settings plus the connections and compiled templates a run needs (built once per process)."""

    settings: Settings
    channels: dict[str, Channel] = field(default_factory=dict)

    @cached_property
    def warehouse(self) -> sa.Engine:
        """The customer warehouse (URL, or an Airflow Connection when ``warehouse_conn_id`` is set)."""
        s = self.settings
        return engine_for(
            url_from_connection(s.warehouse_conn_id) if s.warehouse_conn_id else s.warehouse_url
        )

    @cached_property
    def state(self) -> sa.Engine:
        """loyalflow's own tables: the warehouse unless a separate ``state_url`` is set."""
        engine = engine_for(self.settings.state_url) if self.settings.state_url else self.warehouse
        ensure_schema(engine)
        return engine

    @cached_property
    def renderer(self) -> Renderer:
        """Templates, compiled once per process."""
        return Renderer(self.settings.templates_dir)

    @cached_property
    def brand(self) -> Brand:
        """The sender details from ``campaigns/brand.yaml``."""
        return load_brand(self.settings.campaigns_dir)

    def campaign(self, campaign_id: str) -> Campaign:
        """Load and validate ``campaigns/<id>.yaml``."""
        path = self.settings.campaigns_dir / f"{campaign_id}.yaml"
        if not path.is_file():
            known = ", ".join(p.stem for p in campaign_files(self.settings.campaigns_dir))
            raise LoyalflowError(f"unknown campaign '{campaign_id}' (no {path}); known: {known}")
        return load_campaign(path, self.settings.templates_dir)

    def channel(self, kind: str) -> Channel:
        """The provider for ``kind``, created on first use."""
        if kind not in self.channels:
            self.channels[kind] = channel_for(kind, self.settings)
        return self.channels[kind]


def due_steps(
    campaign: Campaign, anchor_at: dt.datetime, as_of: dt.date, only_step: str | None = None
) -> list[Step]:
    """Steps whose day (anchor + delay) is as_of or within the catch-up window before it.

    A segment may return a ``step`` column to make a row count for that step alone.
    """
    start = anchor_at.date() + dt.timedelta(days=campaign.anchor_offset_days)
    earliest = as_of - dt.timedelta(days=campaign.catch_up_days)
    return [
        s
        for s in campaign.steps
        if earliest <= start + dt.timedelta(days=s.delay_days) <= as_of and only_step in (None, s.id)
    ]


def segment_params(rt: Runtime, campaign: Campaign) -> dict[str, Any]:
    """Bound parameters a campaign's program adds to its segment query."""
    program = PROGRAMS.get(campaign.program or "")
    return program.params(rt.settings.campaigns_dir) if program else {}


def prepare(rt: Runtime, campaign: Campaign, frame: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Apply the campaign's program (if any) to segment rows before steps are worked out."""
    program = PROGRAMS.get(campaign.program or "")
    if program is None:
        return frame
    return program.prepare(rt.state, rt.settings.campaigns_dir, campaign.id, frame, as_of)


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


def load_customers(engine: sa.Engine, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Customer rows by id, checked for the contract columns."""
    frame = read_by_ids(engine, "customers", ids)
    missing = [c for c in CUSTOMER_COLUMNS if c not in frame.columns]
    if missing:
        raise SegmentError(f"warehouse table customers is missing column(s): {', '.join(missing)}")
    frame["customer_id"] = frame["customer_id"].astype(str)
    return {r["customer_id"]: r for r in records(frame)}


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


def _message(rt: Runtime, campaign: Campaign, cand: Candidate, opts: RunOptions) -> Message:
    assert cand.customer is not None and cand.decision.channel and cand.decision.address
    channel = cand.decision.channel
    context = build_context(
        rt.settings, rt.brand, campaign, cand.step, cand.customer, cand.row, channel, opts.as_of
    )
    parts = rt.renderer.render(campaign.id, cand.step.template_name, channel, context)
    headers = {}
    if channel == "email":
        headers = {
            "List-Unsubscribe": f"<{context['links']['unsubscribe']}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    return Message(
        idempotency_key=cand.key,
        campaign=campaign.id,
        step=cand.step.id,
        customer_id=str(cand.row["customer_id"]),
        channel=channel,
        to=cand.decision.address,
        text=parts.get("txt") or parts["sms"],
        send_at=cand.decision.send_at or opts.send_time,
        category=campaign.category,
        subject=parts.get("subject"),
        html=parts.get("html"),
        sender=f"{rt.brand.from_name} <{rt.brand.from_email}>" if channel == "email" else rt.brand.sms_sender,
        reply_to=rt.brand.reply_to,
        headers=headers,
    )


def evaluate(rt: Runtime, campaign: Campaign, frame: pd.DataFrame, opts: RunOptions) -> list[Candidate]:
    """Decide every due (customer, step) of an audience chunk and render the eligible messages."""
    rows = records(prepare(rt, campaign, frame, opts.as_of))
    due = [
        (step, row)
        for row in rows
        for step in due_steps(campaign, row["anchor_at"], opts.as_of, row.get("step"))
    ]
    ids = sorted({str(row["customer_id"]) for _, row in due})
    customers = load_customers(rt.warehouse, ids)
    prefs = read_by_ids(
        rt.warehouse, "channel_preferences", ids, "customer_id, channel, opted_in, source, consented_at"
    )
    policy = Policy.for_campaign(rt.settings, campaign)
    keys = [
        ledger.idempotency_key(campaign.id, s.id, str(r["customer_id"]), str(r["anchor_id"])) for s, r in due
    ]
    facts = Facts(
        consent=consent_map(records(prefs), until=opts.send_time),
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
        decision = decide(
            campaign,
            customer,
            key,
            row.get("exit_reason")
            or _reentry(campaign, entries.get(customer["customer_id"], {}), row, key, facts.ledger_keys),
            facts,
            opts.send_time,
            policy,
        )
        cand = Candidate(step, row, customer, key, decision)
        if decision.eligible:
            entries[customer["customer_id"]][str(row["anchor_id"])] = opts.as_of
            try:
                cand.message = _message(rt, campaign, cand, opts)
            except RenderError as exc:
                cand.decision, cand.outcome = (
                    Decision("render_error", decision.channel, detail=str(exc)),
                    "failed",
                )
                log.warning(
                    "render failed for customer %s step %s: %s", customer["customer_id"], step.id, exc
                )
        out.append(cand)
    return out


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


def _sent_in_run(rt: Runtime, campaign: Campaign, run_id: str) -> int:
    with rt.state.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(ledger.ledger)
                .where(ledger.ledger.c.campaign == campaign.id, ledger.ledger.c.run_id == run_id)
            ).scalar_one()
        )


def deliver(rt: Runtime, campaign: Campaign, cands: list[Candidate], opts: RunOptions) -> None:
    """Claim, send and record every rendered message (all rendering is done before the first send)."""
    ready = [c for c in cands if c.message is not None]
    if opts.dry_run:
        for c in ready:
            c.outcome = "dry_run"
        return
    if opts.send_limit is not None:
        room = max(0, opts.send_limit - _sent_in_run(rt, campaign, opts.run_id))
        for c in ready[room:]:
            c.decision, c.message = Decision("send_limit", c.decision.channel), None
        ready = ready[:room]
    if campaign.category == "marketing":  # a lower-priority message may have lost its cap slot meanwhile
        held = caps.confirm(rt.state, [c.key for c in ready])
        for c in ready:
            if c.key not in held:
                detail = caps.preempted_by(rt.state, c.key)
                c.decision, c.message = Decision("frequency_cap", c.decision.channel, detail=detail), None
        ready = [c for c in ready if c.key in held]
    for kind in campaign.channels:
        batch = [c for c in ready if c.decision.channel == kind and c.customer is not None]
        if not batch:
            continue
        channel = rt.channel(kind)
        won = ledger.claim(
            rt.state,
            [
                {
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
                for c in batch
                if c.customer is not None
            ],
        )
        for c in batch:
            if c.key not in won:
                c.decision, c.outcome = (
                    Decision("already_sent", kind, detail="claimed by another run"),
                    "skipped",
                )
        mine = [c for c in batch if c.key in won]
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        later = [c for c in mine if c.message and not dispatch.is_due(c.message, channel.horizon, now)]
        dispatch.keep(rt.state, [c.message for c in later if c.message])
        for c in later:
            c.outcome = "scheduled"
            c.decision = Decision("scheduled", kind, detail=f"until {c.decision.send_at:%Y-%m-%dT%H:%M}Z")
        mine = [c for c in mine if c.outcome != "scheduled"]
        results = {r.idempotency_key: r for r in channel.send([c.message for c in mine if c.message])}
        for c in mine:  # a result the channel did not give may have gone out
            results.setdefault(c.key, SendResult(c.key, "unknown", error="no result from the channel"))
        ledger.record(
            rt.state,
            [(r.idempotency_key, r.status, r.provider_message_id, r.error) for r in results.values()],
        )
        for c in mine:
            result = results[c.key]
            c.outcome = result.status
            if result.error:
                c.decision = Decision(c.outcome, kind, detail=result.error)
    # Every message carries the customer's referral code: store it so referred orders can be attributed.
    referral.remember(
        rt.state,
        rt.settings.secret_key,
        [str(c.row["customer_id"]) for c in cands if c.outcome in ("sent", "scheduled")],
    )
    if campaign.category == "marketing":
        released = [c.key for c in cands if c.decision.reason in ("render_error", "send_limit", "failed")]
        taken = [c.key for c in cands if c.outcome in ("sent", "unknown", "scheduled")]
        caps.finish(rt.state, taken, released)


def record_decisions(rt: Runtime, campaign: Campaign, cands: list[Candidate], opts: RunOptions) -> None:
    """Store every decision with its reason (what ``explain`` and the summary read)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [
        {
            "run_id": opts.run_id,
            "as_of": opts.as_of,
            "campaign": campaign.id,
            "step": c.step.id,
            "customer_id": str(c.row["customer_id"]),
            "anchor_id": str(c.row["anchor_id"]),
            "channel": c.decision.channel,
            "outcome": c.outcome,
            "reason": c.outcome if c.outcome in ("sent", "dry_run") else c.decision.reason,
            "detail": c.decision.detail or None,
            "idempotency_key": c.key,
            "decided_at": now,
        }
        for c in cands
    ]
    if rows:
        with rt.state.begin() as conn:
            conn.execute(decisions.insert(), rows)


def check_sample(rt: Runtime, campaign: Campaign, sample: pd.DataFrame, as_of: dt.date) -> int:
    """Compile every template and render each step and channel on sample rows; return rows rendered.

    Any failure raises, so a campaign whose sample render fails sends nothing.
    """
    for step in campaign.steps:
        for channel in campaign.channels:
            rt.renderer.compile_all(campaign.id, step.template_name, channel)
    rows = records(prepare(rt, campaign, sample.head(SAMPLE_ROWS), as_of))
    customers = load_customers(rt.warehouse, sorted({str(r["customer_id"]) for r in rows}))
    rendered = 0
    for row in rows:
        customer = customers.get(str(row["customer_id"]))
        if customer is None or row.get("exit_reason"):
            continue
        for step in campaign.steps:
            if row.get("step") not in (None, step.id):
                continue
            for channel in campaign.channels:
                context = build_context(rt.settings, rt.brand, campaign, step, customer, row, channel, as_of)
                rt.renderer.render(campaign.id, step.template_name, channel, context)
        rendered += 1
    return rendered


def settle(rt: Runtime, campaign: Campaign) -> None:
    """Settle what earlier runs left in doubt, before deciding anything.

    Stale claims (a crashed process) become ``unknown``, provider events resolve them, and messages
    that were certainly not delivered are released, so this run sends them again.
    """
    ledger.expire_stale_claims(rt.state, rt.settings.claim_lease_seconds, campaign.id)
    reconcile(rt.state, rt.settings.event_window_seconds, campaign.id)


def plan(rt: Runtime, campaign: Campaign, opts: RunOptions) -> list[str]:
    """Materialise the audience into chunk files and check the templates against sample rows."""
    settle(rt, campaign)
    chunks = materialise(
        rt.warehouse,
        campaign,
        opts.as_of,
        opts.run_id,
        rt.settings.work_url,
        rt.settings.chunk_size,
        segment_params(rt, campaign),
    )
    check_sample(rt, campaign, read_chunk(chunks[0]) if chunks else pd.DataFrame(), opts.as_of)
    if not chunks:
        log.info(
            "campaign %s: segment %s returned no rows for %s; nothing to send",
            campaign.id,
            campaign.segment,
            opts.as_of,
        )
    return chunks


def process_chunk(rt: Runtime, campaign: Campaign, chunk_url: str, opts: RunOptions) -> dict[str, int]:
    """Decide, render, send and record one audience chunk; returns counts by reason."""
    cands = evaluate(rt, campaign, read_chunk(chunk_url), opts)
    deliver(rt, campaign, cands, opts)
    record_decisions(rt, campaign, cands, opts)
    counts = Counter(c.outcome if c.outcome in ("sent", "dry_run") else c.decision.reason for c in cands)
    log.info("campaign %s chunk %s: %s", campaign.id, Path(chunk_url).name, dict(counts))
    return dict(counts)


def run(rt: Runtime, campaign_id: str, opts: RunOptions) -> dict[str, int]:
    """The whole pipeline in one process (the CLI path): plan, every chunk, totals."""
    campaign = rt.campaign(campaign_id)
    totals: Counter[str] = Counter()
    for chunk in plan(rt, campaign, opts):
        totals.update(process_chunk(rt, campaign, chunk, opts))
    discard(rt.settings.work_url, campaign.id, opts.run_id)
    return dict(totals)
