"""``report.html``: the report as one self-contained page (plotly charts, plotly.js inlined once).

Nothing is fetched: no script, stylesheet or font URL, so the file opens offline and as an email
attachment. Each chart is a ``<div class="chart">`` that plotly fills with an SVG.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from loyalflow.report.lift import wilson

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"  # no web font
CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}  # a static page, also in email
STYLE = (
    """
body{font-family:FONT;margin:24px auto;max-width:1100px;color:#1f2933;padding:0 16px}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #d9e2ec;padding-bottom:4px}
table{border-collapse:collapse;font-size:.9em;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e4e7eb}
th{text-align:left;background:#f5f7fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.helps{color:#127c3a;font-weight:600}.hurts{color:#b42318;font-weight:600}.note{color:#52606d;font-size:.9em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px}
"""
).replace("FONT", FONT)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _pts(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f} pts"


def _layout(fig: go.Figure, title: str, height: int = 360, left: int = 60) -> go.Figure:
    fig.update_layout(
        title=title, height=height, font={"family": FONT}, margin={"l": left, "r": 20, "t": 50, "b": 50}
    )
    return fig


def lift_chart(steps: list[dict[str, Any]]) -> go.Figure | None:
    """Absolute lift per step (points) with its 95% interval as error bars."""
    rows = [s for s in steps if s["lift"] is not None]
    if not rows:
        return None
    labels = [f"{s['campaign']} · {s['step']}" for s in rows]
    lift = [100 * s["lift"] for s in rows]
    colors = {"helps": "#127c3a", "hurts": "#b42318"}
    fig = go.Figure(
        go.Scatter(
            x=lift,
            y=labels,
            mode="markers",
            marker={"size": 11, "color": [colors.get(s["verdict_kind"], "#52606d") for s in rows]},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [100 * s["lift_ci_high"] - v for s, v in zip(rows, lift, strict=True)],
                "arrayminus": [v - 100 * s["lift_ci_low"] for s, v in zip(rows, lift, strict=True)],
            },
            text=[s["verdict"] for s in rows],
            hovertemplate="%{y}: %{x:.1f} pts<br>%{text}<extra></extra>",
        )
    )
    fig.add_vline(x=0, line_dash="dash", line_color="#9aa5b1")
    fig.update_xaxes(title="lift over holdout (percentage points, 95% interval)")
    return _layout(fig, "Lift per step", height=120 + 45 * len(rows))


def funnel_chart(funnel: dict[str, Any], days: int) -> go.Figure:
    """Customers due, sent and converted for one campaign."""
    stages = ["due", "sent", f"booked within {days} days"]
    values = [funnel["due"], funnel["sent"], funnel["converted"]]
    fig = go.Figure(go.Funnel(y=stages, x=values, textinfo="value+percent initial"))
    return _layout(fig, funnel["campaign"], height=300, left=150)


def timeline_chart(timeline: list[dict[str, Any]]) -> go.Figure | None:
    """Attributed conversions per day and campaign."""
    if not timeline:
        return None
    fig = go.Figure()
    for campaign in sorted({r["campaign"] for r in timeline}):
        rows = [r for r in timeline if r["campaign"] == campaign]
        fig.add_trace(
            go.Scatter(
                x=[r["day"] for r in rows],
                y=[r["conversions"] for r in rows],
                mode="lines+markers",
                name=campaign,
            )
        )
    fig.update_yaxes(title="recipients who booked (by day of booking)")
    return _layout(fig, "Conversions over time")


def tier_chart(tiers: list[dict[str, Any]]) -> go.Figure:
    """Customer lifetime value by 80:20 tier: share of revenue and mean CLV."""
    names = [t["tier"] for t in tiers]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[100 * (t["revenue_share"] or 0) for t in tiers],
            text=[f"{t['customers']:,} guests · mean CLV {t['clv_mean'] or 0:,.0f}" for t in tiers],
            marker_color=["#0b6e4f", "#3e7cb1", "#9aa5b1"],
        )
    )
    fig.update_yaxes(title="share of lifetime revenue (%)")
    return _layout(fig, "Lifetime value by 80:20 tier")


def dormant_chart(dormant: dict[str, Any]) -> go.Figure | None:
    """Reactivation rate of dormant guests sent the sequence against the holdout's (Wilson 95%)."""
    if not dormant["sent"] or not dormant["holdout"]:
        return None
    arms = [(dormant["conv_sent"], dormant["sent"]), (dormant["conv_holdout"], dormant["holdout"])]
    rates = [100 * x / n for x, n in arms]
    bounds = [wilson(x, n) for x, n in arms]
    fig = go.Figure(
        go.Bar(
            x=["sent", "holdout"],
            y=rates,
            marker_color=["#0b6e4f", "#9aa5b1"],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [100 * hi - r for (_, hi), r in zip(bounds, rates, strict=True)],
                "arrayminus": [r - 100 * lo for (lo, _), r in zip(bounds, rates, strict=True)],
            },
        )
    )
    fig.update_yaxes(title=f"booked within {dormant['window_days']} days (%, 95% interval)")
    return _layout(fig, f"Dormant reactivation: {_pts(dormant['lift'])} ({dormant['verdict']})")


def _div(fig: go.Figure | None, name: str) -> str:
    """The chart's div (id ``chart-<name>``: the same report gives the same page), or a note."""
    if fig is None:
        return f'<p class="note">No data yet for {escape(name)}.</p>'
    div_id = "chart-" + re.sub(r"[^a-z0-9]+", "-", name.lower())
    html = pio.to_html(fig, full_html=False, include_plotlyjs=False, config=CONFIG, div_id=div_id)
    return f'<div class="chart">{html}</div>'


def _steps_table(steps: list[dict[str, Any]]) -> str:
    head = (
        "campaign",
        "step",
        "sent",
        "holdout",
        "rate sent",
        "rate holdout",
        "lift (95% interval)",
        "revenue / recipient",
        "verdict",
    )
    rows = []
    for s in steps:
        low, high = s["lift_ci_low"], s["lift_ci_high"]
        interval = "" if low is None else f" [{_pts(low)}, {_pts(high)}]"
        revenue = "–" if s["rev_per_sent"] is None else f"{s['rev_per_sent']:,.2f}"
        cells = [
            escape(s["campaign"]),
            escape(s["step"]),
            f'<td class="n">{s["sent"]:,}',
            f'<td class="n">{s["holdout"]:,}',
            f'<td class="n">{_pct(s["rate_sent"])}',
            f'<td class="n">{_pct(s["rate_holdout"])}',
            f'<td class="n">{_pts(s["lift"])}{interval}',
            f'<td class="n">{revenue}',
            f'<td class="{escape(s["verdict_kind"])}">{escape(s["verdict"])}',
        ]
        rows.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}" for c in cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def render(report: dict[str, Any]) -> str:
    """The whole page for a report as :func:`loyalflow.report.build.build_report` returns it."""
    days = report["attribution_days"]
    referral, churn = report["referral"], report["churn"]
    funnels = "".join(_div(funnel_chart(f, days), f"funnel {f['campaign']}") for f in report["funnels"])
    churn_text = ", ".join(f"{escape(k.replace('_', ' '))} {v:,}" for k, v in sorted(churn.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>loyalflow report {escape(report["as_of"])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style>
<script>{get_plotlyjs()}</script></head>
<body>
<h1>What loyalflow earned, as of {escape(report["as_of"])}</h1>
<p class="note">A conversion is a completed booking within {days} days after the message (or, for the
holdout, after the day it would have been sent); only exposures whose {days} days have passed count.
Lift is the difference of conversion rates, sent minus holdout, with a {escape(report["method"]["lift_ci"])}.
{escape(report["method"]["verdict_rule"])}.</p>
<h2>Lift per step</h2>
{_div(lift_chart(report["steps"]), "lift")}
{_steps_table(report["steps"])}
<h2>Funnels</h2>
<div class="grid">{funnels}</div>
<h2>Conversions over time</h2>
{_div(timeline_chart(report["timeline"]), "conversions over time")}
<h2>Dormant guests</h2>
{_div(dormant_chart(report["dormant"]), "dormant reactivation")}
<h2>Referrals</h2>
<p>{referral["asks"]:,} referral asks; friends booked after
{_pct(referral["referral_conversion_rate"])} of them
against an overall conversion rate of {_pct(referral["overall_conversion_rate"])} for every other message;
{referral["referred_bookings"]:,} referred bookings worth {referral["referred_revenue"] or 0:,.2f}.</p>
<h2>Value tiers and churn</h2>
{_div(tier_chart(report["tiers"]), "tiers")}
<p>Churn: {churn_text or "no customers with a booking yet"}.</p>
</body></html>
"""
