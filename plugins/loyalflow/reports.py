"""Reports over the decisions log: run summaries and per-customer explanations."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from loyalflow.state import decisions


def _latest(run_ids: list[str]) -> sa.Subquery:
    """The latest decision per message key within the runs (a retried task replaces its earlier try)."""
    return (
        sa.select(sa.func.max(decisions.c.id).label("id"))
        .where(decisions.c.run_id.in_(run_ids))
        .group_by(decisions.c.run_id, decisions.c.idempotency_key)
        .subquery()
    )


def summary(engine: sa.Engine, run_ids: list[str]) -> pd.DataFrame:
    """Per campaign and step: audience, sent, and skipped by reason, for the given runs."""
    latest = _latest(run_ids)
    stmt = (
        sa.select(decisions.c.campaign, decisions.c.step, decisions.c.reason, sa.func.count().label("n"))
        .join(latest, latest.c.id == decisions.c.id)
        .group_by(decisions.c.campaign, decisions.c.step, decisions.c.reason)
    )
    with engine.connect() as conn:
        frame = pd.read_sql_query(stmt, conn)
    if frame.empty:
        return pd.DataFrame(columns=["campaign", "step", "audience", "sent"])
    table = frame.pivot_table(
        index=["campaign", "step"], columns="reason", values="n", fill_value=0, aggfunc="sum"
    )
    table.insert(0, "audience", table.sum(axis=1))
    if "sent" not in table.columns:
        table["sent"] = 0
    cols = ["audience", "sent"] + sorted(c for c in table.columns if c not in ("audience", "sent"))
    out = table[cols].reset_index()
    out.columns.name = None
    return out


def decisions_for(engine: sa.Engine, customer_id: str, campaign: str | None = None) -> pd.DataFrame:
    """Every decision recorded for a customer, newest first: what ``loyalflow explain`` shows."""
    stmt = (
        sa.select(
            decisions.c.decided_at,
            decisions.c.as_of,
            decisions.c.campaign,
            decisions.c.step,
            decisions.c.anchor_id,
            decisions.c.channel,
            decisions.c.outcome,
            decisions.c.reason,
            decisions.c.detail,
        )
        .where(decisions.c.customer_id == customer_id)
        .order_by(decisions.c.id.desc())
    )
    if campaign:
        stmt = stmt.where(decisions.c.campaign == campaign)
    with engine.connect() as conn:
        return pd.read_sql_query(stmt, conn)
