"""Effective consent: the latest word by time across the warehouse and loyalflow's consent ledger.

The warehouse's ``channel_preferences`` (a snapshot or a history, whatever the CRM keeps) is only read.
Every change loyalflow receives (preference centre, one-click unsubscribe, SMS keyword, complaint, the
admin CLI) is appended to ``loyalflow_consent`` in the state database, scoped to ``all``, a campaign
category or a campaign id. For a campaign, the rows of scope ``all``, its category and its id count,
and the latest one at the send moment wins; a pause (``until``) counts only until it ends.
Eligibility, dispatch, explain and the preference centre all read consent through :func:`effective`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd
import sqlalchemy as sa

from loyalflow.state import consent as ledger
from loyalflow.warehouse import ID_BATCH, having_rows, rows_by_ids

SOURCES = ("preference_centre", "one_click", "sms_keyword", "complaint", "admin", "pause")
WAREHOUSE = "warehouse"


class Consent(NamedTuple):
    """One consent row: the evidence behind a yes or no for a customer and channel."""

    opted_in: bool
    source: str | None = None
    consented_at: Any = None
    scope: str = "all"
    origin: str = WAREHOUSE  # warehouse | loyalflow
    until: dt.datetime | None = None

    def describe(self, channel: str) -> str:
        """``email: opted in 2025-01-02 via signup_form``."""
        state = "opted in" if self.opted_in else "opted out"
        if self.until is not None:
            state = f"paused until {self.until:%Y-%m-%d}"
        scope = "" if self.scope == "all" else f" (scope {self.scope})"
        where = "" if self.origin == WAREHOUSE else " [loyalflow consent ledger]"
        when = self.consented_at or "(no date)"
        return f"{channel}: {state}{scope} {when} via {self.source or 'unknown source'}{where}"


def moment(value: Any) -> dt.datetime | None:
    """A timestamp as naive UTC (datetime, pandas Timestamp or ISO string); None when unknown."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    elif value is None or value != value:  # None or NaN/NaT
        return None
    elif hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


Dated = tuple[dt.datetime | None, int, Consent]  # (moment, arrival order, row)


@dataclass
class ConsentBook:
    """Every consent row of some customers, from both sources, oldest first per customer and channel."""

    rows: dict[tuple[str, str], list[Dated]]

    def latest(
        self, customer_id: str, channel: str, scopes: Iterable[str] = ("all",), at: dt.datetime | None = None
    ) -> Consent | None:
        """The row that decides at moment ``at`` for these scopes (no row: no consent, explicit opt-in)."""
        scopes = tuple(scopes)
        found: Consent | None = None
        for when, _, row in self.rows.get((str(customer_id), channel), ()):
            if row.scope not in scopes or (at is not None and when is not None and when > at):
                continue  # another scope, or recorded after the moment: did not exist yet
            if row.until is not None and at is not None and row.until <= at:
                continue  # a pause that has ended
            found = row
        return found

    def channels(
        self, customer_id: str, scopes: Iterable[str] = ("all",), at: dt.datetime | None = None
    ) -> dict[str, Consent]:
        """The deciding row per channel."""
        scopes = tuple(scopes)
        out: dict[str, Consent] = {}
        for cid, channel in self.rows:
            if cid == str(customer_id) and (row := self.latest(cid, channel, scopes, at)) is not None:
                out[channel] = row
        return out


def _order(dated: Dated) -> tuple[bool, dt.datetime, int]:
    return dated[0] is not None, dated[0] or dt.datetime.min, dated[1]


def _book(items: Iterable[tuple[str, str, dt.datetime | None, Consent]]) -> ConsentBook:
    rows: dict[tuple[str, str], list[Dated]] = {}
    for i, (cid, channel, when, row) in enumerate(items):
        rows.setdefault((cid, channel), []).append((when, i, row))
    for bucket in rows.values():  # undated rows count as the oldest; ties go to the later row
        if len(bucket) > 1:
            bucket.sort(key=_order)
    return ConsentBook(rows)


