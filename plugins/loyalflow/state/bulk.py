"""Bulk inserts into loyalflow's tables: PostgreSQL ``COPY`` through psycopg2, else one ``executemany``."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import sqlalchemy as sa


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


def insert_many(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` inside the caller's transaction."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg2":
        conn.execute(table.insert(), rows)
        return
    names = list(rows[0])
    buf = io.StringIO()
    buf.writelines(",".join(_field(row[name]) for name in names) + "\n" for row in rows)
    buf.seek(0)
    copy_csv(conn, table, names, buf)


def copy_csv(conn: sa.Connection, table: sa.Table, columns: list[str], csv: io.StringIO) -> None:
    """``COPY table (columns) FROM STDIN`` of CSV text whose NULL is ``\\N`` (psycopg2 connections only)."""
    preparer = conn.dialect.identifier_preparer
    names = ", ".join(preparer.quote(name) for name in columns)
    sql = f"COPY {preparer.format_table(table)} ({names}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(sql, csv)
    finally:
        cursor.close()
