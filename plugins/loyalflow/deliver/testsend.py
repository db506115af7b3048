"""Test sends: the campaign's real templates, rendered for real customers, sent only to staff addresses.

A DAG run with ``test_recipients`` (or :func:`send_tests` called directly) renders one message per
recipient, for a sample of the customers the segment returns on the as-of day, and hands it to the
campaign's real channel for that recipient's kind (email or SMS). Nothing is written to the ledger,
the decisions, the cap reservations or the referral codes, so reports never count a test. Each message
is marked as a test: the subject (or SMS text) starts with ``[TEST]``, emails carry the header
``X-Loyalflow-Test``, and the idempotency key and customer id start with ``test-``. The links inside are
signed for ``test-<customer id>``, so a click on "unsubscribe" in a test never touches the real customer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from typing import Any

from loyalflow.audience.due import prepare, segment_params
from loyalflow.audience.segments import read_segment
from loyalflow.compose.message import message
from loyalflow.decide.addresses import normalise_email, normalise_phone
from loyalflow.decide.candidates import Candidate, bundles, load_customers
from loyalflow.decide.eligibility import Decision
from loyalflow.deliver.channels import Message, SendResult
from loyalflow.errors import LoyalflowError
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.spec import Campaign, Step
from loyalflow.warehouse import records

SAMPLE_ROWS = 20  # segment rows read to pick sample customers from
MARK = "[TEST]"
HEADER = "X-Loyalflow-Test"


@dataclasses.dataclass(frozen=True)
class Recipient:
    """A validated test address and the channel it is reached on."""

    channel: str  # email | sms
    address: str  # normalised email or E.164 number


def parse_recipients(values: Iterable[str] | str | None) -> list[Recipient]:
    """Validate test addresses (email-validator, phonenumbers E.164); a bad one is named in the error.

    A single string may list several addresses separated by commas, semicolons or white space.
    """
    if values is None:
        return []
    items = re.split(r"[,;\s]+", values) if isinstance(values, str) else [str(v) for v in values]
    out: list[Recipient] = []
    for raw in (v.strip() for v in items):
        if not raw:
            continue
        if "@" in raw:
            address, channel = normalise_email(raw), "email"
        else:
            address, channel = normalise_phone(raw), "sms"
        if address is None:
            kind = "email address" if channel == "email" else "phone number in E.164 form (+4915123456789)"
            raise LoyalflowError(f"test_recipients: '{raw}' is not a valid {kind}")
        if Recipient(channel, address) not in out:
            out.append(Recipient(channel, address))
    return out


def samples(rt: Runtime, campaign: Campaign, opts: RunOptions) -> list[tuple[Step, dict[str, Any]]]:
    """(step, segment row) pairs of real customers for ``opts.as_of``: the messages due that day first,
    then every step for each sampled row (as the plan's sample render does). Reads only."""
    frames = read_segment(rt.warehouse, campaign, opts.as_of, SAMPLE_ROWS, segment_params(rt, campaign))
    frame = next(iter(frames), None)
    if frame is None or frame.empty:
        raise LoyalflowError(
            f"test send of {campaign.id}: the segment returns nobody on {opts.as_of}, so there is no real "
            "customer to render for; pick another as_of"
        )
    rows = [
        r
        for r in records(prepare(rt, campaign, frame.head(SAMPLE_ROWS), opts.as_of))
        if not r.get("exit_reason")
    ]
    due = [(step, members[0]) for step, _, members in bundles(campaign, rows, opts.as_of, None)]
    return due + [(step, {**row, "items": [row]}) for row in rows for step in campaign.steps]


def message_key(run_id: str, index: int, address: str) -> str:
    """The idempotency key of one test message (never a ledger key: those are hex digests)."""
    return "test-" + hashlib.sha256(f"{run_id}|{index}|{address}".encode()).hexdigest()[:32]


def mark(msg: Message) -> Message:
    """The message marked as a test: ``[TEST]`` first in the subject (SMS: the text), a test header, and
    ``test`` set (the outbox records it as ``"test": true``)."""
    if msg.channel == "email":
        return dataclasses.replace(
            msg,
            subject=f"{MARK} {msg.subject or ''}".strip(),
            headers={**msg.headers, HEADER: "true"},
            test=True,
        )
    return dataclasses.replace(msg, text=f"{MARK} {msg.text}", test=True)


def render_tests(
    rt: Runtime, campaign: Campaign, recipients: list[Recipient], opts: RunOptions
) -> list[Message]:
    """One marked message per recipient, each rendered for a real sample customer on the real templates."""
    missing = sorted({r.channel for r in recipients} - set(campaign.channels))
    if missing:
        raise LoyalflowError(
            f"test_recipients: campaign {campaign.id} sends on {', '.join(campaign.channels)}, not "
            f"{', '.join(missing)} ({', '.join(r.address for r in recipients if r.channel in missing)})"
        )
    pairs = samples(rt, campaign, opts)
    customers = load_customers(rt.warehouse, sorted({str(row["customer_id"]) for _, row in pairs}))
    pairs = [(step, row) for step, row in pairs if str(row["customer_id"]) in customers]
    if not pairs:
        raise LoyalflowError(f"test send of {campaign.id}: no sampled customer is in the customers table")
    out = []
    for i, recipient in enumerate(recipients):
        step, row = pairs[i % len(pairs)]
        test_id = f"test-{row['customer_id']}"
        customer = {**customers[str(row["customer_id"])], "customer_id": test_id}
        cand = Candidate(
            step,
            {**row, "customer_id": test_id},
            customer,
            message_key(opts.run_id, i, recipient.address),
            Decision("eligible", recipient.channel, recipient.address),
        )
        out.append(mark(message(rt, campaign, cand, dataclasses.replace(opts, now=None))))
    return out


def send_tests(
    rt: Runtime, campaign: Campaign, recipients: list[Recipient], opts: RunOptions
) -> list[dict[str, str]]:
    """Render and send the test messages through the campaign's real channels (a dry run only renders).

    Returns one row per message: to, channel, step, status (``sent``, ``failed``, ``unknown`` or
    ``would send``) and the provider's error if any.
    """
    msgs = render_tests(rt, campaign, recipients, opts)
    results: dict[str, SendResult] = {}
    if not opts.dry_run:
        for kind in sorted({m.channel for m in msgs}):
            batch = [m for m in msgs if m.channel == kind]
            results.update({r.idempotency_key: r for r in rt.channel(kind).send(batch)})
    rows = []
    for m in msgs:
        result = results.get(m.idempotency_key)
        status = "would send" if opts.dry_run else (result.status if result else "unknown")
        error = (result.error if result else "no result from the channel") if not opts.dry_run else None
        rows.append(
            {"to": m.to, "channel": m.channel, "step": m.step, "status": status, "error": error or ""}
        )
    return rows
