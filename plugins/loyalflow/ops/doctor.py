"""``loyalflow doctor``: a customer's warehouse checked against loyalflow's contract before any campaign runs.

:func:`check` reads only the catalogue (SQLAlchemy's inspector) and small samples (``LIMIT``); it never
scans a whole table. Its one write is a probe table created and dropped in the state database.
"""

from __future__ import annotations

import datetime as dt
import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
import yaml

from loyalflow.home import PROJECT_DIR
from loyalflow.spec import campaign_files
from loyalflow.state import bulk
from loyalflow.state.migrate import HEAD, VERSION_TABLE
from loyalflow.state.tables import key_formats
from loyalflow.warehouse import CUSTOMER_COLUMNS

Level = Literal["ok", "warn", "error"]
LOOKED_UP_BY_CUSTOMER = ("customers", "channel_preferences")  # read per audience chunk

CONTRACT: dict[str, tuple[str, ...]] = {
    "customers": CUSTOMER_COLUMNS,
    "orders": ("order_id", "customer_id", "ordered_at", "total", "status", "product", "referred_by"),
    "channel_preferences": ("customer_id", "channel", "opted_in", "source", "consented_at"),
    "events": ("customer_id", "event_type", "occurred_at", "content_id"),
}
# Read for every candidate of every campaign (decide/candidates.py), whatever the segment SQL says.
EVERY_CAMPAIGN = frozenset({"customers", "channel_preferences"})
ID_COLUMNS = frozenset(
    {
        ("customers", "customer_id"),
        ("orders", "order_id"),
        ("orders", "customer_id"),
        ("orders", "referred_by"),
        ("channel_preferences", "customer_id"),
        ("events", "customer_id"),
    }
)
TIME_COLUMNS = frozenset(
    {
        ("customers", "created_at"),
        ("orders", "ordered_at"),
        ("channel_preferences", "consented_at"),
        ("events", "occurred_at"),
    }
)
CHANNELS = ("email", "sms", "push")
SAMPLE = 1000  # rows read per sampled column
PROBE = "loyalflow_doctor_probe"


@dataclass(frozen=True)
class Finding:
    """One result of the doctor: its level, where (table and column) and a one-line message."""

    level: Level
    table: str
    column: str | None
    message: str

    @property
    def where(self) -> str:
        """``table.column``, or the table alone."""
        return f"{self.table}.{self.column}" if self.column else self.table

    def __str__(self) -> str:
        return f"{self.level:<5}  {self.where}: {self.message}"


def failed(findings: Iterable[Finding]) -> bool:
    """True when any finding is an error (a campaign would not run, or would run wrongly)."""
    return any(f.level == "error" for f in findings)


def check(warehouse: sa.Engine, state: sa.Engine | None, campaigns_dir: Path | None = None) -> list[Finding]:
    """Every finding for ``warehouse`` and loyalflow's ``state`` database (None: the warehouse is the state).

    ``campaigns_dir`` (default: the project's) tells which campaigns read a column, for the message and
    the level of a missing one.
    """
    out: list[Finding] = []
    try:
        with warehouse.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        reason = f"cannot connect to {_url(warehouse)}: {_reason(exc)}"
        out.append(Finding("error", "warehouse", None, reason))
    else:
        out.append(Finding("ok", "warehouse", None, f"connected to {_url(warehouse)}"))
        out.extend(_warehouse(warehouse, segments(campaigns_dir or PROJECT_DIR / "campaigns")))
    out.extend(_state(warehouse, state))
    return out


# --- the contract tables ---------------------------------------------------------------------------


def segments(campaigns_dir: Path) -> dict[str, str]:
    """Segment SQL by campaign id, lower-cased and without comments (to tell who reads what)."""
    out: dict[str, str] = {}
    for path in campaign_files(campaigns_dir):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("id") and data.get("segment"):
                sql = (path.parent / str(data["segment"])).read_text(encoding="utf-8")
                out[str(data["id"])] = re.sub(r"--[^\n]*", "", sql).lower()
        except (OSError, yaml.YAMLError):
            continue  # `loyalflow validate` reports broken campaign files
    return out


def _readers(table: str, column: str | None, sqls: dict[str, str]) -> list[str] | None:
    """Campaigns whose segment reads ``table`` (and ``column``); None means every campaign."""
    if table in EVERY_CAMPAIGN:
        return None
    words = [table] + ([column] if column else [])
    return sorted(cid for cid, sql in sqls.items() if all(re.search(rf"\b{w}\b", sql) for w in words))


