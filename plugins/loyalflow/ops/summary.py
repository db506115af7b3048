"""Run summaries: what one or more runs did per campaign and step (the CLI table, the DAG's report task)."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from loyalflow.state import decisions

FINAL = ("sent", "dry_run", "scheduled")  # outcomes that settle a message key for a summary


def summary(engine: sa.Engine, run_ids: list[str]) -> pd.DataFrame:
    """Per campaign and step over the given runs: audience (distinct messages), sent, skipped by reason.

    A message key decided several times (catch-up days, retries) counts once: as sent if any of its
    decisions sent it, else with its latest reason.
    """
    stmt = sa.select(
        decisions.c.id,
        decisions.c.campaign,
        decisions.c.step,
        decisions.c.idempotency_key,
        decisions.c.reason,
    ).where(decisions.c.run_id.in_(run_ids))
    with engine.connect() as conn:
        frame = pd.read_sql_query(stmt, conn)
    if frame.empty:
        return pd.DataFrame(columns=["campaign", "step", "audience", "sent", "skipped"])
    frame["final"] = frame["reason"].isin(FINAL)
    last = frame.sort_values(["final", "id"]).groupby("idempotency_key").tail(1)
    rows = []
    for (campaign, step), group in last.groupby(["campaign", "step"]):
        counts = group["reason"].value_counts()
        skipped = counts.drop(labels=[r for r in ("sent", "dry_run") if r in counts.index])
        rows.append(
            {
                "campaign": campaign,
                "step": step,
                "audience": int(counts.sum()),
                "sent": int(counts.get("sent", 0) + counts.get("dry_run", 0)),
                "skipped": ", ".join(f"{reason} {n}" for reason, n in skipped.items()) or "-",
            }
        )
    return pd.DataFrame(rows)
