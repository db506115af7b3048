"""Fixtures of the delivery tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from loyalflow.state import ensure_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[sa.Engine]:
    """loyalflow's state tables, on SQLite (concurrent writers wait up to 60 s) and on PostgreSQL."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else sqlite_url
    engine = sa.create_engine(url, connect_args={"timeout": 60} if request.param == "sqlite" else {})
    ensure_schema(engine)
    yield engine
    engine.dispose()
