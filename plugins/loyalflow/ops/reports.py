"""Report data: decisions of a customer, exposures (sent and holdout) with their attributed orders, churn."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import sqlalchemy as sa

from loyalflow.state import decisions


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


# A referral ask converts when a friend books with the asker's code (orders.referred_by), not the asker.
CREDITED_BY = {"referral_ask": "referred_by"}
ARMS = ("sent", "holdout")


def orders_until(warehouse: sa.Engine, until: dt.date) -> pd.DataFrame:
    """Completed orders up to the end of ``until``: customer_id, order_id, day, total, referred_by."""
    stmt = sa.text(
        "SELECT order_id, customer_id, ordered_at, total, referred_by FROM orders "
        "WHERE status = 'completed' AND ordered_at < :end"
    )
    with warehouse.connect() as conn:
        frame = pd.read_sql_query(
            stmt, conn, params={"end": dt.datetime.combine(until, dt.time()) + dt.timedelta(days=1)}
        )
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["order_id"] = frame["order_id"].astype(str)
    frame["referred_by"] = frame["referred_by"].map(lambda v: None if v is None or v != v else str(v))
    frame["total"] = pd.to_numeric(frame["total"], errors="coerce").fillna(0.0).astype(float)
    frame["day"] = pd.to_datetime(frame["ordered_at"]).dt.normalize()
    return frame.drop(columns="ordered_at")


def exposures(state: sa.Engine, as_of: dt.date) -> pd.DataFrame:
    """Each customer's first message sent or holdout per campaign step up to ``as_of``.

    Once per customer and step, from their first decision: the sent and the holdout are counted
    alike even where only recipients move on to new anchors (nurture's next content item).
    Columns: campaign, step, customer_id, as_of (Timestamp), arm (``sent`` or ``holdout``).
    """
    stmt = (
        sa.select(
            decisions.c.campaign,
            decisions.c.step,
            decisions.c.customer_id,
            decisions.c.as_of,
            decisions.c.reason.label("arm"),
        )
        .where(decisions.c.as_of <= as_of, decisions.c.reason.in_(ARMS))
        .order_by(decisions.c.id)
    )
    with state.connect() as conn:
        frame = pd.read_sql_query(stmt, conn)
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame = frame.drop_duplicates(["campaign", "step", "customer_id"]).reset_index(drop=True)
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    return frame


def attribute(
    exposed: pd.DataFrame, orders: pd.DataFrame, days: int, by: str = "customer_id"
) -> pd.DataFrame:
    """Per exposure, its orders in the ``days`` after its day: converted, orders, revenue, first day.

    ``by`` names the orders column matched to the exposure's customer: ``customer_id`` (their own
    bookings) or ``referred_by`` (bookings of friends they referred).
    """
    out = pd.DataFrame(
        {"converted": False, "orders": 0, "revenue": 0.0, "conversion_day": pd.NaT}, index=range(len(exposed))
    )
    if exposed.empty or orders.empty:
        return out
    right = orders.loc[orders[by].notna(), [by, "day", "total"]].rename(columns={by: "customer_id"})
    merged = exposed[["customer_id", "as_of"]].reset_index().merge(right, on="customer_id")
    inside = merged[
        (merged["day"] > merged["as_of"]) & (merged["day"] <= merged["as_of"] + pd.Timedelta(days=days))
    ]
    grouped = inside.groupby("index")
    out["orders"] = grouped.size().reindex(out.index, fill_value=0)
    out["converted"] = out["orders"] > 0
    out["revenue"] = grouped["total"].sum().reindex(out.index, fill_value=0.0)
    out["conversion_day"] = grouped["day"].min().reindex(out.index)
    return out


def attributed(exposed: pd.DataFrame, orders: pd.DataFrame, as_of: dt.date, days: int) -> pd.DataFrame:
    """Exposures with their attribution; ``mature`` when the whole window lies on or before ``as_of``.

    Each campaign's exposures are credited as ``CREDITED_BY`` says (a referral ask by its friends).
    """
    parts = []
    for campaign, rows in exposed.groupby("campaign", sort=True):
        rows = rows.reset_index(drop=True)
        found = attribute(rows, orders, days, by=CREDITED_BY.get(str(campaign), "customer_id"))
        parts.append(pd.concat([rows, found], axis=1))
    columns = [*exposed.columns, "converted", "orders", "revenue", "conversion_day"]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    frame = frame.astype({"converted": bool, "orders": int, "revenue": float})  # typed even when empty
    for day in ("as_of", "conversion_day"):
        frame[day] = pd.to_datetime(frame[day])
    frame["mature"] = frame["as_of"] + pd.Timedelta(days=days) <= pd.Timestamp(as_of)
    return frame


def reached(state: sa.Engine, as_of: dt.date) -> pd.DataFrame:
    """Per campaign, distinct customers with any decision up to ``as_of`` (the top of its funnel)."""
    stmt = (
        sa.select(decisions.c.campaign, sa.func.count(sa.distinct(decisions.c.customer_id)).label("due"))
        .where(decisions.c.as_of <= as_of, decisions.c.reason != "dry_run")
        .group_by(decisions.c.campaign)
    )
    with state.connect() as conn:
        return pd.read_sql_query(stmt, conn)


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


TIERS = ("vip", "core", "bottom")


def value_tiers(orders: pd.DataFrame) -> pd.DataFrame:
    """Per customer with a completed order: lifetime value, orders and 80:20 tier.

    Ranked by lifetime completed spend (ties by customer_id) into five NTILE groups as the segment SQL
    does (campaigns/sql/dormant_reactivation.sql): the first is ``vip``, the last ``bottom``, the rest
    ``core``.
    """
    per = orders.groupby("customer_id").agg(clv=("total", "sum"), orders=("order_id", "count")).reset_index()
    per = per.sort_values(["clv", "customer_id"], ascending=[False, True], ignore_index=True)
    n = len(per)
    size, extra = divmod(n, 5)  # NTILE: the first `extra` groups hold one more
    ends = np.cumsum([size + (g < extra) for g in range(5)])
    quintile = np.searchsorted(ends, np.arange(n), side="right")
    per["tier"] = ["vip" if q == 0 else "bottom" if q == 4 else "core" for q in quintile]
    return per
