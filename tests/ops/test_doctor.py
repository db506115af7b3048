"""``loyalflow doctor``: the demo warehouse passes, a read-only warehouse passes with the state apart (and
fails without), and a broken warehouse gets one line per problem naming table and column."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from loyalflow.demo.data import seed
from loyalflow.ops.cli import app
from loyalflow.ops.doctor import Finding, check, failed
from loyalflow.ops.validate import validate_all
from loyalflow.settings import Settings
from loyalflow.state import HEAD, ensure_schema, migrate
from loyalflow.warehouse import engine_for
from tests.cli_helpers import runner
from tests.conftest import PG_URL, ROOT
from tests.factories import Shop

AS_OF = dt.date(2026, 11, 20)
OUT = ROOT / "out" / "doctor"


def doctor_cli(case: str, *args: str) -> tuple[int, str]:
    """``loyalflow doctor ARGS`` through the CLI; the output is kept in out/doctor/<case>.txt for the docs."""
    result = runner.invoke(app, ["doctor", *args])
    OUT.mkdir(parents=True, exist_ok=True)
    command = " ".join(["$ loyalflow doctor", *args])
    (OUT / f"{case}.txt").write_text(_for_docs(f"{command}\n{result.output}"))
    return result.exit_code, result.output


def _for_docs(text: str) -> str:
    """Temporary folders, schema and role names made stable, so the saved output reads well in docs."""
    text = re.sub(r"sqlite:///\S*/([\w.]+\.db)", r"sqlite:///out/\1", text)
    text = re.sub(r"\?options=-csearch_path%3D\w+", "", text)
    text = re.sub(r"lf_test_[0-9a-f]+", "crm", text)
    return re.sub(r"lf_ro_[0-9a-f]+", "loyalflow_ro", text)


def lines(findings: list[Finding], level: str) -> list[str]:
    return [str(f) for f in findings if f.level == level]


def find(findings: list[Finding], where: str) -> Finding:
    matches = [f for f in findings if f.where == where and f.level != "ok"]
    assert len(matches) == 1, (where, [str(f) for f in findings])
    return matches[0]


# --- 1. the demo warehouse ---------------------------------------------------------------------------


def test_demo_warehouse_has_no_errors(settings: Settings) -> None:
    engine = sa.create_engine(settings.warehouse_url)
    seed(engine, AS_OF, customers=300)
    findings = check(engine, None)
    assert not failed(findings), lines(findings, "error")
    wheres = {f.where for f in findings}
    assert {"customers.customer_id", "orders.ordered_at", "channel_preferences.opted_in", "state"} <= wheres

    code, output = doctor_cli("demo", "--warehouse", settings.warehouse_url)
    assert code == 0, output
    assert "0 error(s)" in output and "a snapshot" in output
    tables = sa.inspect(engine).get_table_names()
    assert not [t for t in tables if t.startswith("loyalflow_")], "doctor must not create state tables"


# --- 2. a read-only PostgreSQL warehouse -----------------------------------------------------------------

ID, TS = "BIGINT", "TIMESTAMPTZ"


def contract_ddl(ids: dict[str, str] | None = None, ts: str = TS, drop: tuple[str, ...] = ()) -> list[str]:
    """CREATE TABLE statements for the four contract tables (``ids`` overrides an id type by table.column)."""
    ids = ids or {}
    tables = {
        "customers": [
            ("customer_id", ID),
            ("email", "TEXT"),
            ("phone", "TEXT"),
            ("first_name", "TEXT"),
            ("last_name", "TEXT"),
            ("locale", "TEXT"),
            ("timezone", "TEXT"),
            ("persona", "TEXT"),
            ("created_at", ts),
        ],
        "orders": [
            ("order_id", ID),
            ("customer_id", ID),
            ("ordered_at", ts),
            ("total", "NUMERIC(12, 2)"),
            ("status", "TEXT"),
            ("product", "TEXT"),
            ("referred_by", ID),
        ],
        "channel_preferences": [
            ("customer_id", ID),
            ("channel", "TEXT"),
            ("opted_in", "BOOLEAN"),
            ("source", "TEXT"),
            ("consented_at", ts),
        ],
        "events": [("customer_id", ID), ("event_type", "TEXT"), ("occurred_at", ts), ("content_id", "TEXT")],
    }
    out = []
    for table, columns in tables.items():
        kept = [(name, kind) for name, kind in columns if f"{table}.{name}" not in drop]
        cols = ", ".join(f"{name} {ids.get(f'{table}.{name}', kind)}" for name, kind in kept)
        out.append(f"CREATE TABLE {table} ({cols})")
    return out


ROWS = [
    "INSERT INTO customers (customer_id, email, first_name, created_at) VALUES (1, 'a@example.com', 'Ana', "
    "'2026-01-01 10:00'), (2, 'b@example.com', 'Ben', '2026-01-02 10:00')",
    "INSERT INTO orders (order_id, customer_id, ordered_at, total, product) "
    "VALUES (10, 1, '2026-11-20 09:00', 120.0, 'Deluxe Room')",
    "INSERT INTO channel_preferences (customer_id, channel, opted_in, source, consented_at) VALUES "
    "(1, 'email', true, 'signup', '2026-01-01'), (1, 'email', false, 'link', '2026-02-01'), "
    "(2, 'sms', true, 'signup', '2026-01-02')",
    "INSERT INTO events (customer_id, event_type, occurred_at) VALUES (1, 'viewed_spa', '2026-11-19 08:00')",
]


def build(url: str, statements: list[str]) -> sa.Engine:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    return engine


@pytest.fixture
def read_only_url(pg_url: str) -> Iterator[str]:
    """The contract tables (BIGINT ids) in a fresh schema, and the URL of a role that may only SELECT."""
    schema = pg_url.rsplit("%3D", 1)[1]
    build(pg_url, contract_ddl() + ROWS).dispose()
    role = f"lf_ro_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}"))
    url = PG_URL.replace("postgres@", f"{role}@") + f"?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        engine_for(url).dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))  # its privileges, so the role can go
            conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def test_read_only_warehouse_with_the_state_apart(
    read_only_url: str, tmp_path: Path, settings: Settings
) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    findings = check(sa.create_engine(read_only_url), sa.create_engine(state_url))
    assert not failed(findings), lines(findings, "error")
    assert "ok     customers.customer_id: id type BIGINT" in [str(f) for f in findings]
    assert "a history" in " ".join(f.message for f in findings if f.where == "channel_preferences")

    code, output = doctor_cli("read_only", "--warehouse", read_only_url, "--state", state_url)
    assert code == 0, output
    assert not [line for line in output.splitlines() if line.startswith("error")], output
    assert "loyalflow_doctor_probe" not in sa.inspect(sa.create_engine(state_url)).get_table_names()


def test_read_only_warehouse_without_a_state_url(read_only_url: str, settings: Settings) -> None:
    findings = check(sa.create_engine(read_only_url), None)
    error = find(findings, "state")
    assert error.level == "error"
    assert "state database" in error.message and "LOYALFLOW_STATE_URL" in error.message
    assert lines(findings, "error") == [str(error)]

    code, output = doctor_cli("read_only_no_state", "--warehouse", read_only_url)
    assert code == 1, output
    assert [line for line in output.splitlines() if line.startswith("error")] == [str(error)]


def test_a_table_it_may_not_read(read_only_url: str, pg_url: str) -> None:
    role = read_only_url.split("@")[0].rsplit("/", 1)[1]
    with sa.create_engine(pg_url).begin() as conn:
        conn.execute(sa.text(f"REVOKE SELECT ON events FROM {role}"))
    error = find(check(sa.create_engine(read_only_url), None), "events")
    assert error.level == "error" and "permission denied" in error.message and "grant SELECT" in error.message


# --- 3. a broken warehouse -------------------------------------------------------------------------------


def test_broken_warehouse_one_line_per_problem(pg_url: str, settings: Settings) -> None:
    float_ids = {"customers.customer_id": "DOUBLE PRECISION"}
    ddl = contract_ddl(ids=float_ids, ts="TIMESTAMP", drop=("orders.status",))
    engine = build(pg_url, ddl + ROWS)
    findings = check(engine, None)
    missing = find(findings, "orders.status")
    assert missing.level == "error" and "column missing" in missing.message and "thank_you" in missing.message
    float_id = find(findings, "customers.customer_id")
    assert str(float_id) == (
        "error  customers.customer_id: type DOUBLE PRECISION is a float; ids must be integer, text or UUID"
    )
    for where in (
        "customers.created_at",
        "orders.ordered_at",
        "channel_preferences.consented_at",
        "events.occurred_at",
    ):
        naive = find(findings, where)
        assert naive.level == "warn" and "naive" in naive.message and "UTC" in naive.message
    assert len(lines(findings, "error")) == 2

    code, output = doctor_cli("broken", "--warehouse", pg_url)
    assert code == 1, output
    for finding in findings:
        assert output.count(f"{finding}\n") == 1, (str(finding), output)


def test_broken_sqlite_values_are_sampled(tmp_path: Path) -> None:
    """SQLite's loose types: the declared type says little, so the values are sampled."""
    engine = build(
        f"sqlite:///{tmp_path / 'w.db'}",
        [
            "CREATE TABLE customers (customer_id REAL, email TEXT, phone TEXT, first_name TEXT, "
            "last_name TEXT, locale TEXT, timezone TEXT, persona TEXT, created_at TEXT)",
            "CREATE TABLE orders (order_id TEXT, customer_id TEXT, ordered_at DATETIME, total TEXT, "
            "status TEXT, product TEXT)",
            "CREATE TABLE channel_preferences (customer_id, channel TEXT, opted_in TEXT, source TEXT, "
            "consented_at TEXT)",
            "INSERT INTO customers (customer_id, created_at) VALUES (1.0, '2026-01-01T10:00:00Z')",
            "INSERT INTO orders VALUES ('O1', 'C1', 'yesterday', 'lots', 'completed', 'Room')",
            "INSERT INTO orders VALUES ('O2', 'C1', '2026-11-20 09:00:00', 12.5, 'completed', 'Room')",
            "INSERT INTO channel_preferences VALUES (2.5, 'whatsapp', 'false', 'x', '2026-01-01 10:00:00')",
        ],
    )
    findings = check(engine, None)
    assert "is a float" in find(findings, "customers.customer_id").message
    assert "with UTC offsets" in next(f.message for f in findings if f.where == "customers.created_at")
    assert "'yesterday' does not parse" in find(findings, "orders.ordered_at").message
    assert "'lots' is not a number" in find(findings, "orders.total").message
    assert "needed by thank_you" in find(findings, "orders.referred_by").message
    assert "floats (e.g. 2.5)" in find(findings, "channel_preferences.customer_id").message
    assert "'false' is not usable as a boolean" in find(findings, "channel_preferences.opted_in").message
    channel = find(findings, "channel_preferences.channel")
    assert channel.level == "warn" and "'whatsapp'" in channel.message
    events = find(findings, "events")
    assert events.level == "error" and "needed by buying_cycle_nurture" in events.message
    numbers = Shop(sa.create_engine(f"sqlite:///{tmp_path / 'n.db'}"))
    with numbers.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO events VALUES ('C1', 'viewed', 1767261600, NULL)"))
    assert "numbers" in find(check(numbers.engine, None), "events.occurred_at").message


