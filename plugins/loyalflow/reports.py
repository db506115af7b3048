"""Reports: run summaries, per-customer explanations, conversions, lift, referral and reactivation rates."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from loyalflow.state import decisions, ledger

FINAL = ("sent", "dry_run")  # outcomes that settle a message key for a summary


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
        skipped = counts.drop(labels=[r for r in FINAL if r in counts.index])
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


CONVERSION_DAYS = 14  # an order within this many days after a message (or holdout) counts as a conversion


def _orders(warehouse: sa.Engine, until: dt.date) -> pd.DataFrame:
    stmt = sa.text(
        "SELECT customer_id, ordered_at, referred_by FROM orders "
        "WHERE status = 'completed' AND ordered_at < :end"
    )
    with warehouse.connect() as conn:
        frame = pd.read_sql_query(
            stmt, conn, params={"end": dt.datetime.combine(until, dt.time()) + dt.timedelta(days=1)}
        )
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["day"] = pd.to_datetime(frame["ordered_at"]).dt.normalize()
    return frame


def _converted(exposed: pd.DataFrame, orders: pd.DataFrame, days: int, by: str = "customer_id") -> pd.Series:
    """Per exposed row (customer, day), whether ``by`` in orders has an order in the following ``days``."""
    if exposed.empty:
        return pd.Series(dtype=bool)
    merged = exposed.reset_index().merge(
        orders[[by, "day"]], left_on="customer_id", right_on=by, how="left", suffixes=("", "_order")
    )
    start = pd.to_datetime(merged["as_of"])
    hit = (merged["day_order"] > start) & (merged["day_order"] <= start + pd.Timedelta(days=days))
    return hit.groupby(merged["index"]).any().reindex(range(len(exposed)), fill_value=False)


def program_metrics(state: sa.Engine, warehouse: sa.Engine, as_of: dt.date) -> pd.DataFrame:
    """Per campaign and step: sent, holdout, conversions in 14 days for each, conversion rates and lift."""
    latest = sa.select(sa.func.max(decisions.c.id)).group_by(decisions.c.idempotency_key)
    stmt = sa.select(
        decisions.c.campaign, decisions.c.step, decisions.c.customer_id, decisions.c.as_of, decisions.c.reason
    ).where(
        decisions.c.id.in_(latest), decisions.c.as_of <= as_of, decisions.c.reason.in_(("sent", "holdout"))
    )
    with state.connect() as conn:
        exposed = pd.read_sql_query(stmt, conn)
    if exposed.empty:
        return pd.DataFrame(
            columns=["campaign", "step", "sent", "holdout", "conv_sent", "conv_holdout", "lift"]
        )
    exposed["day"] = pd.to_datetime(exposed["as_of"])
    exposed["converted"] = _converted(exposed, _orders(warehouse, as_of), CONVERSION_DAYS).to_numpy()
    table = exposed.pivot_table(
        index=["campaign", "step"],
        columns="reason",
        values="converted",
        aggfunc=["count", "mean"],
        fill_value=0,
    )
    out = pd.DataFrame(
        {
            "sent": table.get(("count", "sent"), 0),
            "holdout": table.get(("count", "holdout"), 0),
            "conv_sent": table.get(("mean", "sent"), 0.0),
            "conv_holdout": table.get(("mean", "holdout"), 0.0),
        }
    )
    out["lift"] = (out["conv_sent"] - out["conv_holdout"]) / out["conv_holdout"].where(
        out["conv_holdout"] > 0
    )
    return out.reset_index().round(4)


def headline_rates(state: sa.Engine, warehouse: sa.Engine, as_of: dt.date) -> dict[str, float | int]:
    """Referral conversion against the overall conversion rate, and the dormant reactivation rate."""
    with state.connect() as conn:
        sent = pd.read_sql_query(
            sa.select(ledger.c.campaign, ledger.c.step, ledger.c.customer_id, ledger.c.as_of).where(
                ledger.c.status == "sent", ledger.c.as_of <= as_of
            ),
            conn,
        )
    orders = _orders(warehouse, as_of)
    out: dict[str, float | int] = {}
    if sent.empty:
        return out
    marketing = sent[sent["campaign"] != "thank_you"].reset_index(drop=True)
    out["overall_conversion_rate"] = round(float(_converted(marketing, orders, CONVERSION_DAYS).mean()), 4)
    asks = sent[sent["campaign"] == "referral_ask"].reset_index(drop=True)
    referred = orders[orders["referred_by"].notna()].assign(referrer=lambda f: f["referred_by"].astype(str))
    out["referral_asks"] = len(asks)
    if len(asks):
        out["referral_conversion_rate"] = round(
            float(_converted(asks, referred, 30, by="referrer").mean()), 4
        )
    entered = sent[(sent["campaign"] == "dormant_reactivation") & (sent["step"] == "reminder")]
    entered = entered.reset_index(drop=True)
    out["dormant_entered"] = len(entered)
    if len(entered):
        out["reactivation_rate"] = round(float(_converted(entered, orders, 30).mean()), 4)
    return out
