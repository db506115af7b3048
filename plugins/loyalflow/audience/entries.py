"""When sequences start: a campaign's activation day, and entries of state-entry campaigns.

Both live in loyalflow's state database, never in the warehouse.

- *Activation*: the as-of day of a campaign's first real run (dry runs do not count). Event-entry steps
  whose day falls before it (less ``backfill_days``) are never sent, so switching loyalflow on with years
  of history behind it does not back-fill late messages.
- *State entry*: a customer enters a state-entry campaign (``entry: state``, for example dormant
  reactivation) on the first run that sees them match the segment, and its steps count from that day.
  Leaving the segment ends the episode; a new one may start ``reentry_days`` after the last entry.
  ``max_entries_per_day`` ramps a large matching base in over several days.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalflow.runtime import RunOptions
from loyalflow.spec import Campaign
from loyalflow.state import activations, entries
from loyalflow.warehouse import ID_BATCH

log = logging.getLogger(__name__)
ENTRY_PREFIX = "entry:"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _insert(engine: sa.Engine, table: sa.Table) -> Any:
    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(table)


def activation_day(state: sa.Engine, campaign: Campaign, opts: RunOptions) -> dt.date:
    """The day the campaign started, recorded by its first real run; a dry run before that uses as_of."""
    stmt = sa.select(activations.c.activated_on).where(activations.c.campaign == campaign.id)
    with state.connect() as conn:
        found = conn.execute(stmt).scalar()
    if found is not None or opts.dry_run:
        return found or opts.as_of
    row = {"campaign": campaign.id, "activated_on": opts.as_of, "run_id": opts.run_id, "created_at": _now()}
    with state.begin() as conn:
        conn.execute(_insert(state, activations).values(row).on_conflict_do_nothing())
        day: dt.date = conn.execute(stmt).scalar_one()  # a concurrent first run may have won
    log.info("campaign %s activated on %s", campaign.id, day)
    return day


def earliest_step_day(campaign: Campaign, activated_on: dt.date) -> dt.date:
    """Event-entry steps on days before this are history from before the campaign: never sent."""
    return activated_on - dt.timedelta(days=campaign.backfill_days)


def anchor_id(entered_on: dt.date) -> str:
    """The anchor of a state-entry episode (part of every idempotency key of the episode)."""
    return f"{ENTRY_PREFIX}{entered_on.isoformat()}"


@dataclass
class Admission:
    """Admits a state-entry campaign's segment rows, chunk by chunk, while the audience is materialised.

    Each matching customer is attached to their open episode, or enters a new one today (within the
    daily limit and the re-entry wait). Rows of customers who may not enter yet are left out. After the
    last chunk, :meth:`finish` ends the episodes of customers who no longer match.
    """

    state: sa.Engine
    campaign: Campaign
    opts: RunOptions
    seen: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=lambda: {"continuing": 0, "entered": 0, "waiting": 0})
    _today: int | None = None

    def _entered_today(self) -> int:
        if self._today is None:
            stmt = sa.select(sa.func.count()).where(
                entries.c.campaign == self.campaign.id, entries.c.entered_on == self.opts.as_of
            )
            with self.state.connect() as conn:
                self._today = int(conn.execute(stmt).scalar_one())
        return self._today

    def _latest_episodes(self, ids: list[str]) -> dict[str, tuple[dt.date, dt.date | None]]:
        out: dict[str, tuple[dt.date, dt.date | None]] = {}
        with self.state.connect() as conn:
            for start in range(0, len(ids), ID_BATCH):
                rows = conn.execute(
                    sa.select(entries.c.customer_id, entries.c.entered_on, entries.c.exited_on)
                    .where(
                        entries.c.campaign == self.campaign.id,
                        entries.c.customer_id.in_(ids[start : start + ID_BATCH]),
                        entries.c.entered_on <= self.opts.as_of,
                    )
                    .order_by(entries.c.entered_on)
                )
                for cid, entered, exited in rows:
                    out[cid] = (entered, exited if exited is None or exited <= self.opts.as_of else None)
        return out

    def _entry_day(self, episode: tuple[dt.date, dt.date | None] | None, renew: list[str], cid: str) -> Any:
        """The customer's episode start, ``None`` to enter today, or ``False`` to wait."""
        wait = self.campaign.reentry_days
        if episode is None:
            return None
        entered, exited = episode
        ongoing = wait is None or entered + dt.timedelta(days=wait) > self.opts.as_of
        if exited is None and ongoing:
            return entered
        if exited is None:
            renew.append(cid)  # the re-entry period of a still-open episode is over: a new one starts
            return None
        return False if ongoing and wait is not None else None

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The chunk with each admitted customer's row anchored on their entry day."""
        frame = frame.drop_duplicates("customer_id", keep="first")
        ids = frame["customer_id"].astype(str).tolist()
        self.seen.update(ids)
        episodes = self._latest_episodes(ids)
        limit = self.campaign.max_entries_per_day
        renew: list[str] = []
        days: list[dt.date | None] = []
        new: list[str] = []
        for cid in ids:
            day = self._entry_day(episodes.get(cid), renew, cid)
            if day is None and limit is not None and self._entered_today() + len(new) >= limit:
                day = False  # today's entries are used up: this customer enters on a later day
                if renew and renew[-1] == cid:
                    renew.pop()
            if day is None:
                new.append(cid)
                self.counts["entered"] += 1
                days.append(self.opts.as_of)
            else:
                self.counts["waiting" if day is False else "continuing"] += 1
                days.append(None if day is False else day)
        if not self.opts.dry_run:
            self._write(new, renew)
        self._today = self._entered_today() + len(new)
        frame = frame.assign(_entered_on=pd.Series(days, index=frame.index, dtype=object))
        frame = frame[frame["_entered_on"].notna()].copy()
        frame["segment_anchor_id"] = frame["anchor_id"]
        frame["anchor_id"] = [anchor_id(d) for d in frame["_entered_on"]]
        frame["anchor_at"] = pd.to_datetime(frame["_entered_on"])
        return frame.drop(columns="_entered_on").reset_index(drop=True)

    def _write(self, new: list[str], renew: list[str]) -> None:
        now = _now()
        with self.state.begin() as conn:
            if renew:
                self._close(conn, renew, "re-entry period over")
            if new:
                rows = [
                    {
                        "campaign": self.campaign.id,
                        "customer_id": cid,
                        "entered_on": self.opts.as_of,
                        "run_id": self.opts.run_id,
                        "created_at": now,
                    }
                    for cid in new
                ]
                conn.execute(_insert(self.state, entries).values(rows).on_conflict_do_nothing())

    def _close(self, conn: sa.Connection, ids: list[str], reason: str) -> None:
        for start in range(0, len(ids), ID_BATCH):
            conn.execute(
                sa.update(entries)
                .where(
                    entries.c.campaign == self.campaign.id,
                    entries.c.customer_id.in_(ids[start : start + ID_BATCH]),
                    entries.c.exited_on.is_(None),
                    entries.c.entered_on < self.opts.as_of,
                )
                .values(exited_on=self.opts.as_of, exit_reason=reason)
            )

    def finish(self) -> dict[str, int]:
        """End the open episodes of customers the segment no longer returns; return the counts."""
        stmt = sa.select(entries.c.customer_id).where(
            entries.c.campaign == self.campaign.id,
            entries.c.exited_on.is_(None),
            entries.c.entered_on < self.opts.as_of,
        )
        with self.state.connect() as conn:
            gone = [cid for (cid,) in conn.execute(stmt) if cid not in self.seen]
        if gone and not self.opts.dry_run:
            with self.state.begin() as conn:
                self._close(conn, gone, "left the segment")
        self.counts["left"] = len(gone)
        log.info("campaign %s entries on %s: %s", self.campaign.id, self.opts.as_of, self.counts)
        return dict(self.counts)
