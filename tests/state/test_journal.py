"""loyalflow's own SQLite state file uses write-ahead logging; a customer's warehouse file never changes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from loyalflow.runtime import Runtime
from loyalflow.settings import Settings
from loyalflow.warehouse import engine_for


def _mode(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_separate_sqlite_state_file_uses_wal_and_the_warehouse_keeps_its_journal(
    settings: Settings, tmp_path: Path
) -> None:
    state_file = tmp_path / "state.db"
    rt = Runtime(settings.model_copy(update={"state_url": f"sqlite:///{state_file}"}))
    rt.state  # noqa: B018 - opening the state is what switches it
    warehouse_file = Path(sa.make_url(settings.warehouse_url).database or "")
    assert _mode(state_file) == "wal"
    assert _mode(warehouse_file) == "delete"
    with rt.state.begin() as conn:  # and it works as before: its tables are there, at head
        conn.exec_driver_sql("SELECT count(*) FROM loyalflow_ledger").scalar_one()


def test_state_kept_in_the_warehouse_file_leaves_its_journal_alone(settings: Settings) -> None:
    warehouse_file = Path(sa.make_url(settings.warehouse_url).database or "")
    Runtime(settings).state  # noqa: B018
    assert _mode(warehouse_file) == "delete"
    same = Runtime(settings.model_copy(update={"state_url": settings.warehouse_url}))
    same.state  # noqa: B018 - the same URL is the same database: still the customer's file
    assert _mode(warehouse_file) == "delete"
    assert same.state is engine_for(settings.warehouse_url)
