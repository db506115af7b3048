"""Thin hooks over provider clients that read Airflow Connections (the providers' style).

``AIRFLOW_CONN_*`` environment variables work from the CLI too. Credentials never leave the hook. A
missing or incomplete Connection is a :class:`~loyalflow.errors.ConnectionSetupError` naming it.
"""

from __future__ import annotations

import ipaddress
import smtplib
from dataclasses import dataclass
from ssl import SSLContext, create_default_context
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from loyalflow.errors import ConnectionSetupError, InsecureConnectionError

if TYPE_CHECKING:
    from airflow.sdk import Connection

SENDGRID_API = "https://api.sendgrid.com"


def get_connection(conn_id: str, used_for: str) -> Connection:
    """The Airflow Connection ``conn_id``; a missing one is a one-line :class:`ConnectionSetupError`."""
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConnectionSetupError(
            f"Airflow Connection '{conn_id}' ({used_for}) is not defined: add it in Airflow, "
            f"or set AIRFLOW_CONN_{conn_id.upper()}"
        ) from None


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
        conn = get_connection(self.sendgrid_conn_id, "SendGrid")
        if not conn.password:
            raise ConnectionSetupError(
                f"Airflow Connection '{self.sendgrid_conn_id}' has no SendGrid API key: set its password"
            )
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
    from botocore.exceptions import NoRegionError

    config = Config(
        max_pool_connections=max(10, max_pool),
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    try:
        return AwsBaseHook(aws_conn_id=aws_conn_id, client_type=service, config=config).get_conn()
    except NoRegionError:
        raise ConnectionSetupError(
            f"Airflow Connection '{aws_conn_id}' has no AWS region: set its extra region_name"
        ) from None


def warehouse_url(conn_id: str) -> str:
    """The SQLAlchemy URL of an Airflow Connection (``AIRFLOW_CONN_*`` variables work from the CLI)."""
    conn = get_connection(conn_id, "the warehouse, LOYALFLOW_WAREHOUSE_CONN_ID")
    if conn.conn_type == "sqlite":  # the file path arrives as host (JSON form) or schema (URI form)
        return f"sqlite:///{conn.host or conn.schema}"
    uri = conn.get_uri()
    return uri.replace("postgres://", "postgresql+psycopg2://", 1)


SMTP_SSL_PORT, SMTP_PORT = 465, 25  # smtplib's defaults, which Airflow's SmtpHook relies on too
SSL_CONTEXTS = ("default", "none")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost``, 127.0.0.0/8 or ::1 (no name lookup)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def refuse_plaintext_login(conn_id: str, host: str, *, encrypted: bool, sends_login: bool) -> None:
    """Raise :class:`InsecureConnectionError` if a login would cross the network unencrypted.

    Pure (no network): a login is allowed over SSL or STARTTLS, or in plain text to loopback only.
    """
    if sends_login and not encrypted and not is_loopback(host):
        raise InsecureConnectionError(
            f"Airflow Connection '{conn_id}' would send its SMTP login unencrypted to {host}: "
            "set its extra disable_tls to false (STARTTLS) or disable_ssl to false (SSL)"
        )


def _flag(conn_id: str, extra: dict[str, Any], name: str) -> bool:
    """A boolean extra; the strings true/false (URI form) mean what they say."""
    value = extra.get(name, False)
    if isinstance(value, str):
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}
        if value.strip().lower() not in words:
            raise ConnectionSetupError(
                f"Airflow Connection '{conn_id}': extra {name} must be true or false, got '{value}'"
            )
        return words[value.strip().lower()]
    return bool(value)


@dataclass(frozen=True)
class SmtpConfig:
    """SMTP server details from a Connection, with the extras and defaults of Airflow's ``SmtpHook``.

    ``disable_ssl`` (default false: implicit TLS, port 465), ``disable_tls`` (default false: STARTTLS
    when SSL is disabled, port 25), ``timeout`` (seconds, default 30) and ``ssl_context`` (``default``
    verifies the server's certificate against the system CAs, which ``SSL_CERT_FILE`` can replace;
    ``none`` encrypts without verifying). A login is never sent in plain text except to loopback.
    """

    conn_id: str
    host: str
    port: int
    login: str | None
    password: str | None
    ssl: bool
    starttls: bool
    timeout: float
    ssl_context: str = "default"

    def __post_init__(self) -> None:
        if self.ssl_context not in SSL_CONTEXTS:
            raise ConnectionSetupError(
                f"Airflow Connection '{self.conn_id}': extra ssl_context must be 'default' or 'none', "
                f"got '{self.ssl_context}'"
            )
        refuse_plaintext_login(
            self.conn_id,
            self.host,
            encrypted=self.ssl or self.starttls,
            sends_login=bool(self.login and self.password),
        )

    @classmethod
    def from_fields(
        cls,
        conn_id: str,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: dict[str, Any],
    ) -> SmtpConfig:
        """The configuration a Connection's fields describe (pure: reads nothing, connects nowhere)."""
        use_ssl, use_tls = not _flag(conn_id, extra, "disable_ssl"), not _flag(conn_id, extra, "disable_tls")
        try:
            timeout = float(extra.get("timeout", 30))
        except (TypeError, ValueError):
            raise ConnectionSetupError(
                f"Airflow Connection '{conn_id}': extra timeout must be a number of seconds"
            ) from None
        return cls(
            conn_id=conn_id,
            host=host or "localhost",
            port=int(port or (SMTP_SSL_PORT if use_ssl else SMTP_PORT)),
            login=login or None,
            password=password or None,
            ssl=use_ssl,
            starttls=use_tls and not use_ssl,
            timeout=timeout,
            ssl_context=str(extra.get("ssl_context") or "default"),
        )

    @classmethod
    def from_connection(cls, conn_id: str = "smtp_default") -> SmtpConfig:
        """Read the Connection ``conn_id`` (missing, unsafe or malformed: :class:`ConnectionSetupError`)."""
        conn = get_connection(conn_id, "SMTP")
        return cls.from_fields(conn_id, conn.host, conn.port, conn.login, conn.password, conn.extra_dejson)

    def tls_context(self) -> SSLContext | None:
        """The client context: verifying by default; ``None`` (smtplib's unverified one) for ``none``."""
        return None if self.ssl_context == "none" else create_default_context()

    def connect(self) -> smtplib.SMTP:
        """A logged-in SMTP client: SSL, or STARTTLS (never a silent downgrade), or plain as configured."""
        client: smtplib.SMTP
        if self.ssl:
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.tls_context())
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.starttls:
                client.starttls(context=self.tls_context())  # fails if the server does not offer it
                client.ehlo()
            if self.login and self.password:
                client.login(self.login, self.password)
        except BaseException:
            client.close()
            raise
        return client
