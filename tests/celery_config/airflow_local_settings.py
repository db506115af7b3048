"""Airflow local settings of the Celery test cluster (tests/airflow_cluster.py puts this folder first
on every process's PYTHONPATH; Airflow imports ``airflow_local_settings`` from the path).

- ``task_policy`` is an Airflow cluster policy: it shortens the retry delay (5 minutes in
  plugins/loyalflow/airflow/dags.py) so a task lost with a killed worker is retried within the test.
- ``worker_hostname`` is ``[core] hostname_callable`` for the workers: both run on one machine, so the
  task instances' ``hostname`` tells them apart only by the name each worker is given.
- ``create_async_metadata_engine`` exists only while the venv lacks ``asyncpg``: Airflow builds an
  async engine for a PostgreSQL metadata database at start-up, though only features this cluster does
  not use (multi-team, the state store, the run-wait endpoint) query through it. The stand-in fails
  with a clear error if anything does. The official image (and docker-compose.yml) ships asyncpg.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import socket
from typing import Any

import sqlalchemy as sa

RETRY_DELAY = dt.timedelta(seconds=2)
HOSTNAME_VARIABLE = "LOYALFLOW_TEST_WORKER_HOSTNAME"


def task_policy(task: Any) -> None:
    """Retry a failed task after :data:`RETRY_DELAY`."""
    task.retry_delay = RETRY_DELAY


def worker_hostname() -> str:
    """The name this worker was started with, else the machine's name."""
    return os.environ.get(HOSTNAME_VARIABLE) or socket.getfqdn()


class AsyncDriverMissing:
    """Stands in for Airflow's async metadata engine; any use raises (see the module docstring)."""

    def __init__(self, url: str):
        self.url = url
        self.sync_engine = sa.create_engine("sqlite://")  # what Airflow disposes at fork and exit

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"Airflow used its async metadata engine ({name}); install asyncpg for {self.url}")


if importlib.util.find_spec("asyncpg") is None:

    def create_async_metadata_engine(
        sql_alchemy_conn_async: str, connect_args: dict[str, Any], engine_args: dict[str, Any] | None = None
    ) -> Any:
        """Airflow's hook for its async engine: :class:`AsyncDriverMissing` instead of a failed start."""
        return AsyncDriverMissing(sql_alchemy_conn_async.split("@")[-1])
