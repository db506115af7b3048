"""``report.json``: what each program earned, with uncertainty, as documented in docs/report.md."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from loyalflow.errors import LoyalflowError
from loyalflow.ops import reports
from loyalflow.report.lift import METHOD, Lift, Mean, mean_difference

REACTIVATION_DAYS = 30  # a dormant guest reactivates with a booking within the sequence (last call: day 30)
VERDICT_RULE = (
    "helps: the 95% interval of the lift lies above 0; hurts: below 0; otherwise no clear effect yet, "
    "with about how many more customers (same send/holdout split) would make the interval exclude 0 "
    "if the observed rates hold (a lift of at least 1 point)"
)


def _num(value: Any, digits: int = 4) -> float | None:
    """A JSON-safe rounded float (NaN and None become null)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else round(number, digits)


def _revenue(rows: pd.DataFrame) -> Mean:
    values = rows["revenue"].astype(float)
    return Mean.of(float(values.sum()), float((values**2).sum()), len(values))


def lift_fields(lift: Lift) -> dict[str, Any]:
    """The lift figures of one comparison (rates, absolute and relative lift, intervals, verdict)."""
    ci = lift.ci or (None, None)
    rel = lift.relative or (None, None, None)
    return {
        "sent": lift.sent,
        "holdout": lift.holdout,
        "conv_sent": lift.conv_sent,
        "conv_holdout": lift.conv_holdout,
        "rate_sent": _num(lift.rate_sent),
        "rate_holdout": _num(lift.rate_holdout),
        "lift": _num(lift.lift),
        "lift_ci_low": _num(ci[0]),
        "lift_ci_high": _num(ci[1]),
        "rel_lift": _num(rel[0]),
        "rel_lift_ci_low": _num(rel[1]),
        "rel_lift_ci_high": _num(rel[2]),
        "verdict": lift.verdict,
        "verdict_kind": lift.verdict_kind,
        "more_needed": lift.more_needed,
    }


def _arms(rows: pd.DataFrame) -> Lift:
    sent, held = rows[rows["arm"] == "sent"], rows[rows["arm"] == "holdout"]
    return Lift(len(sent), len(held), int(sent["converted"].sum()), int(held["converted"].sum()))


def step_row(campaign: str, step: str, rows: pd.DataFrame) -> dict[str, Any]:
    """One campaign step: counts of matured exposures, lift, revenue per recipient, verdict."""
    mature = rows[rows["mature"]]
    sent, held = mature[mature["arm"] == "sent"], mature[mature["arm"] == "holdout"]
    rev_sent, rev_held = _revenue(sent), _revenue(held)
    rev_lift = mean_difference(rev_sent, rev_held) if len(sent) and len(held) else (None, None, None)
    maturing = int((~rows["mature"]).sum())
    fields = lift_fields(_arms(mature))
    if fields["verdict_kind"] == "not_sent" and maturing:  # sent, but too recently to tell
        fields.update(verdict_kind="too_early", verdict=f"too early: {maturing:,} still inside the window")
    return {
        "campaign": campaign,
        "step": step,
        **fields,
        "maturing": maturing,
        "rev_per_sent": _num(rev_sent.mean, 2),
        "rev_per_sent_ci_low": _num(rev_sent.ci[0], 2),
        "rev_per_sent_ci_high": _num(rev_sent.ci[1], 2),
        "rev_per_holdout": _num(rev_held.mean, 2),
        "rev_per_holdout_ci_low": _num(rev_held.ci[0], 2),
        "rev_per_holdout_ci_high": _num(rev_held.ci[1], 2),
        "rev_lift": _num(rev_lift[0], 2),
        "rev_lift_ci_low": _num(rev_lift[1], 2),
        "rev_lift_ci_high": _num(rev_lift[2], 2),
    }


def _referral(frame: pd.DataFrame) -> dict[str, Any]:
    """Friends' bookings after referral asks against the conversion rate of every other message."""
    asks = frame[(frame["campaign"] == "referral_ask") & (frame["arm"] == "sent")]
    own = frame[
        ~frame["campaign"].isin(list(reports.CREDITED_BY)) & (frame["arm"] == "sent") & frame["mature"]
    ]
    matured = asks[asks["mature"]]
    return {
        "asks": len(matured),
        "friends_converted": int(matured["converted"].sum()),
        "referral_conversion_rate": _num(matured["converted"].mean()) if len(matured) else None,
        "overall_conversion_rate": _num(own["converted"].mean()) if len(own) else None,
        "referred_bookings": int(asks["orders"].sum()),
        "referred_revenue": _num(asks["revenue"].sum(), 2),
    }


