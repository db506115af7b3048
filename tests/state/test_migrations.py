"""The state schema under Alembic: previous-release databases upgraded in place, the warehouse untouched."""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from loyalflow.errors import LoyalflowError
from loyalflow.ops.cli import app
from loyalflow.state import HEAD, current, ensure_schema, key_formats, metadata, migrate, upgrade
from tests.state import previous_release as old

NEW_TABLES = {"loyalflow_consent", "loyalflow_entries", "loyalflow_activations", "loyalflow_key_formats"}
T0 = dt.datetime(2026, 11, 20, 9, 30)
D0 = dt.date(2026, 11, 20)

# One row for every table of the previous release.
OLD_ROWS: dict[str, list[dict[str, Any]]] = {
    "loyalflow_ledger": [
        {
            "idempotency_key": "k1",
            "campaign": "thank_you",
            "step": "thanks",
            "customer_id": "C1",
            "anchor_id": "O1",
            "channel": "email",
            "category": "relationship",
            "status": "scheduled",
            "provider": "outbox",
            "provider_message_id": None,
            "error": None,
            "run_id": "r1",
            "as_of": D0,
            "send_at": T0,
            "payload": '{"subject": "Thank you"}',
            "claimed_at": T0,
            "updated_at": T0,
        }
    ],
    "loyalflow_decisions": [
        {
            "id": 1,
            "run_id": "r1",
            "as_of": D0,
            "campaign": "thank_you",
            "step": "thanks",
            "customer_id": "C1",
            "anchor_id": "O1",
            "channel": "email",
            "outcome": "sent",
            "reason": "sent",
            "detail": None,
            "idempotency_key": "k1",
            "decided_at": T0,
        }
    ],
    "loyalflow_suppressions": [
        {
            "id": 1,
            "address": "a@example.com",
            "channel": "email",
            "scope": "all",
            "reason": "unsubscribed",
            "source": "link",
            "customer_id": "C2",
            "created_at": T0,
        }
    ],
    "loyalflow_responses": [
        {
            "id": 1,
            "customer_id": "C3",
            "campaign": "winback",
            "answer": "later",
            "channel": "sms",
            "source": "sms",
            "snooze_until": D0,
            "churn_type": "decreased_spend",
            "received_at": T0,
        }
    ],
    "loyalflow_referral_codes": [{"customer_id": "C1", "code": "REF-C1", "created_at": T0}],
    "loyalflow_delivery_events": [
        {
            "provider": "sendgrid",
            "event_id": "ev1",
            "event_type": "delivered",
            "idempotency_key": "k1",
            "provider_message_id": "m1",
            "customer_id": "C1",
            "occurred_at": T0,
        }
    ],
    "loyalflow_cap_reservations": [
        {
            "idempotency_key": "k1",
            "customer_id": "C1",
            "day": D0,
            "campaign": "thank_you",
            "priority": 10,
            "status": "sent",
            "detail": None,
            "updated_at": T0,
        }
    ],
}
CUSTOMERS = sa.Table(  # a warehouse table next to the state tables
    "customers",
    sa.MetaData(),
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("created_at", sa.DateTime),
)
CUSTOMER_ROWS = [
    {"customer_id": "C1", "email": "c1@example.com", "created_at": T0},
    {"customer_id": "C2", "email": None, "created_at": T0},
]


@pytest.fixture(autouse=True)
def _forget_heads() -> Iterator[None]:
    migrate.clear_cache()
    yield
    migrate.clear_cache()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh state database: SQLite file, then a PostgreSQL schema (selected by search_path)."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(url)
    yield eng
    eng.dispose()


def rows(engine: sa.Engine, table: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(sa.select(table).order_by(*table.primary_key.columns))
        return [dict(r._mapping) for r in result]


def columns(engine: sa.Engine, name: str) -> list[tuple[str, str, bool]]:
    return [(c["name"], str(c["type"]), bool(c["nullable"])) for c in sa.inspect(engine).get_columns(name)]


def version_rows(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {migrate.VERSION_TABLE}"))]


def schema_diff(engine: sa.Engine, target: sa.MetaData = metadata, filtered: bool = True) -> list[Any]:
    """What autogenerate would change to make the database match ``target``."""
    opts: dict[str, Any] = {"compare_type": True, "version_table": migrate.VERSION_TABLE}
    if filtered:
        opts |= {"include_name": migrate.include_name, "include_object": migrate.include_object}
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts=opts), target)


def previous_release_database(engine: sa.Engine) -> None:
    """What the release before versioning left: its tables with a row each, a warehouse table."""
    old.ensure_schema(engine)
    CUSTOMERS.create(engine)
    with engine.begin() as conn:
        for table in old.metadata.sorted_tables:
            conn.execute(table.insert(), OLD_ROWS[table.name])
        conn.execute(CUSTOMERS.insert(), CUSTOMER_ROWS)


