"""Versioned migrations of loyalflow's own tables: Alembic, configured in code (no alembic.ini).

Revisions live in ``migrations/versions``; the applied one is kept in ``loyalflow_alembic_version``, so
it never meets Airflow's ``alembic_version`` when the state shares Airflow's or the warehouse's
database. ``ensure_schema`` is what the stages call: at head it costs one query per engine URL and
process; otherwise it runs ``upgrade``. That serialises concurrent callers (threads: a lock; processes:
a PostgreSQL advisory transaction lock, or ``BEGIN IMMEDIATE`` on SQLite) and adopts a database of the
release before versioning (its tables, no version table): it completes it to the baseline revision and
stamps that, then upgrades as usual.

A new revision: change ``tables.py``, then against a database at head::

    from alembic import command
    from loyalflow.state.migrate import config
    with engine.connect() as conn:
        command.revision(config(conn), "what changed", autogenerate=True, rev_id="0003")

review the file (write it out explicitly, never from the models) and bump ``HEAD``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa

from loyalflow.errors import LoyalflowError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "loyalflow_alembic_version"
PREFIX = "loyalflow_"
BASELINE = "0001"  # the schema of the last release before versioned migrations
HEAD = "0003"  # the newest revision in migrations/versions (a test keeps the two in step)
LOCK_KEY = 0x6C6F79616C666C6F  # "loyalflo": one PostgreSQL advisory lock for every upgrade
LEGACY_MARKER = "loyalflow_ledger"  # present in every database the previous releases created

_at_head: set[str] = set()  # engine URLs known to be at HEAD in this process
# Alembic's ``context`` and ``op`` are module-wide proxies: one migration at a time per process, even on
# different databases. Taken before the database lock, so the order is always the same.
_in_process = threading.Lock()


class Upgrade(NamedTuple):
    """What ``upgrade`` did: the revision before (None: unversioned) and after, and whether it adopted
    the tables of the release before versioning."""

    before: str | None
    after: str | None
    adopted: bool = False


def config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config for the migrations folder, running on ``connection`` when given."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Autogenerate reflects only loyalflow's tables (and their columns, indexes and constraints)."""
    if type_ == "schema":
        return True
    table = name if type_ == "table" else parent_names.get("table_name")
    return bool(table) and str(table).startswith(PREFIX)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Autogenerate compares only loyalflow's tables: the warehouse's never show up as drops."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return bool(table) and str(table).startswith(PREFIX)


def ensure_schema(engine: sa.Engine) -> None:
    """Bring loyalflow's tables to the newest revision; cheap when they already are (the common case).

    Safe from concurrent tasks: ``upgrade`` serialises them. On databases without a PostgreSQL-style
    lock, a lost race (the other caller created a table first) is retried once.
    """
    key = engine.url.render_as_string(hide_password=True)  # search_path and the like are part of it
    if key in _at_head:
        return
    if _stored_revisions(engine) != {HEAD}:
        for attempt in range(2):
            try:
                upgrade(engine)
                break
            except (sa.exc.OperationalError, sa.exc.IntegrityError):
                if attempt or engine.dialect.name == "postgresql":
                    raise
    if not _in_memory(engine.url):  # every engine on sqlite:// is a database of its own
        _at_head.add(key)


def clear_cache() -> None:
    """Forget which databases were at head (tests; a process that recreated a database)."""
    _at_head.clear()


def upgrade(engine: sa.Engine, revision: str = "head") -> Upgrade:
    """Upgrade loyalflow's tables to ``revision`` under the upgrade lock, adopting an unversioned
    database of the previous release first. Touches only ``loyalflow_*`` tables."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    with _locked(engine) as conn:
        before = _revision(conn)
        adopted = before is None and sa.inspect(conn).has_table(LEGACY_MARKER)
        if adopted:
            _adopt(conn)
        elif before is not None:
            try:
                ScriptDirectory.from_config(config()).get_revision(before)
            except CommandError:
                raise LoyalflowError(
                    f"the state database is at revision {before}, which this loyalflow does not know "
                    f"(its newest is {HEAD}): it was upgraded by a newer loyalflow; upgrade this one"
                ) from None
        command.upgrade(config(conn), revision)
        after = _revision(conn)
    return Upgrade(before, after, adopted)


def current(engine: sa.Engine) -> str | None:
    """The revision the state database is at (None: unversioned or empty)."""
    with engine.connect() as conn:
        return _revision(conn)


def _stored_revisions(engine: sa.Engine) -> set[str] | None:
    """The version table's rows in one query; None when there is no version table."""
    try:
        with engine.connect() as conn:
            read = sa.text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 - a constant table name
            return {row[0] for row in conn.execute(read)}
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return None


def _in_memory(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


@contextmanager
def _locked(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction that only one upgrader at a time holds; committed when the block succeeds."""
    with _in_process, engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now, and transactional DDL
        yield conn
        conn.commit()


def _revision(conn: sa.Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _adopt(conn: sa.Connection) -> None:
    """Complete an unversioned database to the baseline, then stamp it.

    Like the previous releases' ``ensure_schema`` did: create missing tables and add missing nullable
    columns (and missing indexes). A missing NOT NULL column cannot be filled in for existing rows.
    """
    from alembic import command
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    ops = Operations(MigrationContext.configure(conn))
    inspector = sa.inspect(conn)
    for table in _baseline_tables(conn.dialect):
        if not inspector.has_table(table.name):
            table.create(conn)
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise LoyalflowError(
                    f"{table.name} lacks the NOT NULL column {column.name}: add it by hand, then rerun "
                    "`loyalflow db upgrade`"
                )
            ops.add_column(table.name, sa.Column(column.name, column.type))
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(conn)
    command.stamp(config(conn), BASELINE)


def _baseline_tables(dialect: sa.Dialect) -> list[sa.Table]:
    """The tables the baseline migration creates, read by running it offline and recording them."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config()).get_revision(BASELINE)
    if script is None:
        raise RuntimeError(f"migration {BASELINE} is missing from the package")
    ctx = MigrationContext.configure(dialect=dialect, opts={"as_sql": True, "output_buffer": io.StringIO()})
    tables: list[sa.Table] = []
    ctx.impl.create_table = lambda table, **kw: tables.append(table)  # type: ignore[method-assign]
    with Operations.context(ctx):
        script.module.upgrade()
    return tables
