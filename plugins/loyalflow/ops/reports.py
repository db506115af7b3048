"""Reports: per-customer explanations, conversions, lift, referral and reactivation rates."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from loyalflow.state import decisions, ledger


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
    right = orders[[by, "day"]].rename(columns={by: "_who", "day": "order_day"})
    merged = exposed.reset_index().merge(right, left_on="customer_id", right_on="_who", how="left")
    start = pd.to_datetime(merged["as_of"])
    hit = (merged["order_day"] > start) & (merged["order_day"] <= start + pd.Timedelta(days=days))
    return hit.groupby(merged["index"]).any().reindex(range(len(exposed)), fill_value=False)


def program_metrics(state: sa.Engine, warehouse: sa.Engine, as_of: dt.date) -> pd.DataFrame:
    """Per campaign and step: sent, holdout, conversions in 14 days for each, conversion rates and lift."""
    stmt = (
        sa.select(
            decisions.c.idempotency_key,
            decisions.c.campaign,
            decisions.c.step,
            decisions.c.customer_id,
            decisions.c.as_of,
            decisions.c.reason,
        )
        .where(decisions.c.as_of <= as_of, decisions.c.reason.in_(("sent", "holdout")))
        .order_by(decisions.c.id)
    )
    with state.connect() as conn:
        exposed = pd.read_sql_query(stmt, conn).drop_duplicates("idempotency_key").reset_index(drop=True)
    if exposed.empty:
        return pd.DataFrame(
            columns=["campaign", "step", "sent", "holdout", "conv_sent", "conv_holdout", "lift"]
        )
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


CHURN_DAYS = 180  # the window compared: the last 180 days against the 180 before them


def churn_classes(warehouse: sa.Engine, as_of: dt.date) -> pd.DataFrame:
    """Per customer with a completed order: account churn, product churn, decreased spend or active.

    Account churn: no completed order in the last 180 days. Product churn: still buying, but a product
    line (the name before any comma) bought in the 180 days before was not bought again. Decreased
    spend: spend in the last 180 days under half of the 180 days before.
    """
    end = dt.datetime.combine(as_of, dt.time()) + dt.timedelta(days=1)
    stmt = sa.text(
        "SELECT customer_id, ordered_at, total, product FROM orders "
        "WHERE status = 'completed' AND ordered_at < :end"
    )
    with warehouse.connect() as conn:
        orders = pd.read_sql_query(stmt, conn, params={"end": end})
    if orders.empty:
        return pd.DataFrame(columns=["customer_id", "churn"])
    orders["customer_id"] = orders["customer_id"].astype(str)
    orders["product"] = orders["product"].astype(str).str.split(",").str[0].str.strip()  # product line
    age = (pd.Timestamp(end) - pd.to_datetime(orders["ordered_at"])).dt.days
    recent, before = orders[age < CHURN_DAYS], orders[(age >= CHURN_DAYS) & (age < 2 * CHURN_DAYS)]
    spend_recent = recent.groupby("customer_id")["total"].sum()
    spend_before = before.groupby("customer_id")["total"].sum()
    products_recent = recent.groupby("customer_id")["product"].agg(set)
    products_before = before.groupby("customer_id")["product"].agg(set)
    out = pd.DataFrame(index=pd.Index(sorted(orders["customer_id"].unique()), name="customer_id"))
    out["churn"] = "active"
    recent_sets = products_recent.to_dict()
    dropped = pd.Series(
        {c: bool(p - recent_sets.get(c, set())) for c, p in products_before.items()}, dtype=bool
    ).reindex(out.index, fill_value=False)
    less = spend_recent.reindex(out.index, fill_value=0) < 0.5 * spend_before.reindex(out.index, fill_value=0)
    out.loc[less, "churn"] = "decreased_spend"
    out.loc[dropped & out.index.isin(spend_recent.index), "churn"] = "product_churn"
    out.loc[~out.index.isin(spend_recent.index), "churn"] = "account_churn"
    return out.reset_index()
