"""Run summaries in a marketer's words: what one or more runs did per campaign and step.

The CLI prints :func:`summary` as a table; a DAG's ``report`` task logs it and sets :func:`note` as the
DAG run's note, so the Airflow grid shows what each run did. A dry run never says "sent": its messages
are counted as "would send". Skip reasons are the codes the decide and deliver stages record
(``loyalflow_decisions.reason``), named as :data:`REASONS` says; ``loyalflow explain`` shows the codes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd
import sqlalchemy as sa

from loyalflow.decide.eligibility import REENTRY_WAIT
from loyalflow.state import decisions

FINAL = ("sent", "dry_run", "scheduled")  # outcomes that settle a message key for a summary
COLUMNS = ["campaign", "step", "audience", "sent", "would send", "skipped"]
NOTE_LIMIT = 1000  # Airflow keeps at most this many characters of a DAG run note

# Every reason code a run records, in the words a marketer reads (docs/architecture.md §4 for the order).
REASONS = {
    "no_consent": "no consent for any channel",
    "suppressed": "unsubscribed, bounced or complained",
    "invalid_address": "no valid address",
    "exited": "left the sequence",
    "reentry_wait": "waiting out the re-entry period",  # an "exited" code (see settled)
    "holdout": "in the control group",
    "frequency_cap": "over the marketing frequency cap",
    "already_sent": "sent already",
    "before_start": "due before the campaign started",
    "unknown_customer": "not in the customers table",
    "send_limit": "over this run's send limit",
    "render_error": "template failed to render",
    "scheduled": "held for the send window (sends later)",
    "failed": "refused by the provider",
    "unknown": "delivery not confirmed yet",
}


def reason_words(code: str) -> str:
    """The marketer's words for a recorded reason code (an unmapped code is shown as itself)."""
    return REASONS.get(code, code.replace("_", " "))


def settled(engine: sa.Engine, run_ids: list[str]) -> pd.DataFrame:
    """One row per message key over the given runs (campaign, step, reason code): as sent if any of its
    decisions sent it, else with its latest reason (catch-up days and retries decide a key again).

    An ``exited`` decision of a new anchor that waits out the campaign's ``reentry_days`` counts as
    ``reentry_wait``: the customer is still in the sequence (a nurture between two pieces), not gone."""
    stmt = sa.select(
        decisions.c.id,
        decisions.c.campaign,
        decisions.c.step,
        decisions.c.idempotency_key,
        decisions.c.outcome,
        sa.case(
            (
                sa.and_(decisions.c.reason == "exited", decisions.c.detail.startswith(REENTRY_WAIT)),
                "reentry_wait",
            ),
            else_=decisions.c.reason,
        ).label("reason"),
    ).where(decisions.c.run_id.in_(run_ids))
    with engine.connect() as conn:
        frame = pd.read_sql_query(stmt, conn)
    if frame.empty:
        return pd.DataFrame(columns=["campaign", "step", "reason"])
    # a send whose provider gave no error keeps the decision's "eligible": its outcome is the reason
    frame["reason"] = frame["reason"].where(frame["reason"] != "eligible", frame["outcome"])
    frame["final"] = frame["reason"].isin(FINAL)
    last = frame.sort_values(["final", "id"]).groupby("idempotency_key").tail(1)
    return last[["campaign", "step", "reason"]].reset_index(drop=True)


def _skipped(counts: pd.Series) -> pd.Series:
    return counts.drop(labels=[r for r in ("sent", "dry_run") if r in counts.index])


def summary(engine: sa.Engine, run_ids: list[str]) -> pd.DataFrame:
    """Per campaign and step over the given runs: audience (distinct messages), sent, would send (dry
    runs) and skipped by reason, in words."""
    rows = []
    for (campaign, step), group in settled(engine, run_ids).groupby(["campaign", "step"]):
        counts = group["reason"].value_counts()
        rows.append(
            {
                "campaign": campaign,
                "step": step,
                "audience": int(counts.sum()),
                "sent": int(counts.get("sent", 0)),
                "would send": int(counts.get("dry_run", 0)),
                "skipped": ", ".join(f"{reason_words(str(r))} {n}" for r, n in _skipped(counts).items())
                or "-",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def note(engine: sa.Engine, run_id: str, as_of: dt.date, dry_run: bool, test_to: Sequence[str] = ()) -> str:
    """One paragraph for the DAG run's note: what the run did for ``as_of``, in the summary's words."""
    if test_to:
        verb = "Dry run of a test send: would send" if dry_run else "Test send:"
        to = ", ".join(test_to)
        return _fit(f"{verb} {len(test_to)} test message(s) to {to} for {as_of}; no customer messaged.")
    keys = settled(engine, [run_id])
    if keys.empty:
        return f"Nobody was due on {as_of}; nothing {'would be ' if dry_run else ''}sent."
    code = "dry_run" if dry_run else "sent"
    done = keys[keys["reason"] == code]["step"].value_counts()
    per_step = f" ({', '.join(f'{s} {n}' for s, n in done.items())})" if not done.empty else ""
    head = f"Dry run for {as_of}: would send" if dry_run else f"Sent for {as_of}:"
    skipped = ", ".join(
        f"{reason_words(str(r))} {n}" for r, n in _skipped(keys["reason"].value_counts()).items()
    )
    tail = f"; skipped: {skipped}" if skipped else ""
    return _fit(f"{head} {int(done.sum())}{per_step} of {len(keys)} due{tail}.")


def _fit(text: str) -> str:
    return text if len(text) <= NOTE_LIMIT else text[: NOTE_LIMIT - 1] + "…"
