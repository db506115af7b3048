"""Evidence behind a customer's messages: consent rows, suppressions, cap reservations and responses.

What ``loyalflow explain`` prints next to the recorded decisions; addresses are never shown (only the
channel), so the output can be pasted into a ticket.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa

from loyalflow.decide import consent, suppressions
from loyalflow.state import cap_reservations, responses


def _frame(engine: sa.Engine, stmt: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
    try:
        with engine.connect() as conn:
            return pd.read_sql_query(stmt, conn, params=params)
    except sa.exc.SQLAlchemyError:
        return pd.DataFrame()


def consent_history(warehouse: sa.Engine, state: sa.Engine, customer_id: str, origin: str) -> pd.DataFrame:
    """The customer's consent rows from one origin (``warehouse`` or ``loyalflow``), oldest first."""
    book = consent.effective(warehouse, state, [customer_id])
    rows = [
        {
            "channel": channel,
            "opted_in": row.opted_in,
            "scope": row.scope,
            "source": row.source,
            "at": row.consented_at,
            "until": row.until,
        }
        for (_, channel), bucket in sorted(book.rows.items())
        for _, _, row in bucket
        if row.origin == origin
    ]
    return pd.DataFrame(rows, columns=["channel", "opted_in", "scope", "source", "at", "until"])


def evidence(
    state: sa.Engine, warehouse: sa.Engine, customer_id: str, campaign: str | None = None
) -> dict[str, pd.DataFrame]:
    """Consent history, suppressions on the current addresses, cap reservations and responses."""
    customer = _frame(
        warehouse, sa.text("SELECT * FROM customers WHERE customer_id = :c"), {"c": customer_id}
    )
    supp = pd.DataFrame(
        suppressions.for_customer(state, {str(k): v for k, v in customer.iloc[0].items()})
        if not customer.empty
        else [],
        columns=["channel", "scope", "reason", "source", "created_at"],
    )
    caps = (
        sa.select(
            cap_reservations.c.day,
            cap_reservations.c.campaign,
            cap_reservations.c.priority,
            cap_reservations.c.status,
            cap_reservations.c.detail,
        )
        .where(cap_reservations.c.customer_id == customer_id)
        .order_by(cap_reservations.c.day)
    )
    resp = sa.select(
        responses.c.received_at,
        responses.c.campaign,
        responses.c.answer,
        responses.c.channel,
        responses.c.source,
        responses.c.snooze_until,
    ).where(responses.c.customer_id == customer_id)
    if campaign:
        caps = caps.where(cap_reservations.c.campaign == campaign)
        resp = resp.where(responses.c.campaign == campaign)
    return {
        "consent (channel_preferences)": consent_history(warehouse, state, customer_id, "warehouse"),
        "consent (loyalflow_consent ledger)": consent_history(warehouse, state, customer_id, "loyalflow"),
        "suppressions on current addresses": supp[["channel", "scope", "reason", "source", "created_at"]],
        "frequency-cap reservations": _frame(state, caps),
        "responses": _frame(state, resp),
    }


def lines(decisions: pd.DataFrame) -> list[str]:
    """One sentence per recorded decision, newest first: day, message, channel, outcome, reason, why."""
    out = []
    for r in decisions.to_dict("records"):
        detail = r.get("detail")
        why = f": {detail}" if isinstance(detail, str) and detail else ""
        verdict = "sent" if r["reason"] == "sent" else f"{r['outcome']} ({r['reason']})"
        channel = r.get("channel") if isinstance(r.get("channel"), str) else "-"
        out.append(
            f"{r['as_of']!s} {r['campaign']}/{r['step']} anchor {r['anchor_id']} "
            f"via {channel}: {verdict}{why}"
        )
    return out