def _missing(table: str, column: str | None, sqls: dict[str, str]) -> Finding:
    what = "column missing" if column else "table missing"
    readers = _readers(table, column, sqls)
    if readers is None:
        return Finding("error", table, column, f"{what}; every campaign reads it")
    if readers:
        return Finding("error", table, column, f"{what}; needed by {', '.join(readers)}")
    return Finding("warn", table, column, f"{what}; no current campaign reads it, but it is in the contract")


def _warehouse(engine: sa.Engine, sqls: dict[str, str]) -> list[Finding]:
    inspector = sa.inspect(engine)
    plain = set(inspector.get_table_names())
    tables = {*plain, *inspector.get_view_names()}  # a view serves as well
    if engine.dialect.name == "postgresql":
        tables.update(inspector.get_materialized_view_names())
    out: list[Finding] = []
    for table, contract in CONTRACT.items():
        if table not in tables:
            out.append(_missing(table, None, sqls))
            continue
        try:
            with engine.connect() as conn:
                probe = f"SELECT * FROM {_q(engine, table)} LIMIT 1"  # noqa: S608 - a quoted contract table
                conn.execute(sa.text(probe)).fetchall()
        except sa.exc.DBAPIError as exc:
            reason = _reason(exc)
            hint = "; grant SELECT on it to loyalflow's user" if "permission denied" in reason.lower() else ""
            out.append(Finding("error", table, None, f"cannot read it: {reason}{hint}"))
            continue
        columns = {c["name"]: c for c in inspector.get_columns(table)}
        present = [c for c in contract if c in columns]
        summary = f"readable; {len(present)} of {len(contract)} contract columns"
        out.append(Finding("ok", table, None, summary))
        for name in contract:
            if name not in columns:
                out.append(_missing(table, name, sqls))
                continue
            kind = columns[name]["type"]
            if (table, name) in ID_COLUMNS:
                out.append(_id(engine, table, name, kind))
            elif (table, name) in TIME_COLUMNS:
                out.append(_timestamp(engine, table, name, kind))
            elif (table, name) == ("orders", "total"):
                out.append(_number(engine, table, name, kind))
            elif (table, name) == ("channel_preferences", "opted_in"):
                out.append(_boolean(engine, table, name, kind))
            elif (table, name) == ("channel_preferences", "channel"):
                out.append(_channel(engine, table, name))
        if table == "channel_preferences" and {"customer_id", "channel"} <= set(columns):
            out.append(_history(engine))
        if table in LOOKED_UP_BY_CUSTOMER and table in plain and "customer_id" in columns:
            out.extend(_customer_index(inspector, table))
    return out


def _customer_index(inspector: Any, table: str) -> list[Finding]:
    """Each audience chunk reads these tables by customer_id: without an index leading with it, every
    chunk scans the whole table (a run then costs chunks × rows)."""
    leading = [inspector.get_pk_constraint(table).get("constrained_columns") or []]
    leading += [ix.get("column_names") or [] for ix in inspector.get_indexes(table)]
    leading += [list(u.get("column_names") or []) for u in inspector.get_unique_constraints(table)]
    if any(cols and cols[0] == "customer_id" for cols in leading):
        return []
    ddl = f"CREATE INDEX ix_{table}_customer ON {table} (customer_id);"
    why = "no index leads with customer_id: every audience chunk scans the whole table"
    return [Finding("warn", table, None, f"{why}; add one: {ddl} (docs/warehouse.md)")]


def _id(engine: sa.Engine, table: str, column: str, kind: Any) -> Finding:
    name = _type_name(engine, kind)
    if isinstance(kind, sa.Float):
        return Finding("error", table, column, f"type {name} is a float; ids must be integer, text or UUID")
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Integer):
        if kind.scale:
            return Finding(
                "error", table, column, f"type {name} has a scale; ids must be integer, text or UUID"
            )
        if kind.scale is None:
            return Finding(
                "warn", table, column, f"type {name} may hold fractions; ids must be integer, text or UUID"
            )
    elif not isinstance(kind, sa.Integer | sa.String | sa.Uuid | sa.types.NullType):
        return Finding("error", table, column, f"type {name} is not an id type; use integer, text or UUID")
    if _sqlite(engine):
        values = _sample(engine, table, column)
        floats = [v for v in values if isinstance(v, float)]
        if floats:
            return Finding(
                "error",
                table,
                column,
                f"sampled values are floats (e.g. {floats[0]!r}); ids must be integer, text or UUID",
            )
        blobs = [v for v in values if isinstance(v, bytes)]
        if blobs:
            return Finding(
                "error", table, column, "sampled values are binary; ids must be integer, text or UUID"
            )
    return Finding("ok", table, column, f"id type {name}")