def test_head_is_the_newest_revision() -> None:
    script = ScriptDirectory.from_config(migrate.config())
    assert script.get_heads() == [HEAD]
    assert [s.revision for s in script.walk_revisions("base", "heads")][::-1] == ["0001", "0002", "0003"]
    assert script.get_revision(migrate.BASELINE).down_revision is None  # type: ignore[union-attr]


def test_previous_release_database_upgrades_in_place(engine: sa.Engine) -> None:
    previous_release_database(engine)
    assert sa.inspect(engine).get_table_names() and current(engine) is None
    customers_before = columns(engine, "customers")

    ensure_schema(engine)

    for table in old.metadata.sorted_tables:
        assert rows(engine, table) == OLD_ROWS[table.name], table.name
    assert NEW_TABLES <= set(sa.inspect(engine).get_table_names())
    with engine.connect() as conn:  # the campaign that sent keeps its hashed keys (migration 0003)
        assert conn.execute(sa.select(key_formats.c.campaign, key_formats.c.format)).all() == [
            ("thank_you", "hashed")
        ]
    assert version_rows(engine) == [HEAD]
    assert current(engine) == HEAD
    assert schema_diff(engine) == []  # the tables are exactly the models
    assert columns(engine, "customers") == customers_before
    assert rows(engine, CUSTOMERS) == CUSTOMER_ROWS


def test_a_fresh_database_is_the_models_and_the_warehouse_is_untouched(engine: sa.Engine) -> None:
    CUSTOMERS.create(engine)
    with engine.begin() as conn:
        conn.execute(CUSTOMERS.insert(), CUSTOMER_ROWS)
    before = columns(engine, "customers")

    done = upgrade(engine)

    assert done == migrate.Upgrade(None, HEAD, adopted=False)
    assert columns(engine, "customers") == before and rows(engine, CUSTOMERS) == CUSTOMER_ROWS
    assert schema_diff(engine) == []
    # Without the filter autogenerate would drop the warehouse's table; with it, it never sees it.
    assert [d[0] for d in schema_diff(engine, filtered=False)] == ["remove_table"]
    tables = set(sa.inspect(engine).get_table_names())
    assert tables == {t.name for t in metadata.sorted_tables} | {"customers", migrate.VERSION_TABLE}


def test_baseline_is_exactly_the_previous_release(engine: sa.Engine) -> None:
    upgrade(engine, migrate.BASELINE)
    assert current(engine) == migrate.BASELINE
    assert schema_diff(engine, old.metadata) == []


def test_ensure_schema_twice_is_a_no_op(engine: sa.Engine) -> None:
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    ensure_schema(engine)
    tables = sorted(sa.inspect(engine).get_table_names())
    assert statements

    statements.clear()
    ensure_schema(engine)
    assert statements == []  # known to be at head in this process: nothing at all

    migrate.clear_cache()  # another process: one query of the version table, no Alembic
    ensure_schema(engine)
    assert statements == [f"SELECT version_num FROM {migrate.VERSION_TABLE}"]
    assert sorted(sa.inspect(engine).get_table_names()) == tables
    assert version_rows(engine) == [HEAD]
    assert upgrade(engine) == migrate.Upgrade(HEAD, HEAD)


