"""One-click unsubscribe through the real Airflow API server with the loyalflow plugin loaded.

Airflow 3 mounts a plugin's ``fastapi_apps`` as sub-applications at their ``url_prefix`` (here
``/loyalflow``, see plugins/loyalflow_plugin.py). Airflow's authentication is a dependency of its own
routers (``/api/v2``, ``/ui``), not of mounted plugin apps: a mail provider's one-click POST needs no
Airflow login, while ``/api/v2/dags`` still does. The test starts ``airflow api-server`` on a free
loopback port in its own process group, with a private AIRFLOW_HOME, and stops the whole group.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from loyalflow.compose.context import links
from loyalflow.compose.tokens import LinkToken, sign
from loyalflow.settings import Settings
from loyalflow.state import consent as ledger
from loyalflow.state import ensure_schema
from tests.conftest import ROOT, TEST_KEY
from tests.factories import Shop
from tests.web.airflow_server import api_server as api_server_process
from tests.web.conftest import free_port

pytestmark = pytest.mark.airflow
ONE_CLICK = {
    "content": "List-Unsubscribe=One-Click",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}


@dataclass
class Server:
    base: str  # http://127.0.0.1:PORT
    settings: Settings  # what the server's loyalflow reads
    log: Path


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    loyalflow = {
        "LOYALFLOW_HOME": str(ROOT),
        "LOYALFLOW_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
        "LOYALFLOW_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "LOYALFLOW_OUTBOX_DIR": str(tmp_path / "outbox"),
        "LOYALFLOW_WORK_URL": str(tmp_path / "work"),
        "LOYALFLOW_SECRET_KEY": TEST_KEY,
        "LOYALFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}/loyalflow",
    }
    settings = Settings(
        home=ROOT,
        warehouse_url=loyalflow["LOYALFLOW_WAREHOUSE_URL"],
        state_url=loyalflow["LOYALFLOW_STATE_URL"],
        secret_key=TEST_KEY,
        public_url=loyalflow["LOYALFLOW_PUBLIC_URL"],
    )
    ensure_schema(sa.create_engine(settings.state_url or ""))
    with api_server_process(tmp_path, port, {**loyalflow, "AIRFLOW__API__PORT": str(port)}) as (base, _, log):
        yield Server(base, settings, log)


def ledger_rows(settings: Settings, cid: str) -> list[tuple[str, str, bool, str]]:
    engine = sa.create_engine(settings.state_url or "")
    with engine.connect() as conn:
        found = conn.execute(sa.select(ledger).where(ledger.c.customer_id == cid).order_by(ledger.c.id))
        rows = [(r.channel, r.scope, r.opted_in, r.source) for r in found]
    engine.dispose()
    return rows


def test_one_click_through_the_airflow_api_server(api_server: Server) -> None:
    settings = api_server.settings
    shop = Shop(sa.create_engine(settings.warehouse_url))
    cid, other = shop.customer(), shop.customer()
    # the List-Unsubscribe URL an email carries, as the plugin serves it
    url = links(settings, cid, "email", "thank_you")["unsubscribe"]
    assert url.startswith(f"{api_server.base}/loyalflow/unsubscribe/")

    with httpx.Client(timeout=30) as http:
        # GET (a link scanner) only confirms
        page = http.get(links(settings, other, "email", "thank_you")["unsubscribe"])
        assert page.status_code == 200 and '<form method="post">' in page.text
        assert ledger_rows(settings, other) == []

        # one-click POST, twice: 2xx both times, one ledger row, no Airflow login needed
        for _ in range(2):
            response = http.post(url, **ONE_CLICK)
            assert 200 <= response.status_code < 300, response.text[:500]
            assert "set-cookie" not in response.headers
        assert ledger_rows(settings, cid) == [("email", "all", False, "one_click")]

        # forged and malformed tokens: 4xx, nothing recorded
        forged = sign("another-key-another-key-another-key!", LinkToken(other, "email", "thank_you"))
        for bad in (forged, "garbage", "x" * 4000):
            response = http.post(f"{api_server.base}/loyalflow/unsubscribe/{bad}", **ONE_CLICK)
            assert 400 <= response.status_code < 500, (bad[:20], response.status_code)
        assert ledger_rows(settings, other) == []

        # Airflow's own API still wants a login; the plugin's pages never did
        assert http.get(f"{api_server.base}/api/v2/dags").status_code in (401, 403)
        assert http.get(links(settings, cid, "email", "thank_you")["preferences"]).status_code == 200
