"""Runtime settings, read from ``LOYALFLOW_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import PositiveInt, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict

from loyalflow.home import PROJECT_DIR


class Settings(BaseSettings):
    """Where campaigns, templates and data live, and which providers deliver."""

    model_config = SettingsConfigDict(env_prefix="LOYALFLOW_", extra="ignore")

    home: Path = PROJECT_DIR
    warehouse_url: str = f"sqlite:///{PROJECT_DIR / 'out' / 'warehouse.db'}"
    warehouse_conn_id: str | None = None
    state_url: str | None = None
    outbox_dir: Path = PROJECT_DIR / "out" / "outbox"
    # which emails the outbox also writes as .eml files: "all", "none", or the first N per campaign and step
    outbox_eml: Annotated[str, StringConstraints(pattern=r"^(all|none|\d+)$")] = "all"
    work_url: str = str(PROJECT_DIR / "out" / "work")
    email_provider: Literal["outbox", "sendgrid", "ses", "smtp"] = "outbox"
    sms_provider: Literal["outbox", "sns"] = "outbox"
    # a development default on purpose: real providers and a public `serve` refuse it (32+ random bytes)
    secret_key: str = "dev-only-change-me"  # noqa: S105
    secret_key_previous: str | None = None  # the key before a rotation: its links still verify
    public_url: str = "http://localhost:8080/loyalflow"
    chunk_size: PositiveInt = 10_000  # customers per chunk (one mapped send_chunk task); see docs/deploy.md
    # most chunks (mapped send_chunk tasks) per run, as Airflow's [core] max_map_length allows: a larger
    # audience gets larger chunks (loyalflow.audience.segments.within)
    max_chunks: PositiveInt = 1024
    default_timezone: str = "UTC"
    # delivery through real providers (connections, rate limits, retries, reconciliation)
    sendgrid_conn_id: str = "sendgrid_default"
    aws_conn_id: str = "aws_default"
    smtp_conn_id: str = "smtp_default"
    sendgrid_rate_per_sec: float = 100.0  # 0 = unlimited
    sendgrid_concurrency: int = 16
    sendgrid_asm_group_id: int | None = None
    ses_rate_per_sec: float = 14.0
    ses_concurrency: int = 8
    ses_configuration_set: str | None = None
    smtp_rate_per_sec: float = 20.0
    smtp_concurrency: int = 4
    sns_rate_per_sec: float = 20.0
    sns_concurrency: int = 8
    sns_sender_id: str | None = None
    send_max_attempts: int = 5  # per message, for errors that cannot have been delivered
    send_max_wait_seconds: float = 60.0  # longest pause between tries (a longer Retry-After gives up)
    claim_lease_seconds: int = 3600  # a claim older than this belongs to a crashed process → unknown
    event_window_seconds: int = 6 * 3600  # unknown with no provider event for this long → released
    # Compliance (docs/architecture.md §4): marketing caps across campaigns, SMS quiet hours,
    # optional email window.
    cap_marketing_per_day: int = 1
    cap_marketing_per_week: int = 2
    sms_window: str = "09:00-20:00"  # local time of the customer; outside it an SMS is deferred
    email_window: str | None = None  # e.g. "08:00-21:00"; a campaign's params.email_window overrides
    snooze_days: int = 30  # "contact me later"
    sendgrid_webhook_public_key: str | None = None  # base64 DER; when set, unsigned webhooks are refused
    events_dir: Path = PROJECT_DIR / "out" / "events"  # <provider>/*.json files the ingest DAG picks up
    consent_export_url: str | None = None  # fsspec folder for daily exports (default: <home>/out/consent)
    attribution_days: PositiveInt = 14  # days after a message (or holdout) in which an order converts
    report_dir: Path = PROJECT_DIR / "out"  # report.json and report.html (docs/report.md)

    @property
    def campaigns_dir(self) -> Path:
        """Folder of campaign YAML files and their SQL."""
        return self.home / "campaigns"

    @property
    def templates_dir(self) -> Path:
        """Folder of Jinja templates."""
        return self.home / "templates"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()
