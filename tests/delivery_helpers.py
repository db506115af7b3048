"""Shared pieces of the provider tests: messages, Connections for the stand-ins, pipeline runs."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from loyalflow.deliver.channels.base import Message
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings, get_settings
from loyalflow.state import ledger
from tests.factories import Shop
from tools.sendgrid_standin import SendGridStandin

AS_OF = dt.date(2026, 11, 20)
DAY = dt.datetime(2026, 11, 20, 14, 30)
SENDER = "Harbor & Pine Hotels <hello@harborandpine.example.com>"


def message(i: int = 0, **overrides: Any) -> Message:
    """A rendered email (or SMS with ``channel="sms"``) for customer ``C{i}``."""
    values: dict[str, Any] = {
        "idempotency_key": f"key-{i:05d}",
        "campaign": "thank_you",
        "step": "thanks",
        "customer_id": f"C{i:05d}",
        "channel": "email",
        "to": f"guest{i}@example.com",
        "text": "Thank you for your booking.",
        "send_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "category": "relationship",
        "subject": "Thank you",
        "html": "<p>Thank you for your booking.</p>",
        "sender": SENDER,
        "reply_to": "guestcare@harborandpine.example.com",
        "headers": {
            "List-Unsubscribe": "<https://example.com/u/t>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    values.update(overrides)
    return Message(**values)


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    """Define an Airflow Connection through its ``AIRFLOW_CONN_*`` variable."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


@contextmanager
def sendgrid_standin(monkeypatch: pytest.MonkeyPatch, **faults: Any) -> Iterator[SendGridStandin]:
    """The SendGrid stand-in on loopback, wired up as the ``sendgrid_default`` Connection."""
    with SendGridStandin("SG.test", **faults) as sg:
        set_connection(monkeypatch, "sendgrid_default", conn_type="http", password="SG.test", host=sg.url)
        yield sg


def use_provider(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Settings after setting ``LOYALFLOW_<NAME>`` variables (e.g. ``email_provider="sendgrid"``)."""
    for name, value in env.items():
        monkeypatch.setenv(f"LOYALFLOW_{name.upper()}", value)
    get_settings.cache_clear()
    return Settings()


def buyers(shop: Shop, n: int, **customer: Any) -> list[str]:
    """``n`` customers, each with a completed order on DAY."""
    ids = [shop.customer(**customer) for _ in range(n)]
    for cid in ids:
        shop.order(cid, DAY)
    return ids


def run_thank_you(settings: Settings | None = None, run_id: str | None = None) -> dict[str, int]:
    """The whole pipeline once, as the CLI runs it."""
    rt = Runtime(settings or Settings())
    return run(rt, "thank_you", RunOptions(AS_OF, run_id or f"test__{time.time_ns()}"))


def ledger_states(engine: sa.Engine) -> dict[str, str]:
    """Every ledger key with its status."""
    with engine.connect() as conn:
        return {k: s for k, s in conn.execute(sa.select(ledger.c.idempotency_key, ledger.c.status))}


def recording_sleep(log: list[float]) -> Callable[[float], None]:
    """A real sleep that also records how long it was asked to wait."""

    def sleep(seconds: float) -> None:
        log.append(seconds)
        time.sleep(seconds)

    return sleep


@contextmanager
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server on loopback (SES, SNS, S3, ...), wired up as the ``aws_default`` Connection."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST")).close()
    extra = {"region_name": "us-east-1", "endpoint_url": url}
    set_connection(
        monkeypatch, "aws_default", conn_type="aws", login="testing", password="testing", extra=extra
    )
    try:
        yield url
    finally:
        server.stop()


def capture_calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` call made through a boto3 ``client``."""
    calls: list[dict[str, Any]] = []
    service = client.meta.service_model.service_name
    client.meta.events.register(
        f"provide-client-params.{service}.{operation}", lambda params, **_: calls.append(dict(params))
    )
    return calls
