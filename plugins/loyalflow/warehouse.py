"""Engines for the customer warehouse and loyalflow's state database, and batched reads by customer."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

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


@lru_cache(maxsize=8)
def engine_for(url: str) -> sa.Engine:
    """A pooled engine per URL (SQLite gets a busy timeout so concurrent tasks wait, not fail)."""
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no out/ yet
        return sa.create_engine(url, connect_args={"timeout": 60})
    return sa.create_engine(url, pool_pre_ping=True)


def read_by_ids(engine: sa.Engine, table: str, ids: list[str], columns: str = "*") -> pd.DataFrame:
    """Rows of ``table`` whose customer_id is in ``ids`` (batched bound parameters)."""
    frames: list[pd.DataFrame] = []
    stmt = sa.text(f"SELECT {columns} FROM {table} WHERE customer_id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    with engine.connect() as conn:
        for start in range(0, len(ids), ID_BATCH):
            frames.append(pd.read_sql_query(stmt, conn, params={"ids": ids[start : start + ID_BATCH]}))
    if not frames:
        with engine.connect() as conn:
            return pd.read_sql_query(sa.text(f"SELECT {columns} FROM {table} WHERE 1=0"), conn)
    return pd.concat(frames, ignore_index=True)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts with missing values as ``None``."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")  # type: ignore[return-value]
