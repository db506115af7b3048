"""Engines for the customer warehouse and loyalflow's state database, and batched reads by customer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from loyalflow.errors import DatabaseError

CUSTOMER_COLUMNS = (
    "customer_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "persona",
    "created_at",
)
ID_BATCH = 900  # stays under SQLite's bound-parameter limit


DATABASE_SETTINGS = "LOYALFLOW_WAREHOUSE_URL, LOYALFLOW_STATE_URL, --warehouse or LOYALFLOW_WAREHOUSE_CONN_ID"


def _shown(url: str) -> str:
    """The URL without its password."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class DatabaseUnreachable(DatabaseError, sa.exc.OperationalError):
    """No connection could be opened: one line for the user, still an ``OperationalError`` for code
    that catches SQLAlchemy's errors (``orig`` is the driver's exception)."""

    def __init__(self, message: str, orig: BaseException) -> None:
        sa.exc.OperationalError.__init__(self, None, None, orig)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.message, self.orig)


def _cannot_connect(ctx: sa.engine.ExceptionContext) -> None:
    """Opening a connection failed (not a statement, not a pre-ping): one line naming the database."""
    if ctx.connection is None and not ctx.is_pre_ping and ctx.engine is not None:
        raise DatabaseUnreachable(
            f"cannot connect to database {ctx.engine.url.render_as_string(hide_password=True)}: "
            f"{_first_line(ctx.original_exception)} (check {DATABASE_SETTINGS})",
            ctx.original_exception,
        )


def _session_in_utc(dbapi_conn: Any, _record: Any) -> None:
    """loyalflow binds naive UTC moments: a PostgreSQL session must read them, and show timestamptz, in UTC
    whatever the server's or role's default time zone (a session setting: a read-only role may set it)."""
    with dbapi_conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    dbapi_conn.commit()  # outside any transaction, so a later rollback keeps it


@lru_cache(maxsize=8)
def engine_for(url: str) -> sa.Engine:
    """A pooled engine per URL (SQLite gets a busy timeout so concurrent tasks wait, not fail).

    A malformed URL, a missing driver, or a database that cannot be reached when the first connection
    opens is a one-line :class:`~loyalflow.errors.DatabaseError` (the URL shown without its password).
    """
    try:
        if url.startswith("sqlite"):
            parsed = sa.engine.make_url(url)
            database = parsed.database
            if database and database != ":memory:" and parsed.query.get("uri") != "true":
                Path(database).parent.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no out/ yet
            engine = sa.create_engine(url, connect_args={"timeout": 60})
        elif url.startswith("postgresql+psycopg2") or url.startswith("postgresql:"):
            # psycopg2, the driver installed (SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3):
            # batched UPDATEs too (ledger results), not one round trip per row
            parsed = sa.engine.make_url(url).set(drivername="postgresql+psycopg2")
            engine = sa.create_engine(parsed, pool_pre_ping=True, executemany_mode="values_plus_batch")
            sa.event.listen(engine, "connect", _session_in_utc)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
            if engine.dialect.name == "postgresql":
                sa.event.listen(engine, "connect", _session_in_utc)
    except (sa.exc.ArgumentError, ImportError, OSError) as exc:
        raise DatabaseError(
            f"cannot use database {_shown(url)}: {_first_line(exc)} (check {DATABASE_SETTINGS})"
        ) from None
    sa.event.listen(engine, "handle_error", _cannot_connect)
    return engine


def _by_ids(table: str, columns: str, column: str = "customer_id", where: str = "") -> sa.TextClause:
    # table, columns and where are loyalflow's own constants (contract tables), never input; ids are bound
    stmt = sa.text(f"SELECT {columns} FROM {table} WHERE {column} IN :ids{where}")  # noqa: S608
    return stmt.bindparams(sa.bindparam("ids", expanding=True))


_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # positional placeholders by paramstyle