def _timestamp(engine: sa.Engine, table: str, column: str, kind: Any) -> Finding:
    name = _type_name(engine, kind)
    if _sqlite(engine):  # SQLite has no timestamp type: the values are ISO text (or not)
        values = _sample(engine, table, column)
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers:
            return Finding(
                "error",
                table,
                column,
                f"sampled values are numbers (e.g. {numbers[0]!r}); timestamps in SQLite must be ISO text",
            )
        bad = [v for v in values if not isinstance(v, str) or _parse(v) is None]
        if bad:
            return Finding(
                "error",
                table,
                column,
                f"{bad[0]!r} does not parse as an ISO timestamp ({len(bad)} of {len(values)} sampled values)",
            )
        zoned = sum(1 for v in values if (p := _parse(v)) is not None and p.tzinfo is not None)
        note = "with UTC offsets" if zoned == len(values) and values else "naive ones are read as UTC"
        return Finding("ok", table, column, f"ISO text timestamps ({len(values)} sampled values; {note})")
    if isinstance(kind, sa.DateTime):
        if kind.timezone:
            return Finding("ok", table, column, f"type {name} (zoned)")
        return Finding("warn", table, column, f"type {name} is naive; loyalflow treats the values as UTC")
    if isinstance(kind, sa.Date):
        return Finding("warn", table, column, f"type {name} has no time; loyalflow reads midnight UTC")
    return Finding("error", table, column, f"type {name} is not a timestamp; use timestamp or timestamptz")


def _number(engine: sa.Engine, table: str, column: str, kind: Any) -> Finding:
    name = _type_name(engine, kind)
    if _sqlite(engine):
        bad = [v for v in _sample(engine, table, column) if not isinstance(v, int | float)]
        if bad:
            return Finding("error", table, column, f"{bad[0]!r} is not a number (sampled values)")
    elif not isinstance(kind, sa.Numeric | sa.Integer):
        return Finding("error", table, column, f"type {name} is not a number; segments sum it")
    return Finding("ok", table, column, f"numeric type {name}")


def _boolean(engine: sa.Engine, table: str, column: str, kind: Any) -> Finding:
    name = _type_name(engine, kind)
    values = _sample(engine, table, column, nulls=True)
    kinds = sorted({_as_bool(v) for v in values})
    bad = [v for v in values if _as_bool(v) == "bad"]
    if bad:
        return Finding(
            "error",
            table,
            column,
            f"{bad[0]!r} is not usable as a boolean (type {name}); store "
            "true/false or 1/0: any non-empty text counts as opted in",
        )
    if "null" in kinds:
        return Finding("warn", table, column, f"type {name}; NULL values in the sample count as opted out")
    return Finding("ok", table, column, f"type {name}; sampled values are booleans")


def _channel(engine: sa.Engine, table: str, column: str) -> Finding:
    others = sorted({str(v) for v in _sample(engine, table, column)} - set(CHANNELS))
    if others:
        shown = ", ".join(repr(v) for v in others[:5]) + (" ..." if len(others) > 5 else "")
        return Finding(
            "warn",
            table,
            column,
            f"values outside {'/'.join(CHANNELS)} in the sample: {shown}; "
            "rows with them never count as consent",
        )
    return Finding("ok", table, column, f"sampled values within {'/'.join(CHANNELS)}")


def _history(engine: sa.Engine) -> Finding:
    sql = (
        "SELECT customer_id, channel FROM channel_preferences "
        "GROUP BY customer_id, channel HAVING COUNT(*) > 1 LIMIT 1"
    )
    with engine.connect() as conn:
        row = conn.execute(sa.text(sql)).first()
    if row is None:
        return Finding("ok", "channel_preferences", None, "a snapshot: one row per customer and channel")
    return Finding(
        "ok",
        "channel_preferences",
        None,
        f"a history: several rows per customer and channel (e.g. "
        f"customer {row[0]}, {row[1]}); the latest by consented_at wins",
    )


# --- loyalflow's state database ------------------------------------------------------------------


