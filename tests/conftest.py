"""Shared fixtures: a private Airflow home, contract-only warehouses (SQLite and PostgreSQL), settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Airflow reads its configuration at import time: give the whole session a private home first.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="loyalflow-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
for name in [n for n in os.environ if n.startswith("LOYALFLOW_")]:
    del os.environ[name]

import sqlalchemy as sa  # noqa: E402

from loyalflow.settings import Settings, get_settings  # noqa: E402
from tests.factories import Shop  # noqa: E402

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI") == "true"
TEST_KEY = "test-secret-key-for-loyalflow-tests-0123456789"  # 32+ bytes: real providers accept it


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """An initialised Airflow metadata database (SQLite, private to this test session)."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, empty SQLite warehouse."""
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema on the local server; skipped when absent, but a failure under CI=true."""
    schema = f"lf_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def no_temp_url(pg_url: str) -> Iterator[str]:
    """A database whose roles may not create temporary tables (``REVOKE TEMPORARY ... FROM PUBLIC``, as
    locked-down installations do), and the URL of a role owning a schema there."""
    name = f"lf_notemp_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {name} LOGIN"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
        conn.execute(sa.text(f"REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC"))
    inside = sa.create_engine(PG_URL.rsplit("/", 1)[0] + f"/{name}")
    with inside.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name} AUTHORIZATION {name}"))
    inside.dispose()
    url = (
        PG_URL.replace("postgres@", f"{name}@").rsplit("/", 1)[0] + f"/{name}?options=-csearch_path%3D{name}"
    )
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
            conn.execute(sa.text(f"DROP ROLE {name}"))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointing at a temporary warehouse, outbox and work folder (also exported as env)."""
    values = {
        "LOYALFLOW_HOME": str(ROOT),
        "LOYALFLOW_WAREHOUSE_URL": sqlite_url,
        "LOYALFLOW_OUTBOX_DIR": str(tmp_path / "outbox"),
        "LOYALFLOW_WORK_URL": str(tmp_path / "work"),
        "LOYALFLOW_REPORT_DIR": str(tmp_path / "out"),
        "LOYALFLOW_SECRET_KEY": TEST_KEY,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


@pytest.fixture
def shop(settings: Settings) -> Shop:
    """A contract-only warehouse (no demo extras) in the settings' SQLite database."""
    return Shop(sa.create_engine(settings.warehouse_url))


@pytest.fixture
def project(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A writable copy of the campaigns, templates and DAG files, used as LOYALFLOW_HOME."""
    home = tmp_path / "project"
    for folder in ("campaigns", "templates", "dags"):
        shutil.copytree(ROOT / folder, home / folder)
    monkeypatch.setenv("LOYALFLOW_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