def test_unused_contract_column_is_a_warning(shop: Shop) -> None:
    with shop.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE events DROP COLUMN content_id"))
    finding = find(check(shop.engine, None), "events.content_id")
    assert finding.level == "warn" and "no current campaign reads it" in finding.message


# --- the state database ------------------------------------------------------------------------------


def test_unreachable_state_database(shop: Shop) -> None:
    state = sa.create_engine("postgresql+psycopg2://loyalflow:secret@127.0.0.1:1/state")
    error = find(check(shop.engine, state), "state")
    assert error.level == "error" and "unreachable" in error.message and "secret" not in error.message


def test_state_schema_version_is_read(shop: Shop, tmp_path: Path) -> None:
    state = build(
        f"sqlite:///{tmp_path / 'state.db'}",
        [
            "CREATE TABLE loyalflow_alembic_version (version_num VARCHAR(32) NOT NULL)",
            "INSERT INTO loyalflow_alembic_version VALUES ('0001')",
        ],
    )
    messages = [f.message for f in check(shop.engine, state) if f.where == "state"]
    assert f"state schema version 0001 (loyalflow_alembic_version); the next run upgrades it to {HEAD}" in (
        messages
    )
    assert sa.inspect(state).get_table_names() == ["loyalflow_alembic_version"]
    ensure_schema(state)
    messages = [f.message for f in check(shop.engine, state) if f.where == "state"]
    assert f"state schema version {HEAD} (loyalflow_alembic_version); the newest" in messages
    assert not [m for m in messages if "hashed idempotency keys" in m]  # nothing had been sent