def _warehouse_items(
    rows: Iterable[Sequence[Any]],
) -> Iterator[tuple[str, str, dt.datetime | None, Consent]]:
    """(customer_id, channel, opted_in, source, consented_at) rows of ``channel_preferences``."""
    for cid, channel, opted_in, source, consented_at in rows:
        yield str(cid), str(channel), moment(consented_at), Consent(bool(opted_in), source, consented_at)


def book_from_rows(
    warehouse_rows: Iterable[Mapping[Any, Any]], ledger_rows: list[dict[str, Any]] | None = None
) -> ConsentBook:
    """A book from ``channel_preferences`` rows and ``loyalflow_consent`` rows (as mappings)."""
    items = list(
        _warehouse_items(
            (r["customer_id"], r["channel"], r["opted_in"], r.get("source"), r.get("consented_at"))
            for r in warehouse_rows
        )
    )
    return _book(items + _ledger_items(ledger_rows or []))


def _ledger_items(rows: list[dict[str, Any]]) -> list[tuple[str, str, dt.datetime | None, Consent]]:
    return [
        (
            str(r["customer_id"]),
            str(r["channel"]),
            moment(r["recorded_at"]),
            Consent(
                bool(r["opted_in"]),
                r["source"],
                r["recorded_at"],
                r["scope"],
                "loyalflow",
                moment(r.get("until")),
            ),
        )
        for r in rows
    ]


def effective(warehouse: sa.Engine, state: sa.Engine, customer_ids: list[str]) -> ConsentBook:
    """The consent book of ``customer_ids``: warehouse rows plus loyalflow's ledger rows."""
    prefs = rows_by_ids(
        warehouse, "channel_preferences", customer_ids, "customer_id, channel, opted_in, source, consented_at"
    )
    items = list(_warehouse_items(prefs))
    return _book(items + _ledger_items(ledger_rows(state, customer_ids)))


def ledger_rows(state: sa.Engine, customer_ids: list[str]) -> list[dict[str, Any]]:
    """``loyalflow_consent`` rows of these customers."""
    out: list[dict[str, Any]] = []
    with state.connect() as conn:
        for start in range(0, len(customer_ids), ID_BATCH):
            batch = having_rows(
                conn, ledger, "customer_id", [str(c) for c in customer_ids[start : start + ID_BATCH]]
            )
            if not batch:
                continue
            out += [
                dict(r._mapping)
                for r in conn.execute(sa.select(ledger).where(ledger.c.customer_id.in_(batch)))
            ]
    return out


def fingerprint(*parts: object) -> str:
    """A hash identifying a request (token, client) without keeping any address."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


def record(
    conn: sa.Connection,
    customer_id: str,
    channel: str,
    opted_in: bool,
    source: str,
    *,
    scope: str = "all",
    until: dt.datetime | None = None,
    request_fingerprint: str | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Append one consent change (inside the caller's transaction, with its suppression if any)."""
    if source not in SOURCES:
        raise ValueError(f"consent source must be one of {', '.join(SOURCES)}, got {source!r}")
    conn.execute(
        ledger.insert().values(
            customer_id=str(customer_id),
            channel=channel,
            scope=scope,
            opted_in=opted_in,
            source=source,
            fingerprint=request_fingerprint,
            until=until,
            recorded_at=at or dt.datetime.now(dt.UTC).replace(tzinfo=None),
        )
    )


def changes_since(state: sa.Engine, since: dt.datetime) -> pd.DataFrame:
    """Consent changes recorded at or after ``since``, oldest first: what a CRM syncs back."""
    stmt = (
        sa.select(
            ledger.c.customer_id,
            ledger.c.channel,
            ledger.c.scope,
            ledger.c.opted_in,
            ledger.c.source,
            ledger.c.until,
            ledger.c.recorded_at,
        )
        .where(ledger.c.recorded_at >= since)
        .order_by(ledger.c.recorded_at, ledger.c.id)
    )
    with state.connect() as conn:
        return pd.read_sql_query(stmt, conn)