@pytest.mark.parametrize("callers", [2, 4])
def test_concurrent_callers_on_a_fresh_database_all_succeed(url: str, callers: int) -> None:
    engines = [sa.create_engine(url) for _ in range(callers)]
    start = threading.Barrier(callers)
    errors: list[BaseException] = []

    def call(engine: sa.Engine) -> None:
        start.wait()
        try:
            ensure_schema(engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        assert version_rows(engines[0]) == [HEAD]
        assert schema_diff(engines[0]) == []
    finally:
        for e in engines:
            e.dispose()


CALLER = """
import sys, time
import sqlalchemy as sa
import alembic.command, alembic.operations, alembic.script  # loaded before the start line
from loyalflow.state import ensure_schema
engine = sa.create_engine(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
ensure_schema(engine)
"""


def test_concurrent_processes_on_a_fresh_database_all_succeed(url: str) -> None:
    """Airflow's case: tasks are processes, so only the database's own lock can serialise them."""
    start = time.time() + 4
    procs = [
        subprocess.Popen([sys.executable, "-c", CALLER, url, str(start)], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        failures = [err for p in procs if (err := p.communicate(timeout=90)[1]) and p.returncode]
    finally:
        for p in procs:
            p.kill()
    assert failures == []
    engine = sa.create_engine(url)
    try:
        assert version_rows(engine) == [HEAD]
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_version_table_lives_in_the_search_path_schema(pg_url: str) -> None:
    schema = re.search(r"search_path%3D(\w+)", pg_url).group(1)  # type: ignore[union-attr]
    engine = sa.create_engine(pg_url)
    try:
        ensure_schema(engine)
        with engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = :s AND table_name = :t"
                ),
                {"s": schema, "t": migrate.VERSION_TABLE},
            )
            assert found.scalar() == 1
            resolved = conn.execute(  # the schema the unqualified name the migrations use resolves to
                sa.text(
                    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.oid = to_regclass(:t)"
                ),
                {"t": migrate.VERSION_TABLE},
            )
            assert resolved.scalar() == schema
        assert set(sa.inspect(engine).get_table_names(schema=schema)) >= NEW_TABLES
    finally:
        engine.dispose()


def test_older_partial_schema_is_completed_before_stamping(engine: sa.Engine) -> None:
    """A release older still: the ledger without ``payload`` (or an index), no cap reservations."""
    old.ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE loyalflow_cap_reservations"))
        conn.execute(sa.text("DROP INDEX ix_loyalflow_ledger_customer"))
        conn.execute(sa.text("ALTER TABLE loyalflow_ledger DROP COLUMN payload"))
        row = {k: v for k, v in OLD_ROWS["loyalflow_ledger"][0].items() if k != "payload"}
        conn.execute(sa.table("loyalflow_ledger", *[sa.column(k) for k in row]).insert(), [row])

    done = upgrade(engine)

    assert done == migrate.Upgrade(None, HEAD, adopted=True)
    assert rows(engine, old.ledger) == [row | {"payload": None}]
    assert schema_diff(engine) == []  # the column, the index and the table are back


def test_a_missing_not_null_column_is_reported_and_nothing_changes(engine: sa.Engine) -> None:
    old.ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE loyalflow_decisions"))
        conn.execute(sa.text("ALTER TABLE loyalflow_ledger DROP COLUMN payload"))
        conn.execute(sa.text("ALTER TABLE loyalflow_cap_reservations DROP COLUMN priority"))
    with pytest.raises(LoyalflowError, match="loyalflow_cap_reservations lacks the NOT NULL column priority"):
        ensure_schema(engine)
    # One transaction: the table created and the column added before the error are rolled back too.
    assert current(engine) is None
    assert "loyalflow_decisions" not in sa.inspect(engine).get_table_names()
    assert "payload" not in {c["name"] for c in sa.inspect(engine).get_columns("loyalflow_ledger")}


def test_a_revision_from_a_newer_loyalflow_is_an_error(engine: sa.Engine) -> None:
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0099'"))
    migrate.clear_cache()
    with pytest.raises(LoyalflowError, match="revision 0099, which this loyalflow does not know"):
        ensure_schema(engine)


def test_migrations_touch_only_loyalflow_tables() -> None:
    """Every statement of every revision, rendered offline, names a loyalflow_* table."""
    cfg = migrate.config()
    cfg.set_main_option("sqlalchemy.url", "postgresql://")
    cfg.output_buffer = io.StringIO()
    command.upgrade(cfg, "head", sql=True)
    sql = cfg.output_buffer.getvalue()
    pattern = r"\b(?:TABLE|INTO|UPDATE|ON|INDEX)\s+(\w+)"
    names = set(re.findall(pattern, sql))
    assert "loyalflow_ledger" in names and "loyalflow_activations" in names
    indexes = set(re.findall(r"CREATE (?:UNIQUE )?INDEX (\w+)", sql))
    assert {n for n in names - indexes if not n.startswith("loyalflow_")} == set(), sql


def test_db_upgrade_and_current_on_the_command_line(url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["db", "upgrade", "--state", url])
    assert first.exit_code == 0, first.output
    assert "before: none" in first.output and f"after:  {HEAD} (head)" in first.output
    again = runner.invoke(app, ["db", "upgrade", "--warehouse", url])  # state defaults to the warehouse
    assert again.exit_code == 0, again.output
    assert f"before: {HEAD} (head)" in again.output and f"after:  {HEAD} (head)" in again.output
    shown = runner.invoke(app, ["db", "current", "--state", url])
    assert shown.exit_code == 0 and f"current: {HEAD} (head)" in shown.output, shown.output


def test_db_upgrade_says_when_it_adopted_a_previous_release(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    previous_release_database(engine)
    result = CliRunner().invoke(app, ["db", "upgrade", "--state", sqlite_url])
    assert result.exit_code == 0, result.output
    assert "before: none (unversioned tables of the previous release)" in result.output
    assert f"after:  {HEAD} (head)" in result.output
    assert rows(engine, old.ledger) == OLD_ROWS["loyalflow_ledger"]
    engine.dispose()
