"""One-click unsubscribe against three warehouses, then the next run and ``explain``.

The demo warehouse in SQLite (state inside it); a PostgreSQL warehouse with PRIMARY KEY (customer_id,
channel) on channel_preferences opened by a role that may only SELECT, state in another schema; and a
read-only SQLite URL (``mode=ro``) with the state in its own file. loyalflow writes only its state.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from loyalflow.compose.context import links
from loyalflow.compose.tokens import LinkToken, sign
from loyalflow.decide.addresses import normalise
from loyalflow.demo.data import seed
from loyalflow.ops.explain import evidence
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings, get_settings
from loyalflow.state import consent as ledger
from loyalflow.state import decisions
from loyalflow.web.preferences import app
from tests.compliance_helpers import outbox
from tests.conftest import IN_CI, PG_URL

AS_OF = dt.date(2026, 11, 20)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = {"content": "List-Unsubscribe=One-Click", "headers": FORM}


@dataclass
class Warehouse:
    name: str
    url: str  # what loyalflow reads
    state_url: str | None  # None: the state lives in the warehouse
    owner_url: str  # the same data, writable (the test's own checks)


def _seed(url: str) -> None:
    engine = sa.create_engine(url)
    seed(engine, AS_OF, customers=300)
    engine.dispose()


@pytest.fixture(params=["demo-sqlite", "postgres-select-only", "sqlite-read-only"])
def warehouse(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Warehouse]:
    monkeypatch.chdir(tmp_path)  # a file: URI's folder must not land in the checkout
    if request.param == "demo-sqlite":
        url = f"sqlite:///{tmp_path / 'demo.db'}"
        _seed(url)
        yield Warehouse(request.param, url, None, url)
    elif request.param == "sqlite-read-only":
        path = tmp_path / "warehouse.db"
        _seed(f"sqlite:///{path}")
        yield Warehouse(
            request.param, f"sqlite:///file:{path}?mode=ro&uri=true", f"sqlite:///{tmp_path / 'state.db'}",
            f"sqlite:///{path}",
        )  # fmt: skip
    else:
        tag = uuid.uuid4().hex[:8]
        schema, state_schema, role = f"lf_wh_{tag}", f"lf_st_{tag}", f"lf_ro_{tag}"
        admin = sa.create_engine(PG_URL)
        try:
            with admin.begin() as conn:
                conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        except sa.exc.OperationalError as exc:
            admin.dispose()
            if IN_CI:
                pytest.fail(f"PostgreSQL is required under CI=true: {exc}")
            pytest.skip(f"PostgreSQL not reachable: {exc}")
        owner = f"{PG_URL}?options=-csearch_path%3D{schema}"
        try:
            _seed(owner)
            with admin.begin() as conn:
                conn.execute(sa.text(f"CREATE SCHEMA {state_schema}"))
                conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
                conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
                conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}"))
            reader = sa.engine.make_url(PG_URL).set(username=role).render_as_string(hide_password=False)
            yield Warehouse(
                request.param,
                f"{reader}?options=-csearch_path%3D{schema}",
                f"{PG_URL}?options=-csearch_path%3D{state_schema}",
                owner,
            )
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {state_schema} CASCADE"))
                if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
                    conn.execute(sa.text(f"DROP OWNED BY {role}"))
                    conn.execute(sa.text(f"DROP ROLE {role}"))
            admin.dispose()


@pytest.fixture
def configured(warehouse: Warehouse, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LOYALFLOW_WAREHOUSE_URL", warehouse.url)
    if warehouse.state_url:
        monkeypatch.setenv("LOYALFLOW_STATE_URL", warehouse.state_url)
    get_settings.cache_clear()
    return Settings()


def thanked_by_email(owner_url: str) -> list[str]:
    """Customers the thank-you would email on AS_OF: a completed booking that day, email opted in."""
    engine = sa.create_engine(owner_url)
    start = dt.datetime.combine(AS_OF, dt.time())
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT DISTINCT c.customer_id, c.email FROM customers c "
                "JOIN orders o ON o.customer_id = c.customer_id "
                "JOIN channel_preferences p ON p.customer_id = c.customer_id AND p.channel = 'email' "
                "WHERE o.status = 'completed' AND o.ordered_at >= :a AND o.ordered_at < :b AND p.opted_in "
                "ORDER BY c.customer_id"
            ),
            {"a": start, "b": start + dt.timedelta(days=1)},
        ).all()
    engine.dispose()
    return [str(cid) for cid, email in rows if normalise("email", email)]


def ledger_rows(state: sa.Engine, cid: str) -> list[tuple[str, str, bool, str]]:
    with state.connect() as conn:
        found = conn.execute(sa.select(ledger).where(ledger.c.customer_id == cid).order_by(ledger.c.id))
        return [(r.channel, r.scope, r.opted_in, r.source) for r in found]


def test_one_click_is_idempotent_get_changes_nothing_and_the_next_run_honours_it(
    warehouse: Warehouse, configured: Settings
) -> None:
    rt = Runtime(configured)
    candidates = thanked_by_email(warehouse.owner_url)
    assert len(candidates) >= 2, candidates
    cid, bystander = candidates[0], candidates[1]
    client = TestClient(app)
    link = links(configured, cid, "email", "thank_you")["unsubscribe"]
    unsubscribe = link.removeprefix(configured.public_url)

    # GET is a confirmation page: a link scanner unsubscribes nobody
    page = client.get(unsubscribe)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert ledger_rows(rt.state, cid) == []

    # POST twice: 2xx both times, one ledger row
    first, again = client.post(unsubscribe, **ONE_CLICK), client.post(unsubscribe, **ONE_CLICK)
    assert 200 <= first.status_code < 300 and 200 <= again.status_code < 300
    assert "set-cookie" not in first.headers
    assert ledger_rows(rt.state, cid) == [("email", "all", False, "one_click")]

    # a forged token (signed with another key, or altered) gets a 4xx and changes nothing
    forged = sign("an-attacker-key-that-is-long-enough!!", LinkToken(bystander, "email", "thank_you"))
    real = links(configured, bystander, "email", "thank_you")["unsubscribe"].rsplit("/", 1)[1]
    for bad in (forged, real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB"), "x" * 3000, "%20"):
        response = client.post(f"/unsubscribe/{bad}", **ONE_CLICK)
        assert 400 <= response.status_code < 500, (bad[:20], response.status_code)
    assert client.post("/unsubscribe/", **ONE_CLICK).status_code == 404
    assert ledger_rows(rt.state, bystander) == []

    # the next run sends that customer nothing by email (and still emails others)
    run_id = f"oneclick-{warehouse.name}"
    run(rt, "thank_you", RunOptions(AS_OF, run_id))
    messages = outbox(configured.outbox_dir)
    assert not [m for m in messages if m["customer_id"] == cid and m["channel"] == "email"]
    assert [m for m in messages if m["customer_id"] == bystander and m["channel"] == "email"]
    with rt.state.connect() as conn:
        mine = conn.execute(
            sa.select(decisions.c.reason, decisions.c.detail).where(
                decisions.c.customer_id == cid, decisions.c.run_id == run_id
            )
        ).all()
    assert mine, "the customer was not considered at all"
    assert all("email: opted out" in str(detail) and "via one_click" in str(detail) for _, detail in mine)

    # explain shows the ledger row
    found = evidence(rt.state, rt.warehouse, cid, "thank_you")
    book = found["consent (loyalflow_consent ledger)"]
    row = book[book["channel"] == "email"]  # this section holds only the ledger's rows
    assert row[["opted_in", "scope", "source"]].values.tolist() == [[False, "all", "one_click"]]

    # the warehouse was only read
    with sa.create_engine(warehouse.owner_url).connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    if warehouse.state_url:
        assert not {t for t in tables if t.startswith("loyalflow_")}