def test_campaigns_with_hashed_keys_are_named(shop: Shop, tmp_path: Path) -> None:
    state = build(
        f"sqlite:///{tmp_path / 'state.db'}",
        [
            "CREATE TABLE loyalflow_alembic_version (version_num VARCHAR(32) NOT NULL)",
            "INSERT INTO loyalflow_alembic_version VALUES ('0002')",
            "CREATE TABLE loyalflow_ledger (campaign VARCHAR(100))",
            "INSERT INTO loyalflow_ledger VALUES ('thank_you'), ('remorse'), ('thank_you')",
        ],
    )
    with state.begin() as conn:  # 0003 lists the campaigns that sent
        command.upgrade(migrate.config(conn), "0003")
    messages = [f.message for f in check(shop.engine, state) if f.where == "state"]
    assert (
        "2 campaign(s) keep the hashed idempotency keys they sent with before keys were ordered "
        "(docs/architecture.md §5): remorse, thank_you"
    ) in messages


def test_snapshot_or_history(shop: Shop) -> None:
    cid = shop.customer(channels=("email", "sms"))
    assert "a snapshot" in _prefs_shape(shop)
    shop.consent(cid, "email", False, at=dt.datetime(2025, 3, 1))
    history = f"a history: several rows per customer and channel (e.g. customer {cid}, email)"
    assert history in _prefs_shape(shop)


