"""bulk.execute_many (SQLite: the driver's executemany) stores what SQLAlchemy's executemany stores."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from loyalflow.state import bulk

meta = sa.MetaData()
things = sa.Table(
    "things",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(50)),
    sa.Column("note", sa.Text),
    sa.Column("flag", sa.Boolean),
    sa.Column("day", sa.Date),
    sa.Column("at", sa.DateTime),
    sa.Column("changed", sa.DateTime),
)
with_default = sa.Table(
    "with_default",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("status", sa.String(20), default="new"),
)

AT = dt.datetime(2026, 11, 20, 15, 30, 5, 123456)
VALUES = [
    ("plain", True, dt.date(2026, 11, 20), AT),
    ("with \"quotes\", 'single'", False, dt.date(2026, 1, 1), dt.datetime(2026, 11, 20, 15)),
    ("Zoë 日本 ✓", None, None, None),
    ("", True, dt.date(2026, 11, 20), AT),
    (None, False, dt.date(1999, 12, 31), dt.datetime(1999, 12, 31, 23, 59, 59)),
    ("line\nbreak \\N", True, dt.date(2026, 11, 20), dt.datetime(2026, 11, 20, 15, 30, 5, 1)),
]


def _rows(offset: int = 0) -> list[dict]:
    return [
        {"id": i + offset, "name": n, "note": n, "flag": f, "day": d, "at": a, "changed": None}
        for i, (n, f, d, a) in enumerate(VALUES)
    ]


def _engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    meta.create_all(engine)
    return engine


def _stored(conn: sa.Connection, ids: range) -> tuple[list[tuple], list[tuple]]:
    """The rows as SQLAlchemy reads them and as the database holds them (no type processing)."""
    typed = conn.execute(sa.select(things).where(things.c.id.in_(list(ids))).order_by(things.c.id)).all()
    raw = conn.execute(
        sa.text(
            "SELECT name, note, flag, day, at, changed FROM things WHERE id >= :a AND id < :b ORDER BY id"
        ),
        {"a": ids.start, "b": ids.stop},
    ).all()
    return [tuple(r)[1:] for r in typed], [tuple(r) for r in raw]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_insert_and_update_store_what_sqlalchemy_stores(backend: str, request: pytest.FixtureRequest) -> None:
    engine = _engine(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    n = len(VALUES)
    changed = dt.datetime(2026, 12, 2, 10, 0, 0, 5)
    update = (
        sa.update(things)
        .where(things.c.id == sa.bindparam("k"))
        .values(note=sa.bindparam("s"), changed=changed)
    )
    with engine.begin() as conn:
        assert bulk.execute_many(conn, sa.insert(things), _rows()) == n
        conn.execute(sa.insert(things), _rows(100))  # the reference: SQLAlchemy's own executemany
        assert bulk.execute_many(conn, update, [{"k": i, "s": f"u{i}"} for i in range(n)]) == n
        conn.execute(update, [{"k": i + 100, "s": f"u{i}"} for i in range(n)])
        assert bulk.execute_many(conn, sa.insert(things), []) == 0
    with engine.connect() as conn:
        mine, reference = _stored(conn, range(0, n)), _stored(conn, range(100, 100 + n))
    assert mine == reference
    typed, _ = mine
    assert [r[0] for r in typed] == [v[0] for v in VALUES]
    assert [r[2:5] for r in typed] == [v[1:] for v in VALUES]
    assert {r[5] for r in typed} == {changed} and [r[1] for r in typed] == [f"u{i}" for i in range(n)]


def test_sqlite_on_conflict_rowcount_and_errors(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    with engine.begin() as conn:
        bulk.execute_many(conn, sa.insert(things), _rows())
        again = sqlite.insert(things).on_conflict_do_nothing(index_elements=["id"])
        assert bulk.execute_many(conn, again, _rows(3)) == 3  # ids 3..5 exist: only 6..8 go in
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(things)).scalar_one() == len(VALUES) + 3
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        bulk.execute_many(conn, sa.insert(things), _rows())
    with engine.begin() as conn:  # the failed transaction left nothing behind
        assert conn.execute(sa.select(sa.func.count()).select_from(things)).scalar_one() == len(VALUES) + 3


def test_python_side_defaults_take_sqlalchemys_path(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    with engine.begin() as conn:
        bulk.execute_many(conn, sa.insert(with_default), [{"id": 1}, {"id": 2}])
    with engine.connect() as conn:
        assert conn.execute(sa.select(with_default.c.status)).scalars().all() == ["new", "new"]


def test_outside_a_transaction_it_begins_one(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    with engine.connect() as conn:
        bulk.execute_many(conn, sa.insert(things), _rows())
        assert conn.in_transaction()
        conn.rollback()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(things)).scalar_one() == 0
