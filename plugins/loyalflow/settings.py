"""Runtime settings, read from ``LOYALFLOW_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Where campaigns, templates and data live, and which providers deliver."""

    model_config = SettingsConfigDict(env_prefix="LOYALFLOW_", extra="ignore")

    home: Path = PROJECT_DIR
    warehouse_url: str = f"sqlite:///{PROJECT_DIR / 'out' / 'warehouse.db'}"
    warehouse_conn_id: str | None = None
    state_url: str | None = None
    outbox_dir: Path = PROJECT_DIR / "out" / "outbox"
    work_url: str = str(PROJECT_DIR / "out" / "work")
    email_provider: Literal["outbox", "sendgrid", "ses", "smtp"] = "outbox"
    sms_provider: Literal["outbox", "sns"] = "outbox"
    secret_key: str = "dev-only-change-me"
    public_url: str = "http://localhost:8080/loyalflow"
    chunk_size: int = 2000
    default_timezone: str = "UTC"

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