def _prefs_shape(shop: Shop) -> str:
    findings = check(shop.engine, None)
    return next(f.message for f in findings if f.message.startswith(("a snapshot", "a history")))


# --- validate runs the same checks -----------------------------------------------------------------------


def test_validate_reports_the_doctor_errors(settings: Settings) -> None:
    build(settings.warehouse_url, ["CREATE TABLE customers (customer_id REAL)"])
    problems = validate_all(settings, None, AS_OF, lambda _: None)
    assert "customers.customer_id: type REAL is a float; ids must be integer, text or UUID" in problems
    orders = [p for p in problems if p.startswith("orders: table missing; needed by ")]
    assert len(orders) == 1 and "thank_you" in orders[0], problems


def test_a_view_serves_as_a_contract_table(shop: Shop) -> None:
    shop.customer()
    with shop.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE customers RENAME TO crm_customers"))
        conn.execute(sa.text("CREATE VIEW customers AS SELECT * FROM crm_customers"))
    findings = check(shop.engine, None)
    assert not failed(findings), lines(findings, "error")
    assert "ok     customers: readable; 9 of 9 contract columns" in [str(f) for f in findings]


def test_consent_rows_without_a_customer_index_are_a_warning(tmp_path: Path) -> None:
    """Each audience chunk reads consent rows by customer_id: without an index every chunk scans them."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    seed(engine, AS_OF, customers=50)
    with engine.begin() as conn:  # the demo's key leads with customer_id: copy the rows into a bare table
        conn.execute(sa.text("CREATE TABLE bare AS SELECT * FROM channel_preferences"))
        conn.execute(sa.text("DROP TABLE channel_preferences"))
        conn.execute(sa.text("ALTER TABLE bare RENAME TO channel_preferences"))
    warned = [f for f in check(engine, None) if f.table == "channel_preferences" and f.level == "warn"]
    assert any("CREATE INDEX ix_channel_preferences_customer" in f.message for f in warned), warned
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE INDEX ix_prefs ON channel_preferences (customer_id, channel)"))
    assert not [f for f in check(engine, None) if "no index leads" in f.message]


def test_state_role_without_temporary_tables_is_a_warning(shop: Shop, pg_url: str, no_temp_url: str) -> None:
    """Ledger writes are staged in temporary tables on PostgreSQL; a role without TEMPORARY is told so."""
    for url, expected in (
        (pg_url, "ok     state: the role may create temporary tables: ledger writes use COPY"),
        (no_temp_url, "warn   state: the state role may not create temporary tables (TEMPORARY on the"),
    ):
        findings = [str(f) for f in check(shop.engine, engine_for(url)) if f.where == "state"]
        assert [f for f in findings if f.startswith(expected)], findings
        engine_for(url).dispose()
