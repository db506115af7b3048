"""A bare ``postgresql://`` URL, the form most teams copy, connects through the installed driver."""

from __future__ import annotations

import sqlalchemy as sa

from loyalflow.warehouse import engine_for


def test_a_bare_postgresql_url_uses_psycopg2(pg_url: str) -> None:
    bare = "postgresql://" + pg_url.split("://", 1)[1]  # SQLAlchemy 2.1 alone would pick psycopg 3
    engine = engine_for(bare)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    assert engine.driver == "psycopg2"
    engine.dispose()