def select_in(
    conn: sa.Connection,
    table: sa.Table | str,
    columns: str,
    column: str,
    values: list[Any],
    where: str = "",
) -> tuple[list[str], list[Sequence[Any]]]:
    """``SELECT columns FROM table WHERE column IN values [AND where]`` (one batch, at most ``ID_BATCH``
    values): the column names and the driver's rows, without SQLAlchemy's result processing (so for
    columns whose driver values are what the caller wants: ids, strings; else see :func:`typed`).
    ``table`` is one of loyalflow's tables or a contract table's name, ``columns`` and ``where`` SQL
    written by loyalflow, never input; the values are bound.

    With a positional driver (sqlite3, psycopg2) the ``IN`` list is written out and run on the driver's
    cursor: SQLAlchemy renders an expanding ``IN`` of 900 binds anew on every execution and wraps every
    row, which together cost more than the query. A driver error is raised as SQLAlchemy's, as
    ``conn.execute`` would."""
    if isinstance(table, sa.Table):
        table = conn.dialect.identifier_preparer.format_table(table)
    marker = _MARKERS.get(conn.dialect.paramstyle)
    where = f" AND {where}" if where else ""
    if marker is None or not values:
        result = conn.execute(_by_ids(table, columns, column, where), {"ids": values})
        return list(result.keys()), list(result.tuples())
    sql = f"SELECT {columns} FROM {table} WHERE {column} IN ({', '.join([marker] * len(values))}){where}"  # noqa: S608
    params = tuple(values)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return [d[0] for d in cursor.description], list(cursor.fetchall())
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


def typed(
    conn: sa.Connection, columns: Sequence[sa.ColumnElement[Any]], rows: list[Sequence[Any]]
) -> list[tuple]:
    """Driver rows of ``columns`` (as :func:`select_in` returns them) as SQLAlchemy would return them:
    each value through its column type's result processor (SQLite keeps dates as text)."""
    dialect = conn.dialect
    processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
    if not any(processors):
        return [tuple(row) for row in rows]
    return [tuple(p(v) if p else v for p, v in zip(processors, row, strict=True)) for row in rows]


def having_rows(conn: sa.Connection, table: sa.Table, column: str, values: list[Any]) -> list[Any]:
    """The ``values`` (one batch) that ``table`` has a row for in ``column``: a raw lookup before a typed
    query of a table most customers have no row in (loyalflow's consent changes, answers)."""
    quoted = conn.dialect.identifier_preparer.quote(column)
    return [row[0] for row in select_in(conn, table, f"DISTINCT {quoted}", quoted, values)[1]]


def read_by_ids(engine: sa.Engine, table: str, ids: list[str], columns: str = "*") -> pd.DataFrame:
    """Rows of ``table`` whose customer_id is in ``ids`` (batched bound parameters)."""
    frames: list[pd.DataFrame] = []
    stmt = _by_ids(table, columns)
    with engine.connect() as conn:
        for start in range(0, len(ids), ID_BATCH):
            frames.append(pd.read_sql_query(stmt, conn, params={"ids": ids[start : start + ID_BATCH]}))
    if not frames:
        with engine.connect() as conn:
            empty = sa.text(f"SELECT {columns} FROM {table} WHERE 1=0")  # noqa: S608 - constants, as above
            return pd.read_sql_query(empty, conn)
    return pd.concat(frames, ignore_index=True)


def rows_by_ids(engine: sa.Engine, table: str, ids: list[str], columns: str) -> list[Sequence[Any]]:
    """Like :func:`read_by_ids`, as the driver's rows (no DataFrame: for lookups done row by row)."""
    out: list[Sequence[Any]] = []
    with engine.connect() as conn:
        for start in range(0, len(ids), ID_BATCH):
            out.extend(select_in(conn, table, columns, "customer_id", ids[start : start + ID_BATCH])[1])
    return out


def dicts_by_ids(
    engine: sa.Engine, table: str, ids: list[str], columns: str = "*"
) -> tuple[list[str], list[dict[str, Any]]]:
    """Like :func:`read_by_ids`, as (column names, one dict per row) with the driver's values (NULL is
    ``None``), without a DataFrame."""
    names: list[str] = []
    out: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for start in range(0, len(ids), ID_BATCH) or [0]:  # no ids: one empty query still names columns
            names, rows = select_in(conn, table, columns, "customer_id", ids[start : start + ID_BATCH])
            out.extend([dict(zip(names, row, strict=True)) for row in rows])
    return names, out


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts with missing values as ``None`` (Python scalars, Timestamps for times)."""
    columns = [str(c) for c in frame.columns]
    values = [frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in frame.columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
