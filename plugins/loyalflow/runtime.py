"""What every stage of a run shares: its options and the runtime (settings, engines, templates, channels).

Every stage may import this module: it never imports the pipeline, so no stage needs to either.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property

import sqlalchemy as sa

from loyalflow.compose.render import Renderer
from loyalflow.deliver.channels import Channel, channel_for
from loyalflow.errors import LoyalflowError
from loyalflow.settings import Settings
from loyalflow.spec import Brand, Campaign, campaign_files, load_brand, load_campaign
from loyalflow.state import ensure_schema
from loyalflow.warehouse import engine_for


@dataclass(frozen=True)
class RunOptions:
    """One evaluation of a campaign: the day it is evaluated for, and how."""

    as_of: dt.date
    run_id: str
    dry_run: bool = False
    send_limit: int | None = None
    now: dt.datetime | None = None  # the moment messages go out (UTC); defaults to the real time

    @property
    def send_time(self) -> dt.datetime:
        """The nominal send moment, naive UTC."""
        return self.now or dt.datetime.now(dt.UTC).replace(tzinfo=None)


def own_journal(engine: sa.Engine) -> None:
    """Write-ahead logging for loyalflow's own SQLite state file (never a customer's warehouse file).

    Chunk workers then read while another commits, instead of waiting for its lock (1M customers,
    two workers: 102 s -> 93 s). The mode stays with the file; commits are as durable as before. The
    file, its ``-wal`` and ``-shm`` files belong together: back them up with ``sqlite3 .backup``.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or "mode=memory" in database:
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")


@dataclass
class Runtime:
    """Settings plus the connections and compiled templates a run needs (built once per process)."""

    settings: Settings
    channels: dict[str, Channel] = field(default_factory=dict)

    @cached_property
    def warehouse(self) -> sa.Engine:
        """The customer warehouse (URL, or an Airflow Connection when ``warehouse_conn_id`` is set)."""
        s = self.settings
        if s.warehouse_conn_id:
            from loyalflow.hooks import warehouse_url

            return engine_for(warehouse_url(s.warehouse_conn_id))
        return engine_for(s.warehouse_url)

    @cached_property
    def state(self) -> sa.Engine:
        """loyalflow's own tables: the warehouse unless a separate ``state_url`` is set.

        A separate SQLite state database is switched to write-ahead logging (see :func:`own_journal`).
        """
        s = self.settings
        if not s.state_url:
            engine = self.warehouse
        else:
            engine = engine_for(s.state_url)
            if s.warehouse_conn_id is None and engine is not engine_for(s.warehouse_url):
                own_journal(engine)
        ensure_schema(engine)
        return engine

    @cached_property
    def renderer(self) -> Renderer:
        """Templates, compiled once per process."""
        return Renderer(self.settings.templates_dir)

    @cached_property
    def brand(self) -> Brand:
        """The sender details from ``campaigns/brand.yaml``."""
        return load_brand(self.settings.campaigns_dir)

    def campaign(self, campaign_id: str) -> Campaign:
        """Load and validate ``campaigns/<id>.yaml``."""
        path = self.settings.campaigns_dir / f"{campaign_id}.yaml"
        if not path.is_file():
            known = ", ".join(p.stem for p in campaign_files(self.settings.campaigns_dir))
            raise LoyalflowError(f"unknown campaign '{campaign_id}' (no {path}); known: {known}")
        return load_campaign(path, self.settings.templates_dir)

    def channel(self, kind: str) -> Channel:
        """The provider for ``kind``, created on first use."""
        if kind not in self.channels:
            self.channels[kind] = channel_for(kind, self.settings)
        return self.channels[kind]