def _dormant(exposed: pd.DataFrame, orders: pd.DataFrame, as_of: dt.date) -> dict[str, Any]:
    entries = exposed[(exposed["campaign"] == "dormant_reactivation") & (exposed["step"] == "reminder")]
    frame = reports.attributed(entries.reset_index(drop=True), orders, as_of, REACTIVATION_DAYS)
    mature = frame[frame["mature"]]
    return {
        "window_days": REACTIVATION_DAYS,
        **lift_fields(_arms(mature)),
        "maturing": int((~frame["mature"]).sum()),
    }


def _funnels(state: sa.Engine, frame: pd.DataFrame, as_of: dt.date) -> list[dict[str, Any]]:
    due = reports.reached(state, as_of).set_index("campaign")["due"]
    sent = frame[frame["arm"] == "sent"]
    out = []
    for campaign in sorted(set(due.index)):
        mine = sent[sent["campaign"] == campaign]
        out.append(
            {
                "campaign": campaign,
                "due": int(due[campaign]),
                "sent": int(mine["customer_id"].nunique()),
                "converted": int(mine.loc[mine["converted"], "customer_id"].nunique()),
            }
        )
    return out


def _timeline(frame: pd.DataFrame) -> list[dict[str, Any]]:
    sent = frame[frame["arm"] == "sent"]
    sends = sent.groupby(["campaign", "as_of"]).size().rename("sent")
    conversions = sent[sent["converted"]].groupby(["campaign", "conversion_day"]).size().rename("conversions")
    conversions.index = conversions.index.set_names(["campaign", "as_of"])
    table = pd.concat([sends, conversions], axis=1).fillna(0).astype(int).sort_index().reset_index()
    table["day"] = pd.to_datetime(table["as_of"]).dt.strftime("%Y-%m-%d")
    return [
        {
            "campaign": str(r["campaign"]),
            "day": r["day"],
            "sent": int(r["sent"]),
            "conversions": int(r["conversions"]),
        }
        for r in table[["campaign", "day", "sent", "conversions"]].to_dict("records")
    ]


def _tiers(orders: pd.DataFrame) -> list[dict[str, Any]]:
    per = reports.value_tiers(orders)
    total = float(per["clv"].sum()) or 1.0
    out = []
    for tier in reports.TIERS:
        rows = per[per["tier"] == tier]
        out.append(
            {
                "tier": tier,
                "customers": len(rows),
                "revenue": _num(rows["clv"].sum(), 2),
                "revenue_share": _num(rows["clv"].sum() / total),
                "clv_mean": _num(rows["clv"].mean(), 2) if len(rows) else None,
                "orders_mean": _num(rows["orders"].mean(), 2) if len(rows) else None,
            }
        )
    return out


def build_report(state: sa.Engine, warehouse: sa.Engine, as_of: dt.date, days: int) -> dict[str, Any]:
    """Everything report.json holds for ``as_of`` with an attribution window of ``days``."""
    if days < 1:
        raise LoyalflowError(f"LOYALFLOW_ATTRIBUTION_DAYS must be at least 1, got {days}")
    exposed = reports.exposures(state, as_of)
    orders = reports.orders_until(warehouse, as_of)
    frame = reports.attributed(exposed, orders, as_of, days)
    steps = [
        step_row(str(c), str(s), rows) for (c, s), rows in frame.groupby(["campaign", "step"], sort=True)
    ]
    churn = reports.churn_classes(warehouse, as_of)["churn"].value_counts()
    return {
        "as_of": as_of.isoformat(),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "attribution_days": days,
        "method": {
            "lift_ci": METHOD,
            "relative_lift_ci": "log risk ratio (Katz), 95%",
            "revenue_ci": "normal approximation (Welch standard error), 95%",
            "verdict_rule": VERDICT_RULE,
        },
        "steps": steps,
        "funnels": _funnels(state, frame, as_of),
        "timeline": _timeline(frame),
        "referral": _referral(frame),
        "dormant": _dormant(exposed, orders, as_of),
        "churn": {str(k): int(v) for k, v in churn.items()},
        "tiers": _tiers(orders),
    }


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``folder``; their paths."""
    from loyalflow.report.html import render

    try:
        folder.mkdir(parents=True, exist_ok=True)
        json_path, html_path = folder / "report.json", folder / "report.html"
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        html_path.write_text(render(report), encoding="utf-8")
    except OSError as exc:
        raise LoyalflowError(f"cannot write the report to {folder}: {exc.strerror}") from None
    return json_path, html_path
