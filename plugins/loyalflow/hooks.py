"""Thin hooks over provider clients that read Airflow Connections (the providers' style).

``AIRFLOW_CONN_*`` environment variables work from the CLI too. Credentials never leave the hook.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseHook

SENDGRID_API = "https://api.sendgrid.com"


class SendGridHook(BaseHook):
    """SendGrid v3 credentials from a Connection: API key as password; host replaces the API base URL.

    Set host to ``https://api.eu.sendgrid.com`` for the EU region, or to a local stand-in.
    """

    conn_name_attr = "sendgrid_conn_id"
    default_conn_name = "sendgrid_default"
    conn_type = "sendgrid"
    hook_name = "SendGrid"

    def __init__(self, sendgrid_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.sendgrid_conn_id = sendgrid_conn_id

    def get_conn(self) -> tuple[str, str]:
        """``(api_key, base_url)``; the base URL has no trailing slash."""
        conn = self.get_connection(self.sendgrid_conn_id)
        if not conn.password:
            raise ValueError(f"connection {self.sendgrid_conn_id} has no API key (password)")
        host = (conn.host or "").strip().rstrip("/")
        if host and "://" not in host:
            host = f"https://{host}"
        if host and conn.port and host.count(":") < 2:
            host = f"{host}:{conn.port}"
        return conn.password, host or SENDGRID_API


def aws_client(service: str, aws_conn_id: str = "aws_default", max_pool: int = 10) -> Any:
    """A boto3 client through the Amazon provider's ``AwsBaseHook`` (``endpoint_url`` extra honoured).

    botocore's own retries are off: loyalflow retries only what cannot have been delivered.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from botocore.config import Config

    config = Config(
        max_pool_connections=max(10, max_pool),
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type=service, config=config).get_conn()


def warehouse_url(conn_id: str) -> str:
    """The SQLAlchemy URL of an Airflow Connection (``AIRFLOW_CONN_*`` variables work from the CLI)."""
    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type == "sqlite":  # the file path arrives as host (JSON form) or schema (URI form)
        return f"sqlite:///{conn.host or conn.schema}"
    uri = conn.get_uri()
    return uri.replace("postgres://", "postgresql+psycopg2://", 1)


@dataclass(frozen=True)
class SmtpConfig:
    """SMTP server details from a Connection (extra: ``ssl``, ``starttls``, ``timeout``)."""

    host: str
    port: int
    login: str | None
    password: str | None
    ssl: bool
    starttls: bool
    timeout: float

    @classmethod
    def from_connection(cls, conn_id: str = "smtp_default") -> SmtpConfig:
        """Read ``conn_id``; ``disable_ssl`` (the SMTP provider's extra) is understood too."""
        conn = BaseHook.get_connection(conn_id)
        extra = conn.extra_dejson
        use_ssl = bool(extra["ssl"]) if "ssl" in extra else not extra.get("disable_ssl", True)
        return cls(
            host=conn.host or "localhost",
            port=int(conn.port or (465 if use_ssl else 25)),
            login=conn.login or None,
            password=conn.password or None,
            ssl=use_ssl,
            starttls=bool(extra.get("starttls", False)),
            timeout=float(extra.get("timeout", 30)),
        )

    def connect(self) -> smtplib.SMTP:
        """A logged-in SMTP client (SSL or STARTTLS as configured)."""
        client: smtplib.SMTP
        if self.ssl:
            client = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.starttls:
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
        if self.login and self.password:
            client.login(self.login, self.password)
        return client
