"""Bulk writes into loyalflow's tables: PostgreSQL ``COPY`` through psycopg2, else one ``executemany``
(on SQLite through the driver's cursor, see :func:`execute_many`).

Writes that must run as SQL over many rows (a claim's ``INSERT ... ON CONFLICT``, an ``UPDATE`` per key)
stage the rows on PostgreSQL first: ``COPY`` into a temporary table, then one statement reads it
(see :func:`stage`)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from itertools import repeat
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler


def _field(value: Any) -> str:
    """One CSV field for COPY (NULL is \\N): strings are always quoted, so no string reads as NULL."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace('"', '""') + '"'


def _processed(process: Callable[[Any], Any], values: list[Any]) -> list[Any]:
    """``process`` applied to each value, once per distinct value (dates and times repeat a lot)."""
    try:
        done = {value: process(value) for value in set(values)}
    except TypeError:  # an unhashable value (a JSON document): no memo
        return [process(value) for value in values]
    return [done[value] for value in values]


def execute_many(conn: sa.Connection, stmt: sa.Insert | sa.Update, rows: list[dict[str, Any]]) -> int:
    """Run an INSERT or UPDATE once per row (dicts with the same keys) inside the caller's transaction;
    return the number of rows it affected.

    On SQLite the statement is compiled once and the rows go to the driver's ``executemany`` as
    positional tuples, each value through its column type's bind processor as SQLAlchemy would (so
    the stored values are the same), computed once per distinct value of a column. Statements this
    path cannot run exactly (Python-side column defaults, RETURNING) and other databases go through
    ``conn.execute`` (psycopg2's batched executemany).
    """
    if not rows:
        return 0
    dialect = conn.dialect
    if dialect.name != "sqlite" or dialect.driver != "pysqlite":
        return int(conn.execute(stmt, rows).rowcount)
    keys = list(rows[0])
    compiled = cast(SQLCompiler, stmt.compile(dialect=dialect, column_keys=keys))
    positions = compiled.positiontup
    if (
        not positions
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.effective_returning
        or compiled.escaped_bind_names
        or compiled.post_compile_params
        or not all(callable(p) for p in compiled._bind_processors.values())
    ):
        return int(conn.execute(stmt, rows).rowcount)
    present = set(keys)
    processors = cast(dict[str, Callable[[Any], Any]], compiled._bind_processors)
    columns: list[Any] = []
    for name in positions:
        process = processors.get(name)
        if name in present:
            values = [row[name] for row in rows]
            columns.append(_processed(process, values) if process else values)
        else:  # a value given in the statement itself (``.values(updated_at=now)``)
            value = compiled.binds[name].effective_value
            columns.append(repeat(process(value) if process else value, len(rows)))
    params = list(zip(*columns, strict=True))
    if not conn.in_transaction():
        conn.begin()  # as conn.execute would (autobegin)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(compiled.string, params)
        return int(cursor.rowcount)
    except dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(compiled.string, params, exc, dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


def _copies(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2"


def _fields(values: list[Any]) -> list[str]:
    """Each value as a CSV field, formatted once per distinct value (dates, runs and statuses repeat)."""
    try:
        distinct = set(values)
    except TypeError:  # an unhashable value (a JSON document): no memo
        return [_field(value) for value in values]
    if len(set(map(type, values)) - {str, type(None)}) > 1:
        return [_field(value) for value in values]  # equal values of two types (True == 1 == 1.0)
    done = {value: _field(value) for value in distinct}
    return [done[value] for value in values]


def _csv(rows: list[dict[str, Any]], names: list[str]) -> io.StringIO:
    """``rows`` as CSV text for COPY, the columns in ``names`` order."""
    columns = [_fields([row[name] for row in rows]) for name in names]
    buf = io.StringIO()
    buf.writelines(",".join(fields) + "\n" for fields in zip(*columns, strict=True))
    buf.seek(0)
    return buf


def insert_many(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` inside the caller's transaction."""
    if not rows:
        return
    if not _copies(conn):
        execute_many(conn, table.insert(), rows)
        return
    names = list(rows[0])
    copy_csv(conn, table, names, _csv(rows, names))


def can_stage(conn: sa.Connection) -> bool:
    """True when :func:`stage` works on this connection: psycopg2, and a role that may create temporary
    tables (``TEMP`` on the database, which PostgreSQL grants to every role unless revoked; asked once
    per connection)."""
    if not _copies(conn):
        return False
    allowed = conn.info.get("loyalflow_temp")
    if allowed is None:
        query = "SELECT has_database_privilege(current_database(), 'TEMP')"
        allowed = conn.info["loyalflow_temp"] = bool(conn.exec_driver_sql(query).scalar())
    return bool(allowed)


def stage(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> sa.TableClause:
    """``rows`` (dicts with the same keys, columns of ``table``) copied into a temporary table with those
    columns and types, dropped at the end of the caller's transaction (only where :func:`can_stage`).

    One ``COPY`` and one set-based statement over the staged rows cost PostgreSQL and the client far less
    than a statement per row or a many-row ``VALUES`` list (a claim and a result update per message:
    100,000 customers 12.8 s -> 9.0 s).
    """
    names = list(rows[0])
    staged = sa.table(f"loyalflow_stage_{table.name}", *(sa.column(n, table.c[n].type) for n in names))
    preparer = conn.dialect.identifier_preparer
    columns = ", ".join(preparer.quote(n) for n in names)
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {preparer.quote(staged.name)} ON COMMIT DROP AS "  # noqa: S608
        f"SELECT {columns} FROM {preparer.format_table(table)} WITH NO DATA"
    )
    copy_csv(conn, staged, names, _csv(rows, names))
    return staged


def copy_csv(conn: sa.Connection, table: sa.TableClause, columns: list[str], csv: io.StringIO) -> None:
    """``COPY table (columns) FROM STDIN`` of CSV text whose NULL is ``\\N`` (psycopg2 connections only)."""
    preparer = conn.dialect.identifier_preparer
    names = ", ".join(preparer.quote(name) for name in columns)
    sql = f"COPY {preparer.format_table(table)} ({names}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(sql, csv)
    finally:
        cursor.close()