def _state(warehouse: sa.Engine, state: sa.Engine | None) -> list[Finding]:
    engine = state or warehouse
    where = "the warehouse (LOYALFLOW_STATE_URL is not set)" if state is None else _url(engine)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        if state is None:
            return []  # the warehouse error says it already
        return [Finding("error", "state", None, f"state database {where} is unreachable: {_reason(exc)}")]
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {PROBE}"))  # left by an interrupted probe
            conn.execute(sa.text(f"CREATE TABLE {PROBE} (probe INTEGER)"))
            conn.execute(sa.text(f"INSERT INTO {PROBE} (probe) VALUES (1)"))  # noqa: S608 - constant name
            conn.execute(sa.text(f"DROP TABLE {PROBE}"))
    except sa.exc.DBAPIError as exc:
        if state is None:
            message = (
                f"the state database is {where} and it is not writable ({_reason(exc)}); "
                "set LOYALFLOW_STATE_URL to a writable database for loyalflow's own tables"
            )
        else:
            message = f"state database {where} is not writable: {_reason(exc)}"
        return [Finding("error", "state", None, message)]
    if state is None:
        good = "the warehouse is the state database (LOYALFLOW_STATE_URL is not set): writable"
    else:
        good = f"state database {where} is reachable and writable"
    out = [Finding("ok", "state", None, good)]
    return [*out, _version(engine), *_key_formats(engine), *_staging(engine)]


def _staging(engine: sa.Engine) -> list[Finding]:
    """On PostgreSQL through psycopg2: may the state role stage bulk writes in temporary tables?"""
    with engine.connect() as conn:
        if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg2":
            return []
        if bulk.can_stage(conn):
            return [
                Finding("ok", "state", None, "the role may create temporary tables: ledger writes use COPY")
            ]
    message = (
        "the state role may not create temporary tables (TEMPORARY on the database), so ledger claims "
        "and results take one statement per row, a slower path (docs/deploy.md: grant TEMPORARY)"
    )
    return [Finding("warn", "state", None, message)]


def _key_formats(engine: sa.Engine) -> list[Finding]:
    """The campaigns that keep hashed idempotency keys (they sent before keys were ordered)."""
    if not sa.inspect(engine).has_table(key_formats.name):
        return []
    with engine.connect() as conn:
        hashed = list(conn.scalars(sa.select(key_formats.c.campaign).order_by(key_formats.c.campaign)))
    if not hashed:
        return []
    message = (
        f"{len(hashed)} campaign(s) keep the hashed idempotency keys they sent with before keys were "
        f"ordered (docs/architecture.md §5): {', '.join(hashed)}"
    )
    return [Finding("ok", "state", None, message)]


def _version(engine: sa.Engine) -> Finding:
    try:
        tables = sa.inspect(engine).get_table_names()
        if VERSION_TABLE in tables:
            with engine.connect() as conn:
                read = sa.text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 - constant name
                versions = [str(v) for v in conn.scalars(read)]
            shown = ", ".join(versions) or "none recorded"
            note = "the newest" if versions == [HEAD] else f"the next run upgrades it to {HEAD}"
            return Finding("ok", "state", None, f"state schema version {shown} ({VERSION_TABLE}); {note}")
    except sa.exc.DBAPIError as exc:
        return Finding("warn", "state", None, f"cannot read {VERSION_TABLE}: {_reason(exc)}")
    own = [t for t in tables if t.startswith("loyalflow_")]
    if own:
        return Finding(
            "ok",
            "state",
            None,
            f"{len(own)} loyalflow_* tables without {VERSION_TABLE} (a release before "
            f"versioned migrations); the next run adopts them and upgrades to {HEAD}",
        )
    return Finding("ok", "state", None, "no loyalflow_* tables yet; the first run creates them")


# --- helpers ---------------------------------------------------------------------------------------


def _sample(engine: sa.Engine, table: str, column: str, nulls: bool = False) -> list[Any]:
    """Raw values of ``column`` among the first :data:`SAMPLE` rows (NULLs dropped unless ``nulls``)."""
    col, tab = _q(engine, column), _q(engine, table)
    where = "" if nulls else f" WHERE s.{col} IS NOT NULL"
    sql = f"SELECT s.{col} FROM (SELECT {col} FROM {tab} LIMIT {SAMPLE}) s{where}"  # noqa: S608 - quoted names
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(sa.text(sql))]


def _parse(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _as_bool(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool) or (isinstance(value, numbers.Number) and value in (0, 1)):
        return "ok"
    return "bad"


def _sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _q(engine: sa.Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote(name)


def _type_name(engine: sa.Engine, kind: Any) -> str:
    try:
        return str(kind.compile(dialect=engine.dialect))
    except Exception:  # a type the dialect cannot render (NullType): its class name
        return type(kind).__name__.upper()


def _url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _reason(exc: sa.exc.DBAPIError) -> str:
    """The driver's message, first line only."""
    text = str(exc.orig) if exc.orig is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
