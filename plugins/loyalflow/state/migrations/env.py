"""Alembic environment of loyalflow's state tables, configured in code by ``loyalflow.state.migrate``.

The caller passes an open connection in ``config.attributes["connection"]`` (``migrate.upgrade`` holds
the upgrade lock on it); without one, ``sqlalchemy.url`` of the config is used. Only ``loyalflow_*``
tables are ever compared or touched: the warehouse's own tables are invisible here.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from loyalflow.state.migrate import VERSION_TABLE, include_name, include_object
from loyalflow.state.tables import metadata

config = context.config
options: dict[str, Any] = {
    "target_metadata": metadata,
    "version_table": VERSION_TABLE,
    "include_name": include_name,
    "include_object": include_object,
    "render_as_batch": True,  # autogenerate: SQLite alters tables by copy-and-move
    "compare_type": True,
}

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
